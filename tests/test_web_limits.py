"""The web honeypot under abuse, over real sockets on 127.0.0.1 with real clients (httpx, raw
sockets): header and body timeouts, the connection cap, the listen backlog, per-client visit
budgets, visit numbers past 2^24, no 500 when the spool fails, and rate-limited log lines."""

from __future__ import annotations

import contextlib
import io
import logging
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from test_web import SECRET, TRAP, Web, _addresses_in, start_honeypot
from trap_helpers import TrapProcess, inet_sockets, send_one, spam_bodies
from trapline.config import load_settings
from trapline.traps import addresses
from trapline.traps.http_limits import (
    RepeatFilter,
    honeypot_http_limits,
    http_connection_limit,
)
from trapline.traps.web import VisitIssuer


@pytest.fixture
def limited_web(tmp_path: Path) -> Iterator[Callable[..., Web]]:
    """Factory: the honeypot served with the production limits (``honeypot_http_limits``)."""
    stops: list[Callable[[], None]] = []

    def make(settings: dict[str, Any] | None = None, **site_args: Any) -> Web:
        limits = honeypot_http_limits(load_settings(settings or {}))
        return start_honeypot(tmp_path / f"spool{len(stops)}", stops, limits, **site_args)

    yield make
    for stop in stops:
        stop()


def _port(web: Web) -> int:
    return int(web.base.rsplit(":", 1)[1])


def _closed_by_server(sock: socket.socket, timeout: float = 20) -> bytes:
    sock.settimeout(timeout)
    got = b""
    while chunk := sock.recv(4096):
        got += chunk
    return got


def test_headers_that_never_finish_are_cut_off(limited_web: Callable[..., Web]) -> None:
    web = limited_web({"http_header_timeout_s": 0.5})
    with socket.create_connection(("127.0.0.1", _port(web))) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: garden.example\r\nX-Slow: ")  # never ends
        assert _closed_by_server(slow) == b""  # closed, without a response
    assert httpx.get(f"{web.base}/").status_code == 200  # everyone else is served


def test_a_trickled_form_body_is_cut_off_and_still_logged(
    limited_web: Callable[..., Web],
) -> None:
    web = limited_web(read_timeout=0.5)
    with socket.create_connection(("127.0.0.1", _port(web))) as slow:
        slow.sendall(
            b"POST /guestbook/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-"
            b"urlencoded\r\nContent-Length: 10000\r\n\r\nbody=buy+pills+http://x.example/"
        )
        slow.settimeout(20)
        assert slow.recv(4096).startswith(b"HTTP/1.1 200")
    comment = web.records("comment")[0].fields
    assert comment["body"].startswith("buy pills")


def test_connections_beyond_the_cap_get_503(limited_web: Callable[..., Web]) -> None:
    web = limited_web({"http_max_connections": 3, "http_header_timeout_s": 30})
    held = []
    try:
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", _port(web)))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # half a request each
            held.append(sock)
        deadline = time.monotonic() + 10
        while (code := httpx.get(f"{web.base}/").status_code) != 503:
            assert time.monotonic() < deadline, code  # the server counts them as they arrive
            time.sleep(0.05)
    finally:
        for sock in held:
            sock.close()


def test_descriptors_are_reserved_below_the_process_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert http_connection_limit(10**9, 256, 128) == soft - 256 - 128 - 16
    assert http_connection_limit(10, 256) == 10


def test_one_client_cannot_burn_the_visit_space(limited_web: Callable[..., Web]) -> None:
    web = limited_web(visits_per_ip_per_minute=3)
    seen = [_addresses_in(httpx.get(f"{web.base}/").text).pop() for _ in range(6)]
    assert len(set(seen)) == 3 and seen[3:] == [seen[2]] * 3  # then its last address again
    other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    fresh = _addresses_in(other.get(f"{web.base}/").text).pop()
    assert fresh not in seen  # another client is not affected
    assert len(web.records("visit", 4)) == 4  # nothing recorded for the repeats


def test_visit_numbers_past_2_24_never_give_a_500(limited_web: Callable[..., Web]) -> None:
    web = limited_web(issuer=VisitIssuer(addresses.MAX_V1_VISIT - 1))
    got = [httpx.get(f"{web.base}/") for _ in range(4)]
    assert [r.status_code for r in got] == [200] * 4
    visits = [addresses.decode(_addresses_in(r.text).pop(), SECRET, [TRAP]).visit for r in got]
    start = addresses.MAX_V1_VISIT - 1
    assert visits == [start, start + 1, start + 2, start + 3]


def test_a_broken_spool_still_serves_pages(limited_web: Callable[..., Web]) -> None:
    web = limited_web()
    web.spool.close()  # every submit now fails
    page = httpx.get(f"{web.base}/contact/")
    assert page.status_code == 200 and len(_addresses_in(page.text)) == 1


def test_repeated_log_lines_are_rate_limited() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("trapline.test-repeat")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    now = [0.0]  # the filter's clock, moved by the test (no timing in the assertion)
    flt = RepeatFilter(burst=5, window=60.0, clock=lambda: now[0])
    logger.addFilter(flt)
    try:
        for _ in range(10_000):
            logger.error("accept failed: %s", "Too many open files")
        logger.error("something else")
        now[0] = 61.0  # the window ends; the next line carries the count
        logger.error("accept failed: %s", "Too many open files")
    finally:
        logger.removeFilter(flt)
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5 + 1 + 1
    assert lines[-1].endswith("(and 9995 more like it in the last window)")


def test_serve_applies_the_http_backlog(tmp_path: Path) -> None:
    proc = TrapProcess(tmp_path / "data", {"http_listen_backlog": 333}).start()
    try:
        out = subprocess.run(
            ["ss", "-ltnH", f"sport = :{proc.http_port}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert out[0] == "LISTEN" and int(out[2]) == 333
    finally:
        proc.stop(signal.SIGTERM)


def test_idle_http_connections_cannot_starve_smtp(tmp_path: Path) -> None:
    """A whole ``trapline serve`` with 400 descriptors: 600 half-open HTTP requests hold at most
    the HTTP cap (what reserved_descriptors and the accept batch leave), no accept() fails for
    lack of descriptors, and mail still gets 250."""
    body = spam_bodies(1)[0]
    proc = TrapProcess(
        tmp_path / "data",
        {"reserved_descriptors": 200, "http_header_timeout_s": 120},
        prefix=("prlimit", "--nofile=400:400"),
    ).start()
    held: list[socket.socket] = []
    try:
        for _ in range(600):
            sock = socket.create_connection(("127.0.0.1", proc.http_port), timeout=30)
            with contextlib.suppress(OSError):  # already hung up on: the server sheds them
                sock.sendall(b"GET / HTTP/1.1\r\nHost: garden.example\r\n")  # never finished
            held.append(sock)
        assert send_one(proc.smtp_port, [f"x@{TRAP}"], body)[0] == 250
        http_open = [
            s for s in inet_sockets(proc.pid) if s[1] == proc.http_port and s[4] == "ESTABLISHED"
        ]
        assert len(http_open) <= 400 - 200 - 128, len(http_open)
    finally:
        for sock in held:
            sock.close()
        log = proc.stop(signal.SIGTERM)
    assert "Too many open files" not in log
