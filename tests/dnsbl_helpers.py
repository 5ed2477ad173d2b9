"""Shared helpers for the DNSBL tests: a store of real mail, a running server, queries."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rdatatype
import duckdb

from trapline.config import load_settings
from trapline.serve.dnsbl.run import make_server, read_only_source
from trapline.serve.dnsbl.server import DnsblServer

ZONE = "bl.example.org"


def ingest_real(data_dir: Path, *sources: Path, label: str = "spam") -> dict[str, Any]:
    from trapline.pipeline.run import ingest

    settings = load_settings({"data_dir": str(data_dir)})
    ingest(list(sources), settings=settings, workers=1, label=label)
    return settings


def expected_senders(data_dir: Path) -> dict[str, tuple[Any, int]]:
    """Ground truth straight from the store: origin IP → (latest received time, messages)."""
    con = duckdb.connect(str(data_dir / "trapline.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT origin_ip, max(coalesce(received_at, ingested_at)), count(*) FROM messages "
            "WHERE origin_ip IS NOT NULL AND label = 'spam' GROUP BY origin_ip"
        ).fetchall()
    finally:
        con.close()
    return {str(ipaddress.ip_address(r[0])): (r[1], int(r[2])) for r in rows}


def reversed_name(ip: str, zone: str = ZONE) -> str:
    return ipaddress.ip_address(ip).reverse_pointer.rsplit(".", 2)[0] + "." + zone


@contextmanager
def running(
    settings: dict[str, Any],
    clock: Callable[[], float] | None = None,
    host: str = "127.0.0.1",
    **overrides: Any,
) -> Iterator[DnsblServer]:
    s = {**settings, "dnsbl_reload_s": 0, **overrides}
    server = make_server(s, read_only_source(s, clock), host, 0, clock=clock)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def ask(
    server: DnsblServer, name: str, rdtype: str = "A", tcp: bool = False, **make: Any
) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **make)
    if tcp:
        return dns.query.tcp(q, server.host, port=server.port, timeout=5)
    return dns.query.udp(q, server.host, port=server.port, timeout=5)


def a_values(msg: dns.message.Message) -> list[str]:
    return sorted(
        r.to_text() for rrset in msg.answer if rrset.rdtype == dns.rdatatype.A for r in rrset
    )


def txt_values(msg: dns.message.Message) -> list[str]:
    return sorted(
        b"".join(r.strings).decode()
        for rrset in msg.answer
        if rrset.rdtype == dns.rdatatype.TXT
        for r in rrset
    )


def wait_listed(server: DnsblServer, ips: list[str], within: float = 60.0) -> bool:
    """True once every address in ``ips`` answers 127.0.0.2 (polls; False after ``within`` s)."""
    import time

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(a_values(ask(server, reversed_name(ip))) == ["127.0.0.2"] for ip in ips):
            return True
        time.sleep(0.2)
    return False
