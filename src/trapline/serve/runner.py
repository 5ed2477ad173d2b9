"""``trapline serve``: every trap service in one process, on loopback unless told otherwise.

Services write only to the spool (a 250 means the message is fsynced there), and a drain
process (``serve.drainer``) moves the spool into the store in short write windows, taking turns
with every other reader and writer of the store (``trapline.store.access``): the store stays
usable by commands while the trap runs. One serve per data dir (``serve.lock``); it reports what it does once per
``serve_report_interval_s`` and in ``serve.lock`` for ``trapline status``. Start-up first drains
whatever a previous run left in the spool (crash recovery), then starts each service and reports
one line per listening service. SIGINT/SIGTERM stop listening, flush the spool and drain it.

Adding a service (DNSBL, API, dashboard): in your module write ``async def start(ctx, host,
port) -> Running`` and call ``register_service("name", start, "name_listen")`` at import time,
then list the module in settings ``serve_modules``; ``serve`` starts every registered service
whose listen setting is not ``off``. HTTP-based services can instead append Starlette routes to
``register_http_routes`` to be mounted on the honeypot's port.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.routing import BaseRoute

from trapline.config import register_defaults
from trapline.errors import ServiceError, UsageError
from trapline.pipeline.drain import DrainResult
from trapline.serve.drainer import DrainProcess
from trapline.serve.status import ServeLease, ServeState
from trapline.store.access import reading, writing
from trapline.store.duckdb import Store
from trapline.traps import addresses
from trapline.traps.smtp.spool import Spool

log = logging.getLogger("trapline.serve")


@dataclass
class Running:
    """A started service: where it listens and how to stop it."""

    name: str
    host: str
    port: int
    stop: Callable[[], Awaitable[None]]


@dataclass
class ServeContext:
    """What services share: settings, the spool, the site secret, and turns on the store.

    ``serve`` does not hold the store: a service reads it in short windows with ``ctx.read()``
    (read-only, together with other readers) and writes with ``ctx.write()`` (alone), both
    context managers giving a ``Store`` (see ``trapline.store.access``). Keep windows short:
    a writer waits for every open reader, and readers queue behind a waiting writer."""

    settings: dict[str, Any]
    spool: Spool
    secret: bytes
    http_routes: list[BaseRoute] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return Path(str(self.settings["data_dir"]))

    def read(self, *, wait_s: float | None = None) -> contextlib.AbstractContextManager[Store]:
        """A read-only store for one request or reload (``wait_s``: see ``access.Policy``)."""
        return reading(self.data_dir, wait_s=wait_s)

    def write(self, *, wait_s: float | None = None) -> contextlib.AbstractContextManager[Store]:
        """A read-write store for one short write window."""
        return writing(self.data_dir, wait_s=wait_s)


ServiceStart = Callable[[ServeContext, str, int], Awaitable[Running]]
# name → (start function, settings key holding "host:port"); order = start order.
SERVICES: dict[str, tuple[ServiceStart, str]] = {}


# Extra Starlette routes mounted on the http service's port (API, dashboard), in order.
HTTP_ROUTES: list[BaseRoute] = []


def listening_socket(service: str, host: str, port: int, backlog: int) -> socket.socket:
    """A bound, listening TCP socket for an HTTP service, or a ``ServiceError`` saying why not."""
    # proto IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP, and without it a kept-alive connection waits for delayed ACKs.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServiceError(
            f"{service}: cannot listen on {host}:{port} ({exc.strerror}); is it free?"
        ) from exc
    sock.listen(backlog)
    return sock


def register_service(name: str, start: ServiceStart, listen_key: str) -> None:
    """Make ``trapline serve`` start ``start(ctx, host, port)`` on ``settings[listen_key]``
    (a new key is registered as a setting, off by default)."""
    register_defaults({listen_key: ""})
    SERVICES[name] = (start, listen_key)


def register_http_routes(routes: Iterable[BaseRoute]) -> None:
    """Mount ``routes`` on the honeypot's HTTP port (call at import time of a serve module)."""
    HTTP_ROUTES.extend(routes)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` / ``[v6]:PORT`` / ``:PORT`` (loopback) → (host, port)."""
    value = text.strip()
    if value.startswith("["):
        host, _, port = value[1:].partition("]:")
    else:
        host, _, port = value.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise UsageError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:2525)")
    return host or "127.0.0.1", int(port)


# --- the built-in services ----------------------------------------------------------------------


async def _start_smtp(ctx: ServeContext, host: str, port: int) -> Running:
    from trapline.traps.smtp.server import start_smtp

    server = await start_smtp(ctx.settings, ctx.spool, host, port)
    bound = server.sockets[0].getsockname()

    async def stop() -> None:
        server.close()
        await server.wait_closed()

    return Running("smtp", bound[0], int(bound[1]), stop)


class _QuietServer:
    """uvicorn's Server without its own signal handling: ``serve`` owns SIGINT/SIGTERM."""

    @staticmethod
    def make(app: Any, **limits: Any) -> Any:
        """``limits``: extra uvicorn.Config arguments (connection cap, protocol class, ...)."""
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Generator[None, None, None]:
                yield

        # proxy_headers off: uvicorn would trust X-Forwarded-For from any loopback peer; the
        # honeypot applies its own trusted_proxies rule (traps.web.client_ip).
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            proxy_headers=False,
            server_header=False,  # "server: uvicorn" would tell harvesters what this is
            **limits,
        )
        return Server(config)


async def _start_http(ctx: ServeContext, host: str, port: int) -> Running:
    from trapline.traps.http_limits import honeypot_http_limits
    from trapline.traps.sensor import StoreSensors
    from trapline.traps.web import TrapSite, VisitIssuer, create_app

    s = ctx.settings
    sensors = StoreSensors(ctx.read)
    with ctx.read() as store:
        row = store.con.execute("SELECT max(seq) FROM visits").fetchone()
    site = TrapSite(
        secret=ctx.secret,
        trap_domains=list(s.get("trap_domains") or []),
        spool=ctx.spool,
        issuer=VisitIssuer(
            int(row[0]) + 1 if row and row[0] is not None else 0,
            reserve_path=Path(str(s["data_dir"])) / "visit-numbers.reserved",
        ),
        trusted_proxies=list(s.get("trusted_proxies") or []),
        site_name=str(s.get("http_site_name") or ""),
        templates_dir=str(s.get("trap_templates_dir") or "") or None,
        sensor_lookup=sensors.lookup,
        sensor_visits=sensors.visits,
        visits_per_ip_per_minute=int(s["http_visits_per_ip_per_minute"]),
        read_timeout=float(s["http_read_timeout_s"]),
    )
    ctx.extras["site"] = site
    app = create_app(site, [*ctx.http_routes, *HTTP_ROUTES])
    sock = listening_socket("http", host, port, int(s["http_listen_backlog"]))
    server = _QuietServer.make(app, **honeypot_http_limits(s))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if task.done():
        task.result()  # surfaces a start-up error
    bound = sock.getsockname()

    async def stop() -> None:
        server.should_exit = True
        await task

    return Running("http", str(bound[0]), int(bound[1]), stop)


register_service("smtp", _start_smtp, "smtp_listen")
register_service("http", _start_http, "http_listen")
# Services living in their own packages, registered when serve starts (listen key "off" = idle).
BUILTIN_SERVICE_MODULES = ("trapline.serve.dnsbl.service", "trapline.serve.web")


# --- the process ----------------------------------------------------------------------------------


def spool_dir(settings: dict[str, Any]) -> Path:
    configured = str(settings.get("spool_dir") or "")
    return Path(configured) if configured else Path(str(settings["data_dir"])) / "spool"


async def serve(
    settings: dict[str, Any],
    *,
    services: Iterable[str] | None = None,
    on_ready: Callable[[Running], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    stop_event: asyncio.Event | None = None,
) -> DrainResult:
    """Run services until SIGINT/SIGTERM (or ``stop_event``); returns drain totals.

    ``services`` None = every registered service (see ``serve_modules``) whose listen setting is
    not ``off``. Raises ``ServiceError`` before touching anything when a serve already runs on
    the data dir."""
    note = on_note or (lambda text: log.info("%s", text))
    from trapline.traps.http_limits import install_log_limits  # (imports uvicorn)

    install_log_limits(int(settings["log_repeat_burst"]), float(settings["log_repeat_window_s"]))
    for module in [*BUILTIN_SERVICE_MODULES, *(settings.get("serve_modules") or [])]:
        try:
            importlib.import_module(str(module))
        except ImportError as exc:
            raise UsageError(
                f"serve_modules: cannot import {module!r} ({exc}); fix or remove it"
            ) from exc
    if services is None:
        services = [
            name
            for name, (_, key) in SERVICES.items()
            if str(settings.get(key, "")).lower() not in ("off", "")
        ]
    services = list(services)
    unknown = [n for n in services if n not in SERVICES]
    if unknown:
        raise UsageError(f"unknown service(s) {', '.join(unknown)}; known: {', '.join(SERVICES)}")
    if not settings.get("trap_domains"):
        raise UsageError("no trap domains configured; pass --trap-domain or set trap_domains")
    data_dir = Path(str(settings["data_dir"]))
    # Before anything is touched (the spool clears its tmp/ on opening): one serve per data dir.
    lease = ServeLease.take(data_dir)
    try:
        return await _serve(settings, services, lease, note, on_ready, stop_event)
    finally:
        lease.release()


async def _serve(
    settings: dict[str, Any],
    services: list[str],
    lease: ServeLease,
    note: Callable[[str], None],
    on_ready: Callable[[Running], None] | None,
    stop_event: asyncio.Event | None,
) -> DrainResult:
    data_dir = lease.data_dir
    secret = addresses.site_secret(settings)
    spool = Spool(spool_dir(settings))
    state = ServeState(pid=os.getpid(), started_at=time.time(), data_dir=str(data_dir))
    running: list[Running] = []
    worker: DrainProcess | None = None
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not in the main thread
            loop.add_signal_handler(sig, stop.set)
    try:
        # The drain's first write window records the trap domains and finishes what a crash
        # left behind; the ports open after it.
        worker = DrainProcess(spool, settings, lease, state, note)
        worker.start()
        spool.on_commit = worker.wake
        spool.start()
        ctx = ServeContext(settings, spool, secret)
        for name in services:
            start, key = SERVICES[name]
            host, port = parse_listen(str(settings[key]))
            try:
                svc = await start(ctx, host, port)
            except OSError as exc:
                raise ServiceError(
                    f"{name}: cannot listen on {host}:{port} ({exc.strerror}); is the port free?"
                ) from exc
            running.append(svc)
            state.services.append({"name": svc.name, "host": svc.host, "port": svc.port})
            if on_ready is not None:
                on_ready(svc)
        lease.publish(state)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        for svc in reversed(running):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(svc.stop(), timeout=5.0)
        spool.close()
        total = DrainResult()
        if worker is not None:
            worker.stop()
            total = worker.total
    return total
