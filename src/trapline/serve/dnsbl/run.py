"""Build a DNSBL server from settings; the listing sources; ``trapline dnsbl`` alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trapline.errors import StoreError, TraplineError
from trapline.serve.dnsbl.settings import DnsblSettings

if TYPE_CHECKING:
    from trapline.serve.dnsbl.server import DnsblServer
    from trapline.serve.dnsbl.zones import ListingData


def zone_names(settings: dict[str, Any]) -> list[str]:
    return DnsblSettings.from_settings(settings).zone_names()


def make_server(
    settings: dict[str, Any],
    source: Callable[[], ListingData],
    host: str,
    port: int,
    *,
    clock: Callable[[], float] | None = None,
) -> DnsblServer:
    """A ``DnsblServer`` configured from settings (``dnsbl_*``), reading listings from ``source``."""
    import time

    from trapline.serve.dnsbl.answer import ZoneConfig
    from trapline.serve.dnsbl.server import DnsblServer

    view = DnsblSettings.from_settings(settings)
    zones = [ZoneConfig.from_settings(z, settings) for z in view.zone_names()]
    return DnsblServer(
        zones,
        source,
        host,
        port,
        workers=view.workers,
        rate_limit=view.rate_limit,
        reload_every=view.reload_s,
        clock=clock or time.time,
    )


def read_only_source(
    settings: dict[str, Any], clock: Callable[[], float] | None = None
) -> Callable[[], ListingData]:
    """Listings read from ``settings['data_dir']``, the store opened read-only for each read."""
    from trapline.serve.dnsbl.listings import load_listings
    from trapline.store.duckdb import open_store

    def read() -> ListingData:
        with open_store(Path(str(settings["data_dir"])), read_only=True) as store:
            return load_listings(store, settings, clock() if clock else None)

    return read


def _load_in_child(settings: dict[str, Any], conn: Any) -> None:
    try:
        result: tuple[str, Any] = ("ok", read_only_source(settings)())
    except Exception as exc:  # handed to the parent, which raises it
        result = ("error", exc if isinstance(exc, TraplineError) else StoreError(str(exc)))
    conn.send(result)
    conn.close()


def isolated_source(settings: dict[str, Any]) -> Callable[[], ListingData]:
    """Like ``read_only_source``, but each read runs in a short-lived process: the DNSBL process
    never loads DuckDB, so the memory a big query takes is returned when the reader exits."""
    import multiprocessing

    def read() -> ListingData:
        ctx = multiprocessing.get_context("spawn")
        receiver, sender = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_load_in_child, args=(settings, sender), daemon=True)
        proc.start()
        sender.close()
        try:
            status, value = receiver.recv()
        except EOFError as exc:
            raise StoreError("the listing reader process died; see its error above") from exc
        finally:
            receiver.close()
            proc.join()
        if status != "ok":
            raise value
        return value

    return read


def run_standalone(
    settings: dict[str, Any],
    on_ready: Callable[[DnsblServer], None] | None = None,
    stop: Any = None,
) -> DnsblServer:
    """``trapline dnsbl``: serve from the store (read-only reads) until SIGINT/SIGTERM or ``stop``
    (a ``threading.Event``) is set; returns the stopped server."""
    import signal
    import threading

    from trapline.serve.runner import parse_listen

    host, port = parse_listen(DnsblSettings.from_settings(settings).listen)
    server = make_server(settings, isolated_source(settings), host, port)
    event = stop or threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: event.set())
    try:
        server.start()
        if on_ready is not None:
            on_ready(server)
        while not event.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return server
