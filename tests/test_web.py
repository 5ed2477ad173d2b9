"""The web honeypot and the sensor API over a real socket (uvicorn on 127.0.0.1 port 0)."""

from __future__ import annotations

import asyncio
import html
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import wait_for
from trapline.config import load_settings
from trapline.pipeline.drain import drain
from trapline.serve.runner import _QuietServer
from trapline.store.access import reading
from trapline.store.duckdb import open_store
from trapline.traps import addresses
from trapline.traps.sensor import StoreSensors, add_sensor
from trapline.traps.smtp.spool import Spool, SpoolRecord, decode_segment
from trapline.traps.web import DISALLOWED, TrapSite, VisitIssuer, client_ip, create_app

TRAP = "traps.example.org"
SECRET = bytes(range(32))


@dataclass
class Web:
    base: str
    site: TrapSite
    spool: Spool

    def records(self, kind: str, n: int = 1, timeout: float = 10.0) -> list[SpoolRecord]:
        deadline = time.monotonic() + timeout
        while True:
            out = []
            for folder in ("new", "done"):
                for path in sorted((self.spool.root / folder).glob("*.seg")):
                    out.extend(r for r in decode_segment(path.read_bytes()) if r.kind == kind)
            if len(out) >= n or time.monotonic() > deadline:
                return out
            time.sleep(0.02)


def start_honeypot(
    spool_dir: Path,
    stops: list[Callable[[], None]],
    limits: dict[str, Any] | None = None,
    **site_args: Any,
) -> Web:
    """A honeypot with its own spool on a free loopback port (uvicorn ``limits``, ``TrapSite``
    overrides); its stop is appended to ``stops``."""
    spool = Spool(spool_dir, linger_s=0.0)
    spool.start()
    site = TrapSite(secret=SECRET, trap_domains=[TRAP], spool=spool, **site_args)
    server = _QuietServer.make(create_app(site), **(limits or {}))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(sockets=[sock]),))
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), "the honeypot to start")

    def stop() -> None:
        server.should_exit = True
        thread.join()
        spool.close()

    stops.append(stop)
    return Web(f"http://127.0.0.1:{sock.getsockname()[1]}", site, spool)


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[Callable[..., Web]]:
    """Factory: a honeypot on a free loopback port, with ``TrapSite`` overrides."""
    stops: list[Callable[[], None]] = []

    def make(**site_args: Any) -> Web:
        return start_honeypot(tmp_path / f"spool{len(stops)}", stops, **site_args)

    yield make
    for stop in stops:
        stop()


def _addresses_in(page: str) -> set[str]:
    return set(re.findall(r"[a-z0-9._-]+@traps\.example\.org", page))


def test_pages_embed_the_visit_address_in_five_hiding_styles(
    web_server: Callable[..., Web],
) -> None:
    web = web_server()
    page = httpx.get(f"{web.base}/").text
    plain = _addresses_in(page)
    assert len(plain) == 1
    address = plain.pop()
    assert addresses.decode(address, SECRET, [TRAP]).valid
    look = web.site.look
    assert f'<a href="mailto:{address}">' in page  # 1 plain mailto
    assert f"<!-- {look.comment_for(address)} -->" in page  # 2 HTML comment
    hidden = f'<a class="{look.hidden_class}" href="mailto:{address}">{address}</a>'
    assert hidden in page and f".{look.hidden_class} {{ {look.hide_css} }}" in page  # 3 CSS
    entity = "".join(f"&#{ord(c)};" for c in address)
    assert entity in page and html.unescape(entity) == address  # 4 entity-encoded
    local, _, domain = address.partition("@")
    u, d = look.js_names
    assert f'var {u} = "{local}", {d} = "{domain}"; document.write(' in page  # 5 JS-written
    assert '<meta name="robots" content="noindex, nofollow, noarchive">' in page


def test_every_page_view_is_a_visit_with_its_own_address(web_server: Callable[..., Web]) -> None:
    web = web_server()
    headers = {"user-agent": "EmailCollector/2.1", "referer": "http://search.example/?q=garden"}
    seen = set()
    for path in ("/", "/contact/", "/staff/", "/guestbook/", "/members/archive/"):
        got = httpx.get(web.base + path, headers=headers)
        assert got.status_code == 200
        seen |= _addresses_in(got.text)
    assert len(seen) == 5
    visits = web.records("visit", 5)
    assert {v.fields["address"] for v in visits} == seen
    first = visits[0].fields
    assert first["ip"] == "127.0.0.1" and first["user_agent"] == "EmailCollector/2.1"
    assert first["referer"] == headers["referer"] and first["method"] == "GET"
    assert '"user-agent": "EmailCollector/2.1"' in first["headers"]
    assert [v.fields["seq"] for v in visits] == list(range(5))
    for v in visits:
        assert addresses.decode(v.fields["address"], SECRET).visit_id == v.fields["id"]
    assert httpx.get(f"{web.base}/no-such-page").status_code == 404


def test_robots_rules_and_the_visitors_who_ignore_them(web_server: Callable[..., Web]) -> None:
    web = web_server()
    robots = httpx.get(f"{web.base}/robots.txt").text
    assert all(f"Disallow: {p}" in robots for p in DISALLOWED)
    httpx.get(f"{web.base}/")
    httpx.get(f"{web.base}/staff/")
    visits = {v.fields["path"]: v.fields for v in web.records("visit", 2)}
    assert visits["/"]["ignored_robots"] is False
    assert visits["/staff/"]["ignored_robots"] is True and visits["/staff/"]["read_robots"] is True


def test_client_ip_honours_forwarded_for_only_from_trusted_proxies(
    web_server: Callable[..., Web],
) -> None:
    direct = web_server()
    httpx.get(f"{direct.base}/", headers={"x-forwarded-for": "203.0.113.9"})
    assert direct.records("visit")[0].fields["ip"] == "127.0.0.1"  # spoofed header ignored
    proxied = web_server(trusted_proxies=["127.0.0.0/8"])
    httpx.get(
        f"{proxied.base}/", headers={"x-forwarded-for": "198.51.100.1, 203.0.113.9, 127.0.0.5"}
    )
    assert proxied.records("visit")[0].fields["ip"] == "203.0.113.9"  # right-most untrusted hop


def test_client_ip_pure() -> None:
    trusted = [ipaddress.ip_network("10.0.0.0/8")]
    assert client_ip("10.0.0.1", "1.2.3.4", trusted) == "1.2.3.4"
    assert client_ip("10.0.0.1", "9.9.9.9, 1.2.3.4, 10.1.1.1", trusted) == "1.2.3.4"
    assert client_ip("5.5.5.5", "1.2.3.4", trusted) == "5.5.5.5"
    assert client_ip("10.0.0.1", "not-an-ip", trusted) == "10.0.0.1"
    assert client_ip("10.0.0.1", None, trusted) == "10.0.0.1"


def test_guestbook_posts_are_logged_as_comment_spam(web_server: Callable[..., Web]) -> None:
    web = web_server()
    form_page = httpx.get(f"{web.base}/guestbook/").text
    field = web.site.look.token_field
    token = re.search(rf'name="{field}" value="([^"]+)"', form_page)[1]  # type: ignore[index]
    visit_id = token.partition(".")[0]
    body = "Great site! Buy cheap meds at http://pills.example.biz/buy?id=7 and https://casino.example/x"
    got = httpx.post(
        f"{web.base}/guestbook/",
        data={
            field: token,
            "name": "Best Pharmacy",
            "email": "x@spam.example",
            "url": "http://spam.example",
            "body": body,
        },
    )
    assert got.status_code == 200 and "Thank you" in got.text
    comment = web.records("comment")[0].fields
    assert comment["visit_id"] == visit_id and comment["name"] == "Best Pharmacy"
    assert comment["urls"] == [
        "http://pills.example.biz/buy?id=7",
        "https://casino.example/x",
        "http://spam.example",
    ]


def test_operator_templates_override_the_packaged_pages(
    web_server: Callable[..., Web], tmp_path: Path
) -> None:
    custom = tmp_path / "templates"
    custom.mkdir()
    (custom / "contact.html").write_text(
        "<html><body>Mail the parish office: {{ address }}</body></html>"
    )
    web = web_server(templates_dir=str(custom))
    page = httpx.get(f"{web.base}/contact/").text
    assert page.startswith("<html><body>Mail the parish office: ") and len(_addresses_in(page)) == 1
    assert "Welcome" in httpx.get(f"{web.base}/").text  # other pages still come from the package


def test_sensors_get_addresses_and_see_only_their_own_visits(
    web_server: Callable[..., Web], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    with open_store(data) as store:
        s1, key1 = add_sensor(store, "blog.example.net")
        s2, key2 = add_sensor(store, "forum.example.com")
    # each lookup reads in its own window, on the web server's threads
    sensors = StoreSensors(lambda: reading(data))
    web = web_server(
        sensor_lookup=sensors.lookup, sensor_visits=sensors.visits, issuer=VisitIssuer(100)
    )
    api = f"{web.base}/api/sensor/v1"
    assert httpx.post(f"{api}/address", json={"ip": "1.2.3.4"}).status_code == 404
    assert (
        httpx.post(
            f"{api}/address", json={"ip": "1.2.3.4"}, headers={"authorization": "Bearer nope"}
        ).status_code
        == 404
    )
    given = {}
    for key, ip in ((key1, "198.51.100.7"), (key2, "203.0.113.8"), (key1, "198.51.100.9")):
        got = httpx.post(
            f"{api}/address",
            json={"ip": ip, "user_agent": "Harvester/1", "path": "/about"},
            headers={"authorization": f"Bearer {key}"},
        )
        assert got.status_code == 200
        body = got.json()
        decoded = addresses.decode(body["address"], SECRET, [TRAP])
        assert (
            decoded.valid and decoded.visit_id == body["visit_id"]
        )  # decodes offline, centrally keyed
        given[body["visit_id"]] = ip
    assert (
        httpx.post(
            f"{api}/address", json={}, headers={"authorization": f"Bearer {key1}"}
        ).status_code
        == 400
    )
    web.records("visit", 3)
    with open_store(data) as store:
        drain(web.spool, store, load_settings({"data_dir": str(data)}))
    mine = httpx.get(f"{api}/visits", headers={"authorization": f"Bearer {key1}"}).json()
    theirs = httpx.get(f"{api}/visits", headers={"authorization": f"Bearer {key2}"}).json()
    assert sorted(v["ip"] for v in mine) == ["198.51.100.7", "198.51.100.9"]
    assert [v["ip"] for v in theirs] == ["203.0.113.8"]
    with reading(data) as store:
        rows = store.con.execute("SELECT id, sensor_id, ip FROM visits ORDER BY seq").fetchall()
    assert [(r[1], r[2]) for r in rows] == [
        (s1, "198.51.100.7"),
        (s2, "203.0.113.8"),
        (s1, "198.51.100.9"),
    ]
    assert httpx.get(f"{api}/visits").status_code == 404


def test_visit_numbers_are_never_reissued_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "visit-numbers.reserved"
    first = VisitIssuer(0, reserve_path=path, block=10)
    issued = [first.next() for _ in range(15)]
    assert issued == list(range(15)) and path.read_text().strip() == "20"
    # the process dies; the store only ever saw visits up to 3 (the rest were still in memory)
    again = VisitIssuer(4, reserve_path=path, block=10)
    assert again.next() == 20  # resumes after the durable reservation, not at the store's max
    assert VisitIssuer(50, reserve_path=path, block=10).next() == 50  # the store can be ahead too


# --- nothing a visitor reaches gives the trap away ------------------------------------------


def _everything_a_visitor_sees(web: Web) -> list[httpx.Response]:
    """Every page, robots.txt, the sensor API without a key (each method), unknown paths."""
    got = [httpx.get(web.base + path) for path in ("/", "/contact/", "/staff/", "/guestbook/")]
    got += [httpx.get(f"{web.base}/members/archive/"), httpx.get(f"{web.base}/robots.txt")]
    got += [httpx.post(f"{web.base}/guestbook/", data={"body": "hello"})]
    for path in ("/api/sensor/v1/visits", "/api/sensor/v1/address", "/api/", "/nope"):
        for method in ("GET", "POST", "PUT", "DELETE"):
            got.append(httpx.request(method, web.base + path))
    return got


def test_nothing_reachable_names_the_tool_or_its_api(web_server: Callable[..., Web]) -> None:
    web = web_server()
    responses = _everything_a_visitor_sees(web)
    not_found = httpx.get(f"{web.base}/nope")
    for r in responses:
        text = (r.text + " ".join(f"{k}: {v}" for k, v in r.headers.items())).lower()
        assert "trapline" not in text and "sensor" not in text and "uvicorn" not in text
        assert 'class="hp"' not in text and "anti-spam" not in text
        if r.url.path.startswith("/api/"):  # the API without a key is any unknown path
            assert (r.status_code, r.text) == (not_found.status_code, not_found.text)


def _skeleton(page: str, address: str) -> str:
    """A page with this visit's address (and its parts, entity forms) blanked out."""
    local, _, domain = address.partition("@")
    for text in (address, local, domain, "mailto:" + address):
        page = page.replace("".join(f"&#{ord(c)};" for c in text), "")
        page = page.replace(text, "")
    return page


def test_two_sites_share_no_markup_fingerprint(web_server: Callable[..., Web]) -> None:
    """Sites with other secrets: other theme, classes, hiding CSS, comment, script names and
    order of the styles; one site is stable from view to view."""
    pages: list[str] = []
    for secret in (bytes(range(32)), bytes(range(1, 33)), b"\x07" * 32):
        site = TrapSite(secret=secret, trap_domains=[TRAP], spool=None)  # type: ignore[arg-type]
        visit = {"address": addresses.encode(5, secret, TRAP), "id": "v5"}
        pages.append(_skeleton(site.render("staff.html", visit), visit["address"]))
    assert len(set(pages)) == 3
    looks = [
        TrapSite(secret=s, trap_domains=[TRAP], spool=None).look for s in (b"a" * 32, b"b" * 32)
    ]  # type: ignore[arg-type]
    a, b = looks
    assert {a.hidden_class, a.plain_class, a.entity_class}.isdisjoint(
        {b.hidden_class, b.plain_class, b.entity_class}
    )
    web = web_server()
    first, second = (httpx.get(f"{web.base}/staff/").text for _ in range(2))
    addr1, addr2 = (_addresses_in(p).pop() for p in (first, second))
    assert addr1 != addr2 and _skeleton(first, addr1) == _skeleton(second, addr2)


def test_themes_differ_across_many_secrets() -> None:
    from trapline.traps.look import THEMES, site_look

    looks = [site_look(bytes([i]) * 32) for i in range(60)]
    assert {lk.site_name for lk in looks} == {t[0] for t in THEMES}
    assert len({(lk.hidden_class, lk.order, lk.comment, lk.hide_css) for lk in looks}) == 60
    assert site_look(b"x" * 32, "St Mary's Parish").site_name == "St Mary's Parish"


def test_guestbook_takes_the_visit_from_the_server_not_the_client(
    web_server: Callable[..., Web],
) -> None:
    web = web_server()
    field = web.site.look.token_field
    form = httpx.get(f"{web.base}/guestbook/").text
    token = re.search(rf'name="{field}" value="([^"]+)"', form)[1]  # type: ignore[index]
    shown = token.partition(".")[0]
    forged = [
        {"v": "v999"},  # the old client field
        {field: "v999"},  # no MAC
        {field: "v999." + token.partition(".")[2]},  # another visit with this visit's MAC
        {field: token + "0"},
    ]
    for extra in [*forged, {field: token}]:
        httpx.post(f"{web.base}/guestbook/", data={"body": "spam http://x.example/", **extra})
    comments = [c.fields for c in web.records("comment", len(forged) + 1)]
    visits = {v.fields["id"] for v in web.records("visit", 2 + len(forged))}
    assert all(c["visit_id"] in visits for c in comments)
    assert all(c["visit_id"] != "v999" for c in comments)
    assert [c["visit_id"] == shown for c in comments] == [False] * len(forged) + [True]
