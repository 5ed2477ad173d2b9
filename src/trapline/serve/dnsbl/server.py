"""The DNSBL's sockets: UDP answer loops, a small TCP server, reloads and worker processes.

Each UDP loop is a blocking ``recvfrom``/``sendto`` pair around ``Responder.answer``: per packet
that is the least Python a server can run. More cores: ``workers`` > 1 binds the same port in
further processes with ``SO_REUSEPORT`` and the kernel spreads queries over them. Reloads build
a new index off the answering path and swap one reference, so no query is dropped; worker
processes get the same listing data through a pipe and swap on their own.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import socket
import struct
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from trapline.errors import ServiceError
from trapline.serve.dnsbl.answer import Responder, ZoneConfig
from trapline.serve.dnsbl.zones import ListingData, build_index

log = logging.getLogger("trapline.dnsbl")

ListingSource = Callable[[], ListingData]


class RateLimiter:
    """Per-source token bucket: ``rate`` queries a second, bursts of ``rate``; 0 = off."""

    max_sources = 65536  # the table is cleared when a flood of sources fills it

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, source: str) -> bool:
        now = self.clock()
        tokens, last = self._buckets.get(source, (self.rate, now))
        tokens = min(self.rate, tokens + (now - last) * self.rate)
        if len(self._buckets) >= self.max_sources:
            self._buckets.clear()
        if tokens < 1.0:
            self._buckets[source] = (tokens, now)
            return False
        self._buckets[source] = (tokens - 1.0, now)
        return True


def _udp_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    with contextlib.suppress(OSError):  # a deep queue rides out reloads and bursts
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sock.bind((host, port))
    return sock


def udp_loop(
    sock: socket.socket,
    responder: Responder,
    limiter: RateLimiter | None,
    stopping: Callable[[], bool],
    max_packet: int,
) -> None:
    """Answer datagrams until ``stopping()``; nothing a client sends can end the loop."""
    recv, send, answer = sock.recvfrom, sock.sendto, responder.answer
    while True:
        try:
            data, addr = recv(max_packet)
        except OSError:
            if stopping():
                return
            continue
        if not data:
            if stopping():
                return
            continue
        if limiter is not None and not limiter.allow(addr[0]):
            continue  # over its rate: dropped, as response rate limiting does
        try:
            reply = answer(data)
        except Exception:  # a bug must cost one answer, not the service
            log.exception("dnsbl: failed to answer a %d-byte query from %s", len(data), addr[0])
            continue
        if reply is not None:
            with contextlib.suppress(OSError):
                send(reply, addr)


def _worker_main(
    host: str,
    port: int,
    zones: list[ZoneConfig],
    updates: Connection,
    rate_limit: float,
    max_packet: int,
) -> None:
    """A worker process: its own SO_REUSEPORT socket and index, fed through ``updates`` (the
    first message is the data to start with; it is not kept once indexed)."""
    responder = Responder(zones, build_index(updates.recv()))
    sock = _udp_socket(host, port, True)

    def follow() -> None:
        while True:
            try:
                new = updates.recv()
            except (EOFError, OSError):
                return
            responder.swap(build_index(new))

    threading.Thread(target=follow, name="dnsbl-reload", daemon=True).start()
    limiter = RateLimiter(rate_limit) if rate_limit > 0 else None
    udp_loop(sock, responder, limiter, lambda: False, max_packet)


class DnsblServer:
    """UDP + TCP DNSBL on one address; limits are class attributes a subclass may override."""

    udp_max_packet = 4096  # larger datagrams are cut to this and fail to parse: FORMERR
    tcp_max_connections = 64
    tcp_idle_timeout = 10.0  # RFC 7766 §6.2.3: servers may close idle connections
    tcp_max_queries = 1000  # per connection

    def __init__(
        self,
        zones: list[ZoneConfig],
        source: ListingSource,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        workers: int = 1,
        rate_limit: float = 0.0,
        reload_every: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.zones, self.source = zones, source
        self.host, self.port = host, port
        self.workers = max(1, int(workers))
        self.rate_limit = float(rate_limit)
        self.reload_every = float(reload_every)
        self.clock = clock
        self.responder: Responder | None = None
        self.reloads = 0
        self.last_reload_error: str | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._procs: list[Any] = []
        self._pipes: list[Connection] = []
        self._slots = threading.BoundedSemaphore(self.tcp_max_connections)

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> tuple[str, int]:
        """Load the listings, bind UDP and TCP, start answering; returns the bound address."""
        data = self.source()
        self.responder = Responder(self.zones, build_index(data), self.clock)
        self._bind()
        assert self._udp is not None
        limiter = RateLimiter(self.rate_limit) if self.rate_limit > 0 else None
        self._spawn(
            "dnsbl-udp",
            udp_loop,
            self._udp,
            self.responder,
            limiter,
            self._stop.is_set,
            self.udp_max_packet,
        )
        self._spawn("dnsbl-tcp", self._tcp_accept)
        if self.reload_every > 0:
            self._spawn("dnsbl-reload", self._reload_loop)
        if self.workers > 1:
            ctx = multiprocessing.get_context("spawn")
            for _ in range(self.workers - 1):
                parent, child = ctx.Pipe()
                proc = ctx.Process(
                    target=_worker_main,
                    args=(self.host, self.port, self.zones, child, self.rate_limit,
                          self.udp_max_packet),
                    daemon=True,
                )  # fmt: skip
                proc.start()
                child.close()
                parent.send(data)
                self._procs.append(proc)
                self._pipes.append(parent)
        return self.host, self.port

    def _bind(self) -> None:
        for _attempt in range(20):
            udp = _udp_socket(self.host, self.port, self.workers > 1)
            port = udp.getsockname()[1]
            tcp = socket.socket(udp.family, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, port))
            except OSError as exc:
                udp.close()
                tcp.close()
                if self.port == 0:
                    continue  # the UDP port's TCP twin is taken: try another ephemeral port
                raise ServiceError(
                    f"dnsbl: cannot listen on TCP {self.host}:{port} ({exc.strerror}); is it free?"
                ) from exc
            tcp.listen(64)
            self._udp, self._tcp, self.port = udp, tcp, port
            return
        raise ServiceError(f"dnsbl: found no free port pair on {self.host}")

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Stop answering and release the ports (queries in flight are answered or dropped)."""
        self._stop.set()
        for sock in (self._udp, self._tcp):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked recv / accept
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            proc.join(5)
        for pipe in self._pipes:
            pipe.close()
        for thread in self._threads:
            thread.join(5)
        for sock in (self._udp, self._tcp):
            if sock is not None:
                sock.close()

    # --- reloads ------------------------------------------------------------------------------

    def reload(self) -> int:
        """Read the listings again and swap them in; returns how many entries are listed."""
        data = self.source()
        index = build_index(data)
        assert self.responder is not None
        self.responder.swap(index)
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(data)
        self.reloads += 1
        return index.size

    def _reload_loop(self) -> None:
        while not self._stop.wait(self.reload_every):
            try:
                self.reload()
                self.last_reload_error = None
            except Exception as exc:  # keep answering from the previous data
                self.last_reload_error = str(exc)
                log.warning("dnsbl: reload failed, still serving the previous data: %s", exc)

    # --- TCP (RFC 7766; RFC 1035 §4.2.2 two-byte length framing) -------------------------------

    def _tcp_accept(self) -> None:
        assert self._tcp is not None
        while not self._stop.is_set():
            try:
                conn, _addr = self._tcp.accept()
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.01)
                continue
            if not self._slots.acquire(blocking=False):
                conn.close()  # too many connections: refuse rather than queue
                continue
            threading.Thread(target=self._tcp_serve, args=(conn,), daemon=True).start()

    def _tcp_serve(self, conn: socket.socket) -> None:
        assert self.responder is not None
        try:
            conn.settimeout(self.tcp_idle_timeout)
            for _ in range(self.tcp_max_queries):
                head = _recv_exact(conn, 2)
                if head is None:
                    return
                (length,) = struct.unpack("!H", head)
                data = _recv_exact(conn, length)
                if data is None:
                    return
                try:
                    reply = self.responder.answer(data, 65535)
                except Exception:
                    log.exception("dnsbl: failed to answer a TCP query")
                    return
                if reply is None:
                    return
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            return
        finally:
            conn.close()
            self._slots.release()


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < n:
        part = conn.recv(n - len(chunks))
        if not part:
            return None
        chunks += part
    return bytes(chunks)
