"""The DNSBL as a ``trapline serve`` service (``--dns``); imported by serve, not by workers."""

from __future__ import annotations

import asyncio

from trapline.serve.dnsbl.run import make_server, read_only_source
from trapline.serve.runner import Running, ServeContext, register_service


async def _start_dns(ctx: ServeContext, host: str, port: int) -> Running:
    """The ``serve`` service: each reload reads the store in its own short read-only turn."""
    server = make_server(ctx.settings, read_only_source(ctx.settings), host, port)
    await asyncio.to_thread(server.start)

    async def stop() -> None:
        await asyncio.to_thread(server.stop)

    ctx.extras["dnsbl"] = server
    return Running("dns", server.host, server.port, stop)


register_service("dns", _start_dns, "dns_listen")
