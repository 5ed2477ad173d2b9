"""The DNSBL as a ``trapline serve`` service (``--dns``); imported by serve, not by workers."""

from __future__ import annotations

import asyncio

from trapline.serve.dnsbl.run import make_server, store_source
from trapline.serve.runner import Running, ServeContext, register_service


async def _start_dns(ctx: ServeContext, host: str, port: int) -> Running:
    """The ``serve`` service: reads through the serve process's own store."""
    # Its own cursor, made before serve starts the writer thread; used by one thread at a time.
    view = ctx.store.view()
    server = make_server(ctx.settings, store_source(view, ctx.settings), host, port)
    await asyncio.to_thread(server.start)

    async def stop() -> None:
        await asyncio.to_thread(server.stop)
        view.close()

    ctx.extras["dnsbl"] = server
    return Running("dns", server.host, server.port, stop)


register_service("dns", _start_dns, "dns_listen")
