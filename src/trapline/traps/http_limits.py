"""Limits for the web honeypot's HTTP server, and for the logs of every trap service.

``HeaderTimeoutProtocol`` is uvicorn's h11 protocol plus a header timer: a connection that has not
finished sending a request's headers within ``header_timeout`` seconds of connecting (or of its
previous response) is closed. uvicorn has no such timer, so 1,100 half-open requests once held
1,100 descriptors until the process ran out and SMTP stalled. Together with uvicorn's
``limit_concurrency`` (503 beyond it) this bounds what HTTP visitors can hold.

``RepeatFilter`` rate-limits identical log lines (same logger, level and message template): the
first ``burst`` in a window pass, the rest are counted and summarised once when the window ends,
so a flood of "too many open files" costs a few lines, not 115 MB in 30 s.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

# Loggers the trap services write through (asyncio and uvicorn report accept() failures).
_OVERFLOW = 16  # connections past the cap still accepted, to answer them 503
SERVICE_LOGGERS = ("trapline", "trapline.smtp", "trapline.serve", "asyncio", "uvicorn.error")


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol; closes connections that do not send their headers in time."""

    header_timeout = 10.0

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        limit = self.limit_concurrency
        if limit is not None and len(self.connections) > limit + _OVERFLOW:
            # Far past the cap (uvicorn only answers 503 once a request arrives): hang up at
            # once, so idle connections cannot take the descriptors SMTP and the drain need.
            transport.close()
            return
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if getattr(self, "_header_timer", None) is not None:
            assert self._header_timer is not None
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.cycle is None or self.cycle.response_complete:  # no request under way
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm()  # headers are in: the app (and its own read timeout) takes over

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request on this connection gets the same time

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def with_header_timeout(seconds: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class for uvicorn's ``http=`` with this header timeout."""
    return type("TrapHeaderTimeout", (HeaderTimeoutProtocol,), {"header_timeout": seconds})


def http_connection_limit(wanted: int, reserved: int, backlog: int = 0) -> int:
    """How many HTTP connections to allow so ``reserved`` descriptors stay free for SMTP, the
    spool, the store and the drain: ``wanted``, lowered to fit under RLIMIT_NOFILE. asyncio
    accepts up to ``backlog`` connections per wake-up before any can be turned away, so those
    count too."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - reserved - backlog - _OVERFLOW))


class RepeatFilter(logging.Filter):
    """Pass the first ``burst`` identical records per ``window`` seconds, count the rest."""

    def __init__(
        self, burst: int = 5, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self.clock = clock
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # key -> [start, count]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        entry = self._seen.get(key)
        if entry is None or now - entry[0] >= self.window:
            dropped = int(entry[1]) - self.burst if entry else 0
            if len(self._seen) > 1000:  # bounded: forget old keys
                self._seen.clear()
            self._seen[key] = [now, 1]
            if dropped > 0:
                record.msg = f"{record.msg} (and {dropped} more like it in the last window)"
            return True
        entry[1] += 1
        return entry[1] <= self.burst


def install_log_limits(burst: int, window: float) -> RepeatFilter:
    """Put one ``RepeatFilter`` on every service logger (filters are not inherited)."""
    flt = RepeatFilter(burst, window)
    for name in SERVICE_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, RepeatFilter)]:
            logger.removeFilter(old)
        logger.addFilter(flt)
    return flt


def honeypot_http_limits(settings: dict[str, Any]) -> dict[str, Any]:
    """uvicorn.Config arguments for the honeypot: header timeout, connection cap, keep-alive."""
    return {
        "http": with_header_timeout(float(settings["http_header_timeout_s"])),
        "limit_concurrency": http_connection_limit(
            int(settings["http_max_connections"]),
            int(settings["reserved_descriptors"]),
            int(settings["http_listen_backlog"]),
        ),
        "timeout_keep_alive": 5,
        "backlog": int(settings["http_listen_backlog"]),  # uvicorn listens again with this
        "h11_max_incomplete_event_size": 16 * 1024,  # request line and headers
    }
