"""``trapline serve``: every trap service in one process, on loopback unless told otherwise.

The process owns the store (DuckDB allows one writer): services write only to the spool, and a
drain worker thread moves the spool into the store. Start-up first drains whatever a previous
run left in the spool (crash recovery), then starts each service and reports one line per
listening service. SIGINT/SIGTERM stop listening, flush the spool, drain it and close the store.

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
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.routing import BaseRoute

from trapline.config import register_defaults
from trapline.errors import ServiceError, UsageError
from trapline.pipeline.core import IngestCore
from trapline.pipeline.drain import DrainResult, drain, resume
from trapline.store.duckdb import Store, open_store
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
    """What services share: settings, the spool, the store (read through cursors), the site."""

    settings: dict[str, Any]
    spool: Spool
    store: Store
    secret: bytes
    http_routes: list[BaseRoute] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)


ServiceStart = Callable[[ServeContext, str, int], Awaitable[Running]]
# name → (start function, settings key holding "host:port"); order = start order.
SERVICES: dict[str, tuple[ServiceStart, str]] = {}


# Extra Starlette routes mounted on the http service's port (API, dashboard), in order.
HTTP_ROUTES: list[BaseRoute] = []


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


# --- the drain worker ---------------------------------------------------------------------------


class DrainWorker(threading.Thread):
    """The store's only writer while serving: drains the spool when woken or every second."""

    def __init__(
        self, spool: Spool, store: Store, settings: dict[str, Any], core: IngestCore
    ) -> None:
        super().__init__(name="trap-drain", daemon=True)
        self.spool, self.store, self.settings, self.core = spool, store, settings, core
        self._wake = threading.Event()
        self._stopping = False
        self.total = DrainResult()

    def wake(self) -> None:
        self._wake.set()

    def run(self) -> None:
        last_prune = 0.0
        while not self._stopping:
            self._wake.wait(1.0)
            self._wake.clear()
            self.drain_once()
            if time.monotonic() - last_prune > 3600:
                last_prune = time.monotonic()
                with contextlib.suppress(OSError):
                    self.spool.prune_done()
            time.sleep(0.1)  # let a burst gather into fewer, larger transactions

    def drain_once(self) -> None:
        try:
            got = drain(self.spool, self.store, self.settings, core=self.core)
        except Exception:  # the data stays in the spool; the next round retries
            log.exception("drain failed; the spool keeps the data and will retry")
            return
        self.total.segments += got.segments
        self.total.messages += got.messages
        self.total.new_messages += got.new_messages

    def stop(self) -> None:
        self._stopping = True
        self.wake()
        if self.is_alive():
            self.join()
        self.drain_once()


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
    sensors = StoreSensors(ctx.store)
    row = ctx.store.con.cursor().execute("SELECT max(seq) FROM visits").fetchone()
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
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServiceError(
            f"http: cannot listen on {host}:{port} ({exc.strerror}); is it free?"
        ) from exc
    sock.listen(int(s["http_listen_backlog"]))
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
        sensors.close()

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
    not ``off``."""
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
    secret = addresses.site_secret(settings)
    spool = Spool(spool_dir(settings))
    store = open_store(Path(str(settings["data_dir"])))  # StoreLocked if another process has it
    running: list[Running] = []
    worker: DrainWorker | None = None
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not in the main thread
            loop.add_signal_handler(sig, stop.set)
    try:
        # One ingest core for this process: stages load once, and one that fails stays off.
        core = IngestCore(settings, note)
        resume(store, core)
        recovered = drain(spool, store, settings, core=core, on_note=note)
        if recovered.segments:
            note(f"recovered from the spool: {recovered.line()}")
        worker = DrainWorker(spool, store, settings, core)
        spool.on_commit = worker.wake
        spool.start()
        ctx = ServeContext(settings, spool, store, secret)
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
            if on_ready is not None:
                on_ready(svc)
        # Services set up their store cursors above; only now does the writer thread start.
        worker.start()
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
        else:
            with contextlib.suppress(Exception):
                drain(spool, store, settings, on_note=note)
        store.close()
    return total
