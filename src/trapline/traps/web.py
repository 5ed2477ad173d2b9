"""The web honeypot: an ordinary-looking small site whose every page view issues a trap address.

ASGI (Starlette). Each page request becomes a *visit* (time, client IP, user agent, path,
referer, headers, the address issued) and the page embeds that visit's address in five hiding
styles (``templates/_address.html``). Robots rules: ``robots.txt`` disallows the trap-only paths
and every page carries ``noindex, nofollow``; a visitor that fetches a disallowed path is flagged
``ignored_robots`` (well-behaved crawlers never do; harvesters do). The guestbook form logs what
is posted as comment spam. Visits and comments go to the spool, never straight to the store.

Templates come from ``trap_templates_dir`` when set (same file names), else the packaged set.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import re
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jinja2
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from trapline.config import DEFAULTS
from trapline.traps import addresses
from trapline.traps.look import site_look, token_visit, visit_token
from trapline.traps.smtp.spool import Spool, SpoolRecord

# Paths only a robots-ignoring crawler reaches (linked with rel=nofollow or hidden by CSS).
DISALLOWED = ("/staff/", "/guestbook/", "/members/")
ROBOTS_TXT = "User-agent: *\n" + "".join(f"Disallow: {p}\n" for p in DISALLOWED)
PAGES = {
    "/": "index.html",
    "/contact/": "contact.html",
    "/staff/": "staff.html",
    "/guestbook/": "guestbook.html",
    "/members/archive/": "index.html",
}
MAX_FORM_BYTES = 64 * 1024
log = logging.getLogger("trapline.web")
_URL = re.compile(r"https?://[^\s\"'<>]+", re.I)
_KEEP_HEADERS = 40  # a request with hundreds of headers is logged with the first 40


def entities(text: str) -> Markup:
    """Every character as a decimal HTML entity: invisible to naive ``@`` regexes."""
    return Markup("".join(f"&#{ord(c)};" for c in str(text)))


def template_env(custom_dir: str | None = None) -> jinja2.Environment:
    """Jinja2 environment: ``custom_dir`` first (operator overrides), then the packaged pages."""
    loaders: list[jinja2.BaseLoader] = []
    if custom_dir:
        loaders.append(jinja2.FileSystemLoader(custom_dir))
    loaders.append(jinja2.PackageLoader("trapline.traps", "templates"))
    env = jinja2.Environment(loader=jinja2.ChoiceLoader(loaders), autoescape=True)
    env.filters["entities"] = entities
    return env


def parse_networks(specs: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(s.strip(), strict=False) for s in specs if s.strip()]


def client_ip(
    peer: str,
    forwarded_for: str | None,
    trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> str:
    """The visitor's IP: the peer, unless the peer is a trusted proxy; then the right-most
    ``X-Forwarded-For`` entry that is not itself a trusted proxy (entries further left are
    whatever the client claimed and cannot be trusted)."""

    def is_trusted(text: str) -> bool:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return False
        return any(ip in net for net in trusted)

    if not trusted or not forwarded_for or not is_trusted(peer):
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not is_trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage from a proxy we trust: fall back to what we know
    return peer


class VisitIssuer:
    """Hands out visit numbers (thread-safe), never the same one twice.

    An address is a pure function of (visit number, secret), so a reused number would hand one
    address to two visitors. Visits reach the store through the spool a moment after they are
    issued, so after a SIGKILL the store's newest visit can lag behind the last number issued.
    With ``reserve_path`` the issuer durably reserves numbers in blocks (write, fsync, rename)
    before using them and restarts after the reserved block: a crash skips at most ``block``
    numbers of the 2^24, and never repeats one.
    """

    def __init__(self, start: int = 0, reserve_path: Path | None = None, block: int = 1000) -> None:
        self._lock = threading.Lock()
        self._path = reserve_path
        self._block = block
        if reserve_path is not None and reserve_path.exists():
            text = reserve_path.read_text(encoding="ascii").strip()
            start = max(start, int(text) if text.isdigit() else 0)
        self._next = start
        self._reserved = start  # numbers below this are durably reserved (or not persisted)

    def next(self) -> int:
        with self._lock:
            if self._path is not None and self._next >= self._reserved:
                self._reserved = self._next + self._block
                _write_durably(self._path, f"{self._reserved}\n".encode())
            value, self._next = self._next, self._next + 1
            return value


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@dataclass
class TrapSite:
    """Everything the honeypot and sensor API need, injected (no globals)."""

    secret: bytes
    trap_domains: list[str]
    spool: Spool
    issuer: VisitIssuer = field(default_factory=VisitIssuer)
    trusted_proxies: list[str] = field(default_factory=list)
    site_name: str = ""  # "" = the name of this site's theme (``trapline.traps.look``)
    templates_dir: str | None = None
    # Sensor key → sensor id, and one sensor's own visits (provided by the runner's store reader).
    sensor_lookup: Callable[[str], str | None] = lambda _key: None
    sensor_visits: Callable[[str, int], list[dict[str, Any]]] = lambda _sid, _n: []
    # New visits (visit numbers) one client IP may cause per minute; past it, its pages show
    # the address of its latest visit again (nothing new is issued or recorded).
    visits_per_ip_per_minute: int = DEFAULTS["http_visits_per_ip_per_minute"]
    read_timeout: float = DEFAULTS["http_read_timeout_s"]  # for a posted form's body
    _robots_readers: OrderedDict[str, float] = field(default_factory=OrderedDict, init=False)
    _recent: OrderedDict[str, tuple[deque[float], dict[str, Any]]] = field(
        default_factory=OrderedDict, init=False
    )
    _last_visit: dict[str, Any] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.env = template_env(self.templates_dir)
        self.trusted = parse_networks(self.trusted_proxies)
        self.look = site_look(self.secret, self.site_name)

    # --- visits -------------------------------------------------------------------------------

    def note_robots(self, ip: str) -> None:
        self._robots_readers[ip] = time.time()
        self._robots_readers.move_to_end(ip)
        while len(self._robots_readers) > 10_000:  # bounded memory under a crawl
            self._robots_readers.popitem(last=False)

    def issue(
        self,
        *,
        ip: str,
        user_agent: str | None,
        method: str,
        host: str | None,
        path: str,
        referer: str | None,
        headers: dict[str, str],
        sensor_id: str | None = None,
    ) -> dict[str, Any]:
        """Record one visit and return it (``address`` is what the page must show)."""
        seq = self.issuer.next()
        domain = self.trap_domains[seq % len(self.trap_domains)]
        address = addresses.encode(seq, self.secret, domain)
        visit = {
            "id": addresses.visit_id_of(seq),
            "seq": seq,
            "address": address,
            "visited_at": datetime.now(UTC).isoformat(),
            "ip": ip,
            "user_agent": user_agent,
            "method": method,
            "host": host,
            "path": path[:2000],
            "referer": referer,
            "headers": json.dumps(dict(list(headers.items())[:_KEEP_HEADERS])),
            "sensor_id": sensor_id,
            "ignored_robots": path.startswith(DISALLOWED),
            "read_robots": ip in self._robots_readers,
        }
        try:
            self.spool.submit(SpoolRecord("visit", visit), durable=False)
        except Exception as exc:  # the page is still served; the visit is not recorded
            log.warning("honeypot: visit %s not spooled: %s", visit["id"], exc)
        return visit

    def _repeat_visit(self, ip: str) -> dict[str, Any] | None:
        """The client's latest visit when it is over its per-minute budget, else None."""
        now = time.monotonic()
        entry = self._recent.get(ip)
        if entry is None:
            return None
        window, last = entry
        while window and window[0] <= now - 60.0:
            window.popleft()
        return last if len(window) >= self.visits_per_ip_per_minute else None

    def _remember(self, ip: str, visit: dict[str, Any]) -> None:
        window = self._recent[ip][0] if ip in self._recent else deque()
        window.append(time.monotonic())
        self._recent[ip] = (window, visit)
        self._recent.move_to_end(ip)
        while len(self._recent) > 10_000:  # bounded memory under a crawl from many IPs
            self._recent.popitem(last=False)
        self._last_visit = visit

    def visit_from(self, request: Request) -> dict[str, Any]:
        peer = request.client.host if request.client else ""
        ip = client_ip(peer, request.headers.get("x-forwarded-for"), self.trusted)
        again = self._repeat_visit(ip)
        if again is not None:
            return again
        visit = self.issue(
            ip=ip,
            user_agent=request.headers.get("user-agent"),
            method=request.method,
            host=request.headers.get("host"),
            path=request.url.path,
            referer=request.headers.get("referer"),
            headers=dict(request.headers),
        )
        self._remember(ip, visit)
        return visit

    def fallback_visit(self) -> dict[str, Any] | None:
        """A visit to show when issuing a new one failed (the page must still look normal)."""
        return self._last_visit

    def render(self, template: str, visit: dict[str, Any], **extra: Any) -> str:
        local, _, domain = visit["address"].partition("@")
        return self.env.get_template(template).render(
            look=self.look,
            site_name=self.look.site_name,
            year=datetime.now(UTC).year,
            address=visit["address"],
            local=local,
            domain=domain,
            token=visit_token(self.secret, visit["id"]),
            **extra,
        )


# --- request handlers ---------------------------------------------------------------------------


def _page(site: TrapSite) -> Callable[[Request], Any]:
    async def page(request: Request) -> Response:
        template = PAGES.get(request.url.path)
        if template is None:
            return PlainTextResponse("Not Found", status_code=404)
        try:
            visit = site.visit_from(request)
        except Exception:  # a visitor never sees a traceback or a 500
            log.exception("honeypot: could not issue a visit for %s", request.url.path)
            fallback = site.fallback_visit()
            if fallback is None:
                return PlainTextResponse("Service Unavailable", status_code=503)
            visit = fallback
        return HTMLResponse(site.render(template, visit))

    return page


def _robots(site: TrapSite) -> Callable[[Request], Any]:
    async def robots(request: Request) -> Response:
        peer = request.client.host if request.client else ""
        site.note_robots(client_ip(peer, request.headers.get("x-forwarded-for"), site.trusted))
        return PlainTextResponse(ROBOTS_TXT)

    return robots


def _comment(site: TrapSite) -> Callable[[Request], Any]:
    async def comment(request: Request) -> Response:
        body = b""

        async def read() -> None:
            nonlocal body
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_FORM_BYTES:  # a form post this big is an attack: keep the head
                    break

        # A body trickled in byte by byte must not hold the connection: log what arrived.
        with contextlib.suppress(TimeoutError, ClientDisconnect):
            await asyncio.wait_for(read(), site.read_timeout)
        form = {
            k: v[0] for k, v in parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", "replace")).items()
        }
        visit = site.visit_from(request)
        text = form.get("body", "")
        # The page view that showed the form, when the form carries our token for it; a client
        # cannot name another visit (the token is MAC'd), so otherwise this POST's own visit.
        shown = token_visit(site.secret, form.get(site.look.token_field, ""))
        site.spool.submit(
            SpoolRecord(
                "comment",
                {
                    "id": uuid.uuid4().hex,
                    "visit_id": shown or visit["id"],
                    "posted_at": visit["visited_at"],
                    "ip": visit["ip"],
                    "user_agent": visit["user_agent"],
                    "name": form.get("name", "")[:500],
                    "email": form.get("email", "")[:500],
                    "url": form.get("url", "")[:2000],
                    "body": text[:20000],
                    "urls": _URL.findall(" ".join([text, form.get("url", "")]))[:200],
                },
            ),
            durable=False,
        )
        return HTMLResponse(site.render("guestbook.html", visit, thanks=True))

    return comment


def routes(site: TrapSite) -> list[BaseRoute]:
    """The honeypot's routes (the sensor API adds its own, see ``trapline.traps.sensor``)."""
    page = _page(site)
    return [
        Route("/robots.txt", _robots(site)),
        Route("/guestbook/", _comment(site), methods=["POST"]),
        *[Route(path, page, methods=["GET", "HEAD"]) for path in PAGES],
    ]


def create_app(site: TrapSite, extra_routes: list[BaseRoute] | None = None) -> Starlette:
    """The ASGI app: honeypot pages plus the sensor API."""
    from trapline.traps.sensor import routes as sensor_routes

    return Starlette(routes=[*routes(site), *sensor_routes(site), *(extra_routes or [])])
