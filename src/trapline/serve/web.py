"""The API and dashboard as a ``serve`` service (``--web HOST:PORT``) or on their own (``trapline web``).

Always on an address of their own, never the honeypot's: nothing a harvester reaches may reveal
the trap. Inside ``serve`` they read the serve process's store through cursors and write keys
and imports through it; standalone they open the store read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trapline.errors import UsageError
from trapline.serve.api.access import StoreAccess
from trapline.serve.api.app import WebState, create_app
from trapline.serve.api.settings import WebSettings
from trapline.serve.runner import (
    Running,
    ServeContext,
    _QuietServer,
    listening_socket,
    parse_listen,
    register_service,
)

log = logging.getLogger("trapline.web")


def check_address(settings: dict[str, Any], host: str, port: int) -> None:
    """Refuse the honeypot's address (and its port on a wildcard) for the dashboard."""
    http = str(settings.get("http_listen") or "off")
    if http.lower() == "off" or port == 0:
        return
    h_host, h_port = parse_listen(http)
    wild = {"0.0.0.0", "::", ""}
    if h_port == port and (h_host == host or h_host in wild or host in wild):
        raise UsageError(
            f"the dashboard cannot listen on {host}:{port}: the web honeypot uses {http}; "
            "pick another address (default 127.0.0.1:8090), so harvesters never reach it"
        )


def _warm(state: WebState) -> None:
    """Compute the heavy aggregates once in the background so the first page is fast."""
    from trapline.serve.api import iplookup, views

    def run() -> None:
        try:
            state.search.get()  # starts building the search index
            with state.access.session():  # one read turn, given back when warm
                state.cache.get(("overview",), lambda: views.overview(state.access, state.settings))
                state.cache.get(
                    ("ip-index",),
                    lambda: iplookup.build_index(state.access, state.settings),
                    serialise=False,
                )
        except Exception:  # a warm-up failure shows again, with its reason, on first request
            log.exception("warming the dashboard caches failed")
        finally:
            state.access.release_cursor()

    threading.Thread(target=run, name="web-warm", daemon=True).start()


async def run_app(state: WebState, host: str, port: int) -> Running:
    """Start uvicorn for ``state`` on ``host:port``; returns once it listens."""
    app = create_app(state)
    sock = listening_socket("web", host, port, 512)
    server = _QuietServer.make(app)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    bound = sock.getsockname()
    _warm(state)

    async def stop() -> None:
        server.should_exit = True
        await task
        state.access.close()

    return Running("web", str(bound[0]), int(bound[1]), stop)


async def start_web(ctx: ServeContext, host: str, port: int) -> Running:
    """``serve`` service: the dashboard and API beside the traps, on the serve process's store."""
    check_address(ctx.settings, host, port)
    state = WebState(
        StoreAccess.taking_turns(ctx.data_dir, writable=True),
        ctx.settings,
        anonymous_read=WebSettings.from_settings(ctx.settings).anonymous_read,
        site=ctx.extras.get("site"),
        started_at=time.time(),
    )
    return await run_app(state, host, port)


register_service("web", start_web, "web_listen")


def run_standalone(
    settings: dict[str, Any],
    listen: str,
    *,
    anonymous_read: bool = False,
    on_ready: Callable[[Running], None] | None = None,
    stop_event: asyncio.Event | None = None,
) -> None:
    """``trapline web``: the dashboard and API on a read-only store until SIGINT/SIGTERM."""
    import signal

    host, port = parse_listen(listen)
    check_address(settings, host, port)
    access = StoreAccess.open_read_only(Path(str(settings["data_dir"])))
    state = WebState(access, settings, anonymous_read=anonymous_read, started_at=time.time())

    async def main() -> None:
        stop = stop_event or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        running = await run_app(state, host, port)
        if on_ready is not None:
            on_ready(running)
        try:
            await stop.wait()
        finally:
            await running.stop()

    try:
        asyncio.run(main())
    finally:
        access.close()
