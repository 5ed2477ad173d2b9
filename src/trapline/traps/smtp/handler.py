"""The SMTP trap's handler object: accept mail for trap domains, spool it, never relay.

aiosmtpd finds ``handle_<VERB>`` methods by name (see aiosmtpd/handlers.py). This handler only
ever writes to the local spool: it has no client code, opens no sockets and resolves no names,
so nothing a sender does can make the trap send mail anywhere (an open relay is the one mistake
a spam trap must never make). Session bookkeeping lives on the server (``server.TrapSMTP``);
the pure helpers at the bottom turn it into a fingerprint.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import itertools
import logging
import re
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Protocol

from trapline.model import utcnow
from trapline.traps.addresses import is_trap_domain
from trapline.traps.smtp.spool import IncomingMessage, Spool, SpoolError, SpoolRecord


class RateState(Protocol):
    def allow(self, ip: str, now: float, per_minute: int) -> bool: ...


class TrapServer(Protocol):
    """What the handler uses of its server (``server.TrapSMTP``), named here so the handler
    does not import the server that imports it."""

    trace: SessionTrace
    hostname: str
    incoming: IncomingMessage | None  # the message DATA is receiving
    loop: asyncio.AbstractEventLoop
    state: RateState
    max_recipients: int
    max_refused_rcpts: int
    per_ip_per_minute: int
    data_in_memory: int

    def event_id(self) -> str: ...

    def note_limit(self, kind: str, reply: str, detail: str = "") -> None: ...


log = logging.getLogger("trapline.smtp")

# RFC 5321 §4.2.2 reply codes with RFC 3463 enhanced status codes.
REPLY_RELAY_DENIED = "550 5.7.1 Relaying denied: this server accepts mail only for its own domains"
REPLY_TOO_MANY_RCPT = (
    "452 4.5.3 Too many recipients (limit {n} per message)"  # RFC 5321 §4.5.3.1.10
)
REPLY_RATE = "450 4.7.1 Too many messages from {ip}, slow down (limit {n} per minute)"
REPLY_SPOOL_FAILED = "451 4.3.0 Local error in processing; try again later"
REPLY_REFUSED_CAP = "421 4.7.1 Too many refused recipients, closing"


@dataclass
class SessionTrace:
    """What one connection did, collected as it happens (mutable; turned into a record at the
    end)."""

    session_id: str
    peer_ip: str
    peer_port: int
    started: float  # loop.time() at connect
    started_at: datetime
    banner_at: float | None = None
    commands: list[tuple[str, float]] = field(default_factory=list)
    pipelined: bool = False
    helo: str | None = None
    esmtp: bool = False
    tls: bool = False
    messages: int = 0
    refused_rcpts: int = 0
    end_reason: str = "disconnect"
    mail_from: list[str] = field(default_factory=list)  # every MAIL FROM, accepted or not
    rcpt_to: list[str] = field(default_factory=list)  # every RCPT TO, accepted or not


# --- pure helpers -----------------------------------------------------------------------------

_FQDN = re.compile(r"(?=.{1,253}\Z)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\.?\Z", re.I)


def helo_shape(helo: str | None, peer_ip: str) -> str:
    """Classify a HELO/EHLO argument; bots often send bare IPs, single words or our own name."""
    if not helo:
        return "none"
    text = helo.strip()
    if text.startswith("[") and text.endswith("]"):
        literal = text[1:-1].removeprefix("IPv6:")
        return "ip-literal-peer" if literal == peer_ip else "ip-literal"
    try:
        ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return "bare-ip-peer" if text == peer_ip else "bare-ip"
    if text.lower() in {"localhost", "localhost.localdomain"}:
        return "localhost"
    if "." not in text:
        return "single-label"
    return "fqdn" if _FQDN.match(text) else "malformed"


def _bucket_ms(ms: float | None) -> str:
    if ms is None:
        return "na"
    if ms < 5:
        return "instant"  # no human and no queue runner answers a banner in under 5 ms
    if ms < 500:
        return "fast"
    return "slow" if ms < 5000 else "very-slow"


def _verbs(commands: list[tuple[str, float]]) -> str:
    """Command order with runs collapsed (RCPT,RCPT,RCPT → RCPT+), up to the first QUIT."""
    out: list[str] = []
    for verb, _ in commands:
        if out and out[-1].rstrip("+") == verb:
            out[-1] = verb + "+"
        else:
            out.append(verb)
    return ",".join(out)


def timing(trace: SessionTrace) -> tuple[float | None, float | None]:
    """(banner→first command ms, median gap between commands ms)."""
    times = [t for _, t in trace.commands]
    first = (times[0] - trace.banner_at) * 1000 if times and trace.banner_at is not None else None
    gaps = [(b - a) * 1000 for a, b in itertools.pairwise(times)]
    return first, (statistics.median(gaps) if gaps else None)


def fingerprint(trace: SessionTrace) -> tuple[str, str]:
    """(shape text, 16-hex hash) of a session: what a bot engine's SMTP code looks like.

    Shape, not content: greeting verb, command order, pipelining, TLS, HELO shape and the
    banner-response speed bucket. Two sessions from one spamware build share it across IPs.
    """
    first_ms, _ = timing(trace)
    text = "|".join(
        [
            "v1",
            _verbs(trace.commands),
            f"pipe={int(trace.pipelined)}",
            f"tls={int(trace.tls)}",
            f"helo={helo_shape(trace.helo, trace.peer_ip)}",
            f"first={_bucket_ms(first_ms)}",
        ]
    )
    return text, hashlib.sha256(text.encode()).hexdigest()[:16]


def received_header(
    trace: SessionTrace, hostname: str, rcpt: list[str], when: datetime, n: int
) -> bytes:
    """Our trace line (RFC 5321 §4.4): makes each delivery unique and dates it."""
    proto = ("ESMTP" if trace.esmtp else "SMTP") + ("S" if trace.tls else "")
    helo = (trace.helo or "unknown").replace("\r", "").replace("\n", "")[:255]
    for_part = f"\r\n\tfor <{rcpt[0]}>" if len(rcpt) == 1 else ""
    line = (
        f"Received: from {helo} ([{trace.peer_ip}])\r\n\tby {hostname} (trapline) with {proto} "
        f"id {trace.session_id}.{n}{for_part}; {format_datetime(when)}\r\n"
    )
    return line.encode("utf-8", "surrogateescape")


# --- the handler --------------------------------------------------------------------------------


class TrapHandler:
    """aiosmtpd handler: checks recipients, spools messages durably, records what it refuses."""

    def __init__(self, spool: Spool, trap_domains: list[str], hostname: str) -> None:
        self.spool = spool
        self.trap_domains = [d.lower().rstrip(".") for d in trap_domains]
        self.hostname = hostname

    async def handle_HELO(
        self, server: TrapServer, session: Any, envelope: Any, hostname: str
    ) -> str:
        session.host_name = hostname
        server.trace.helo, server.trace.esmtp = hostname, False
        return f"250 {server.hostname}"

    async def handle_EHLO(
        self, server: TrapServer, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        server.trace.helo, server.trace.esmtp = hostname, True
        # Advertise PIPELINING (RFC 2920): bots pipeline regardless, and after HELO (where it is
        # not offered) doing so is itself a fingerprint.
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_MAIL(
        self, server: TrapServer, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if len(server.trace.mail_from) < 1000:  # bounded: a session may loop forever
            server.trace.mail_from.append(address)
        if not server.state.allow(
            server.trace.peer_ip, server.loop.time(), server.per_ip_per_minute
        ):
            reply = REPLY_RATE.format(ip=server.trace.peer_ip, n=server.per_ip_per_minute)
            server.note_limit("rate", reply, f"MAIL FROM:<{address}>")
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: TrapServer, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if len(server.trace.rcpt_to) < 1000:
            server.trace.rcpt_to.append(address)
        # RFC 5321 §4.5.1: "postmaster" without a domain must be accepted.
        if address.lower() != "postmaster" and not is_trap_domain(address, self.trap_domains):
            server.trace.refused_rcpts += 1
            if server.trace.refused_rcpts > server.max_refused_rcpts:
                # One session once stored 20,011 relay attempts: past the cap, hang up.
                server.note_limit("refused-recipients", REPLY_REFUSED_CAP, f"RCPT TO:<{address}>")
                server.trace.end_reason = "limit"
                return REPLY_REFUSED_CAP
            self.spool.submit(
                SpoolRecord(
                    "relay",
                    {
                        "id": server.event_id(),
                        "session_id": server.trace.session_id,
                        "peer_ip": server.trace.peer_ip,
                        "mail_from": envelope.mail_from,
                        "rcpt_to": address,
                        "domain": address.rpartition("@")[2].lower(),
                        "attempted_at": utcnow().isoformat(),
                    },
                ),
                durable=False,
            )
            log.info("relay attempt from %s to %s refused", server.trace.peer_ip, address)
            return REPLY_RELAY_DENIED
        if len(envelope.rcpt_tos) >= server.max_recipients:
            reply = REPLY_TOO_MANY_RCPT.format(n=server.max_recipients)
            server.note_limit("recipients", reply, f"RCPT TO:<{address}>")
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 Ok"

    def open_message(self, server: TrapServer, envelope: Any) -> IncomingMessage:
        """Where the content DATA is about to bring goes, after its spool record's fields and
        our trace line (dated now, when the message starts to arrive, as MTAs do)."""
        trace = server.trace
        when = datetime.now(UTC)  # zoned: the Received date must say +0000
        fp_text, fp = fingerprint(trace)
        received = received_header(
            trace, server.hostname, envelope.rcpt_tos, when, trace.messages + 1
        )
        fields = {
            "peer_ip": trace.peer_ip,
            "peer_port": trace.peer_port,
            "helo": trace.helo,
            "mail_from": envelope.mail_from,
            "rcpt_to": list(envelope.rcpt_tos),
            "received_at": when.isoformat(),
            "session_id": trace.session_id,
            "session_fingerprint": fp,
            "fingerprint_text": fp_text,
        }
        record = SpoolRecord("message", fields, received)
        return self.spool.open_message(record, server.data_in_memory)

    async def handle_DATA(self, server: TrapServer, session: Any, envelope: Any) -> str:
        incoming = server.incoming
        assert incoming is not None  # the server wrote the content into it
        try:
            await asyncio.wrap_future(incoming.commit())
        except SpoolError as exc:
            log.error("cannot spool message from %s: %s", server.trace.peer_ip, exc)
            return REPLY_SPOOL_FAILED
        # Only now, with the message fsync'd and renamed into new/, do we take responsibility.
        server.trace.messages += 1
        return f"250 2.0.0 Ok: queued as {incoming.digest.hexdigest()[:16]}"
