"""The SMTP trap's protocol server: aiosmtpd's ``SMTP`` with trap limits and session tracing.

Limits are class attributes (the aiosmtpd way: ``line_length_limit``, ``data_size_limit``), so a
deployment or a test overrides them in a subclass; ``server_class(settings)`` builds one from
settings. Every limit hit is an explicit SMTP reply plus a ``limit`` spool record:

=====================  ==========================================================  ==========
limit                  reply                                                       attribute
=====================  ==========================================================  ==========
message size           ``552 5.3.4 Message too big (limit N bytes)``               ``max_message_bytes``
recipients/message     ``452 4.5.3 Too many recipients (limit N per message)``     ``max_recipients``
concurrent conns       ``421 4.7.0 Too many connections, try again later``          ``max_connections``
per-IP rate            ``421 4.7.0`` at connect, ``450 4.7.1`` at MAIL              ``per_ip_per_minute``
command idle time      ``421 4.4.2 <host> Error: timeout exceeded``                ``command_timeout``
DATA duration          ``421 4.4.2 <host> Error: timeout exceeded`` (slowloris)    ``data_timeout``
line length            ``500 5.5.6 Line too long (limit N bytes)``                  ``line_length_limit``
sessions per IP        ``421 4.7.0 Too many sessions from <ip>``                   ``max_sessions_per_ip``
idle commands          ``421 4.7.0 Too many commands without mail, closing``        ``max_idle_commands``
refused recipients     ``421 4.7.1 Too many refused recipients, closing``           ``max_refused_rcpts``
in-flight DATA bytes   ``451 4.3.2 Server busy, try again later`` at DATA           ``inflight_budget``
=====================  ==========================================================  ==========

Memory: DATA is not held in memory. ``smtp_DATA`` (aiosmtpd's, rewritten to stream) reads it in
pieces of at most ``read_buffer_limit`` bytes and keeps the content in memory up to
``data_in_memory``, then in a spool file written as it arrives (``data.receive``,
``spool.IncomingMessage``): a session holds a few pieces whatever the message size. Every DATA still reserves ``max_message_bytes`` of ``inflight_budget`` before
its 354 and gives it back when it ends; a DATA that would overdraw it gets 451 (try later). The
budget now bounds the disk taken by unfinished messages in ``spool/tmp`` (docs/security.md).

aiosmtpd contract: besides the documented hooks this subclass relies on a few private members of
``aiosmtpd.smtp.SMTP`` (``PRIVATE_CONTRACT`` below); pyproject pins the tested version range and
``tests/test_smtp_hardening.py`` fails by name when one of them changes.

Compatibility (a trap keeps everything a real sender can send): SMTPUTF8 (RFC 6531) is offered
and UTF-8 addresses accepted; ``<postmaster>`` without a domain is accepted as RFC 5321 §4.5.1
requires; a domain written with its root dot (``<v@traps.example.org.>``) is the same domain.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.smtp import SMTP, syntax

from trapline.config import SmtpLimits
from trapline.errors import ConfigError
from trapline.model import utcnow
from trapline.traps.smtp.data import TOO_LONG, TOO_MUCH, DataDecoder, receive
from trapline.traps.smtp.handler import (
    SessionTrace,
    TrapHandler,
    fingerprint,
    helo_shape,
    timing,
)
from trapline.traps.smtp.spool import IncomingMessage, Spool, SpoolRecord

log = logging.getLogger("trapline.smtp")

# Members of aiosmtpd.smtp.SMTP this module uses that aiosmtpd does not document (tested by name).
PRIVATE_CONTRACT = (
    "_smtp_methods", "_handle_client", "_timeout_cb", "_reset_timeout", "_getaddr", "_reader",
    "command_size_limits", "transport", "data_size_limit", "loop", "smtp_DATA", "_writer",
    "check_helo_needed", "check_auth_needed", "_call_handler_hook", "_set_post_data_state",
    "event_handler", "envelope",
)  # fmt: skip
_IDLE_VERBS = frozenset({"NOOP", "RSET", "HELP", "VRFY", "EXPN"})
REPLY_IDLE = "421 4.7.0 Too many commands without mail, closing"
REPLY_BUSY = "451 4.3.2 Server busy, try again later"


class TrapState:
    """Counters shared by every connection of one listening server."""

    def __init__(self) -> None:
        self.connections = 0
        self.sessions: dict[str, int] = {}  # open sessions per peer IP
        self.inflight = 0  # bytes of max_message_bytes reserved by DATA commands in progress
        self._windows: dict[str, deque[float]] = {}
        self._last_sweep = 0.0

    def open(self, ip: str) -> None:
        self.sessions[ip] = self.sessions.get(ip, 0) + 1

    def close(self, ip: str) -> None:
        left = self.sessions.get(ip, 0) - 1
        if left > 0:
            self.sessions[ip] = left
        else:
            self.sessions.pop(ip, None)

    def allow(self, ip: str, now: float, per_minute: int) -> bool:
        """Count one event for ``ip``; False when it had ``per_minute`` already in 60 s."""
        window = self._windows.setdefault(ip, deque())
        while window and window[0] <= now - 60.0:
            window.popleft()
        if len(window) >= per_minute:
            return False
        window.append(now)
        if now - self._last_sweep > 60.0:  # forget idle IPs so the table stays small
            self._last_sweep = now
            for key in [k for k, w in self._windows.items() if not w or w[-1] <= now - 60.0]:
                del self._windows[key]
        return True


_DEFAULT_LIMITS = SmtpLimits.from_settings({})


class TrapSMTP(SMTP):
    """aiosmtpd SMTP server with trap limits, a session trace and no relaying."""

    # Real spam breaks RFC 5321 §4.5.3.1.6's 1000-octet line limit (unwrapped HTML, long base64
    # lines); refusing it would lose exactly the mail we want, so allow 1 MiB per line.
    line_length_limit = 1 << 20
    # The session's read buffer (asyncio pauses the socket at twice this): also the largest
    # piece of DATA handled at once, so it bounds a session's memory, not the message size.
    read_buffer_limit = 64 * 1024
    command_size_limit = 2048  # bots send long MAIL FROM parameters; 512 (RFC) is too strict
    # The defaults from config.DEFAULTS; ``server_class`` makes a subclass with the settings.
    max_message_bytes = _DEFAULT_LIMITS.max_message_bytes
    max_recipients = _DEFAULT_LIMITS.max_recipients
    max_connections = _DEFAULT_LIMITS.max_connections
    per_ip_per_minute = _DEFAULT_LIMITS.per_ip_per_minute
    command_timeout = _DEFAULT_LIMITS.command_timeout_s
    data_timeout = _DEFAULT_LIMITS.data_timeout_s
    max_sessions_per_ip = _DEFAULT_LIMITS.max_sessions_per_ip
    max_idle_commands = _DEFAULT_LIMITS.max_idle_commands
    max_refused_rcpts = _DEFAULT_LIMITS.max_refused_rcpts
    inflight_budget = _DEFAULT_LIMITS.inflight_data_bytes
    data_in_memory = _DEFAULT_LIMITS.data_memory_bytes
    state: TrapState = TrapState()
    spool: Spool | None = None

    def __init__(self, handler: TrapHandler, **kwargs: Any) -> None:
        kwargs.setdefault("data_size_limit", self.max_message_bytes)
        kwargs.setdefault("timeout", self.command_timeout)
        kwargs.setdefault("ident", "ESMTP")
        kwargs.setdefault("enable_SMTPUTF8", True)  # spam with UTF-8 addresses is still spam
        super().__init__(handler, **kwargs)
        # aiosmtpd keeps per-verb command limits in a class-level dict whose default is SMTP's
        # 512 and which EHLO increments; give each session its own, defaulting to ours.
        self.command_size_limits = collections.defaultdict(lambda: self.command_size_limit)
        self.trace = SessionTrace("", "", 0, 0.0, utcnow())
        self._in_data = False
        self.incoming: IncomingMessage | None = None  # the spool file of the message in DATA
        self._admitted = False
        self._counted = False  # holds a slot in the connection and per-IP counters
        self._refusal: tuple[str, str] | None = None
        self._closed_session = False
        self._events = 0
        self._idle = 0  # commands in a row that move no mail (NOOP, RSET, HELP, VRFY, EXPN)
        # Trace every command by wrapping aiosmtpd's verb table (built from smtp_* methods).
        for verb, method in list(self._smtp_methods.items()):
            self._smtp_methods[verb] = self._traced(verb, method)

    # --- tracing ------------------------------------------------------------------------------

    def _traced(
        self, verb: str, method: Callable[[Any], Awaitable[None]]
    ) -> Callable[[Any], Awaitable[None]]:
        async def run(arg: Any) -> None:
            if len(self.trace.commands) < 10_000:  # bounded: a session may loop for a while
                self.trace.commands.append((verb, self.loop.time()))
            # Bytes already buffered before we answered = the client did not wait for our reply
            # (RFC 2920 pipelining, or a bot that ignores the protocol's turn-taking).
            if getattr(self._reader, "_buffer", b"") and verb not in {"QUIT"}:
                self.trace.pipelined = True
            if verb in _IDLE_VERBS:
                self._idle += 1
                if self._idle > self.max_idle_commands:
                    await self._refuse_and_close("idle", REPLY_IDLE)
                    return
            elif verb in {"MAIL", "RCPT", "DATA"}:
                self._idle = 0
            if verb == "DATA":
                await self._data(method, arg)
                return
            if verb == "QUIT":
                self.trace.end_reason = "quit"
            await method(arg)
            if self.trace.end_reason == "limit" and self.transport is not None:
                self.transport.close()  # the handler refused for good (refused recipients)

        return run

    async def _data(self, method: Callable[[Any], Awaitable[None]], arg: Any) -> None:
        """DATA under the data timeout and the in-flight memory budget."""
        need = self.data_size_limit or self.max_message_bytes
        if self.state.inflight + need > self.inflight_budget:
            self.note_limit("memory", REPLY_BUSY, f"{self.state.inflight} bytes in flight")
            await self.push(REPLY_BUSY)
            return
        self.state.inflight += need
        self._in_data = True
        self._reset_timeout(self.data_timeout)
        try:
            await method(arg)
        finally:
            self.state.inflight -= need
            self._in_data = False
            # After a timeout or a hang-up the session is over: a timer re-armed now would
            # fire on a closed session (a bogus command-timeout and aiosmtpd's assertion).
            if self.transport is not None:
                self._reset_timeout()

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA with the same checks and replies, but the content goes to a spool
        file as it arrives and the handler's ``handle_DATA`` commits that file."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        self.incoming = self.event_handler.open_message(self, self.envelope)
        decoder = DataDecoder(self.data_size_limit, self.line_length_limit)
        try:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            await receive(self._reader, decoder, self.incoming.write, self.read_buffer_limit)
            # RFC 5321 §4.2.5: limits are answered once the data has ended (push words them).
            if decoder.state == TOO_LONG:
                status = "500 Line too long (see RFC5321 4.5.3.1.6)"
            elif decoder.state == TOO_MUCH:
                status = "552 Error: Too much mail data"
            else:
                status = await self._call_handler_hook("DATA")
        except asyncio.CancelledError:  # the connection went away during DATA (as aiosmtpd)
            self._writer.close()
            raise
        finally:
            self.incoming.discard()  # a no-op once committed
            self.incoming = None
        self._set_post_data_state()
        await self.push(status)

    async def _refuse_and_close(self, kind: str, reply: str) -> None:
        self.note_limit(kind, reply)
        self.trace.end_reason = "limit"
        await self.push(reply)
        if self.transport is not None:
            self.transport.close()

    def event_id(self) -> str:
        self._events += 1
        return f"{self.trace.session_id}-{self._events}"

    def note_limit(self, kind: str, reply: str, detail: str = "") -> None:
        """Record that a limit was hit (the caller sends ``reply``)."""
        log.warning("limit %s hit by %s: %s", kind, self.trace.peer_ip, reply)
        if self.spool is not None:
            self.spool.submit(
                SpoolRecord(
                    "limit",
                    {
                        "id": self.event_id(),
                        "session_id": self.trace.session_id,
                        "peer_ip": self.trace.peer_ip,
                        "kind": kind,
                        "reply": reply,
                        "detail": detail[:500],
                        "hit_at": utcnow().isoformat(),
                    },
                ),
                durable=False,
            )

    # --- connection lifecycle -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if not first:  # STARTTLS re-enters here with the TLS transport
            self.trace.tls = True
            return
        # aiosmtpd sizes the reader by the line limit; DATA comes in pieces, commands are short.
        self._reader._limit = self.read_buffer_limit  # type: ignore[attr-defined]
        peer = transport.get_extra_info("peername") or ("", 0)
        self.trace = SessionTrace(
            uuid.uuid4().hex[:16], str(peer[0]), int(peer[1]), self.loop.time(), utcnow()
        )
        # Admission is decided here, at accept time and in accept order: deciding in the
        # session task would let a burst count itself full before anyone got a banner.
        self._refusal = self._admission()
        if self._refusal is None:
            self.state.connections += 1
            self.state.open(self.trace.peer_ip)
            self._counted = True
        self._admitted = True

    def _admission(self) -> tuple[str, str] | None:
        """(reply, limit kind) when this new session must be turned away, else None."""
        ip = self.trace.peer_ip
        if self.state.connections >= self.max_connections:
            return "421 4.7.0 Too many connections, try again later", "connections"
        if self.state.sessions.get(ip, 0) >= self.max_sessions_per_ip:
            return f"421 4.7.0 Too many sessions from {ip}, try again later", "sessions-per-ip"
        if not self.state.allow(ip, self.loop.time(), self.per_ip_per_minute):
            return f"421 4.7.0 Too many connections from {ip}, slow down", "rate"
        return None

    def connection_lost(self, error: Exception | None) -> None:
        if self._admitted and not self._closed_session:
            self._closed_session = True
            if self._counted:
                self.state.connections -= 1
                self.state.close(self.trace.peer_ip)
            self._record_session()
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        trace = self.trace
        if self._refusal is not None:
            reply, kind = self._refusal
            self.note_limit(kind, reply)
            trace.end_reason = "limit"
            await self.push(reply)
            if self.transport is not None:
                self.transport.close()
            return
        trace.banner_at = self.loop.time()
        await super()._handle_client()

    def _timeout_cb(self) -> None:
        if self.transport is None:  # the session ended before its timer: nothing timed out
            return
        kind = "data-timeout" if self._in_data else "command-timeout"
        reply = f"421 4.4.2 {self.hostname} Error: timeout exceeded"
        self.note_limit(kind, reply)
        self.trace.end_reason = "timeout"
        if isinstance(self.transport, asyncio.WriteTransport):
            self.transport.write(reply.encode() + b"\r\n")  # close() flushes it first
        super()._timeout_cb()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        address, rest = super()._getaddr(arg)
        if address is None and arg:
            # "<v@traps.example.org.>": the root dot is legal in DNS and used by real senders;
            # the email header parser refuses it, so parse without it.
            text = arg.strip()
            close = text.find(">")
            if text.startswith("<") and close > 0 and text[:close].endswith("."):
                return super()._getaddr(text[:close].rstrip(".") + text[close:])
        return address, rest

    async def push(self, status: Any) -> None:
        # aiosmtpd's own limit replies are terse; make them say which limit, and log the hit.
        text = status.decode("ascii", "replace") if isinstance(status, bytes) else str(status)
        if text.startswith("552 Error: Too much mail data") or text.startswith(
            "552 Error: message size exceeds"
        ):
            text = f"552 5.3.4 Message too big (limit {self.data_size_limit} bytes)"
            self.note_limit("size", text)
        elif text.startswith("500 Line too long"):
            text = f"500 5.5.6 Line too long (limit {self.line_length_limit} bytes)"
            self.note_limit("line-length", text)
        elif text.startswith("500 Command line too long"):
            text = f"500 5.5.6 Command line too long (limit {self.command_size_limit} bytes)"
            self.note_limit("command-length", text)
        await super().push(text)

    def _record_session(self) -> None:
        if self.spool is None:
            return
        trace = self.trace
        fp_text, fp = fingerprint(trace)
        first_ms, gap_ms = timing(trace)
        try:
            self.spool.submit(
                SpoolRecord(
                    "session",
                    {
                        "session_id": trace.session_id,
                        "peer_ip": trace.peer_ip,
                        "peer_port": trace.peer_port,
                        "started_at": trace.started_at.isoformat(),
                        "ended_at": utcnow().isoformat(),
                        "helo": trace.helo,
                        "helo_shape": helo_shape(trace.helo, trace.peer_ip),
                        "mail_from": trace.mail_from,
                        "rcpt_to": trace.rcpt_to,
                        "esmtp": trace.esmtp,
                        "tls": trace.tls,
                        "pipelined": trace.pipelined,
                        "commands": [v for v, _ in trace.commands],
                        "first_command_ms": first_ms,
                        "median_gap_ms": gap_ms,
                        "messages": trace.messages,
                        "fingerprint": fp,
                        "fingerprint_text": fp_text,
                        "end_reason": trace.end_reason,
                    },
                ),
                durable=False,
            )
        except Exception as exc:  # spool already closed at shutdown: the session line is lost
            log.debug("session %s not recorded: %s", trace.session_id, exc)


def server_class(settings: dict[str, Any], spool: Spool) -> type[TrapSMTP]:
    """A ``TrapSMTP`` subclass with limits from settings and its own shared counters."""
    limits = SmtpLimits.from_settings(settings)
    attrs: dict[str, Any] = {
        "max_message_bytes": limits.max_message_bytes,
        "max_recipients": limits.max_recipients,
        "max_connections": limits.max_connections,
        "per_ip_per_minute": limits.per_ip_per_minute,
        "command_timeout": limits.command_timeout_s,
        "data_timeout": limits.data_timeout_s,
        "max_sessions_per_ip": limits.max_sessions_per_ip,
        "max_idle_commands": limits.max_idle_commands,
        "max_refused_rcpts": limits.max_refused_rcpts,
        "inflight_budget": limits.inflight_data_bytes,
        "data_in_memory": limits.data_memory_bytes,
        "state": TrapState(),
        "spool": spool,
    }
    budget, biggest = attrs["inflight_budget"], attrs["max_message_bytes"]
    if budget < biggest:
        raise ConfigError(
            f"smtp_inflight_data_bytes ({budget}) is smaller than "
            f"smtp_max_message_bytes ({biggest}): no message could be "
            "received; raise the budget or lower the message limit"
        )
    return type("ConfiguredTrapSMTP", (TrapSMTP,), attrs)


def tls_context(settings: dict[str, Any]) -> ssl.SSLContext | None:
    """A server TLS context for STARTTLS (RFC 3207) when a certificate is configured."""
    cert, key = str(settings.get("smtp_tls_cert") or ""), str(settings.get("smtp_tls_key") or "")
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"smtp_tls_cert/smtp_tls_key: cannot load {cert}: {exc}; check the files"
        ) from exc
    return context


async def start_smtp(
    settings: dict[str, Any], spool: Spool, host: str, port: int
) -> asyncio.Server:
    """Listen for SMTP on ``host:port`` (port 0 = any free port); returns the asyncio server.

    Offers STARTTLS when ``smtp_tls_cert`` is set: bots that use it are fingerprinted as such."""
    cls = server_class(settings, spool)
    handler = TrapHandler(
        spool, list(settings.get("trap_domains") or []), settings["smtp_hostname"]
    )
    hostname = str(settings.get("smtp_hostname") or "localhost")
    context = tls_context(settings)
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    server = await loop.create_server(
        lambda: cls(handler, hostname=hostname, loop=loop, tls_context=context),
        host,
        port,
        reuse_address=True,
        # A burst of bots connects faster than we accept: queue them rather than drop them.
        backlog=SmtpLimits.from_settings(settings).listen_backlog,
    )
    log.debug("smtp server up in %.3fs", time.monotonic() - started)
    return server
