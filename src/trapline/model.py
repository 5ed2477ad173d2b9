"""Typed records that flow through the pipeline.

Every stage takes and returns these frozen records, so the same stage functions run in-process,
in a process pool and inside Spark's ``mapPartitions``. Stdlib only: this module is imported by
every layer and must stay cheap to import and to pickle.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal


def message_id_of(data: bytes) -> str:
    """A message's id: the lowercase hex SHA-256 of its raw bytes (content address)."""
    return hashlib.sha256(data).hexdigest()


def utcnow() -> datetime:
    """Now in UTC without a zone: the store keeps every TIMESTAMP in UTC, naive."""
    return datetime.now(UTC).replace(tzinfo=None)


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(value: str) -> str:
    """Valid UTF-8 text: lone surrogates become U+FFFD; NULs (legal in mail, fatal to tools) go.

    The form every string takes in the store; code that must agree with stored values (the
    fingerprints made at parse time) applies it too.
    """
    if value.isascii():  # no surrogates possible: skip the regex scan (most mail)
        return value.replace("\x00", "")
    return _SURROGATE.sub("\ufffd", value).replace("\x00", "")


@dataclass(slots=True, frozen=True)
class Envelope:
    """What an SMTP session told us about a message; ground truth that headers cannot forge."""

    peer_ip: str
    peer_port: int = 0
    helo: str | None = None
    mail_from: str | None = None
    rcpt_to: tuple[str, ...] = ()
    received_at: datetime | None = None  # UTC, when the trap answered 250
    session_id: str | None = None
    session_fingerprint: str | None = None


@dataclass(slots=True, frozen=True)
class RawMessage:
    """One message's exact bytes and where they came from (``path``, ``path#12`` for mbox item 12)."""

    data: bytes
    source: str
    envelope: Envelope | None = None
    defects: tuple[str, ...] = ()  # found by the reader (say, doubtful mbox bounds)

    @property
    def id(self) -> str:
        return message_id_of(self.data)


@dataclass(slots=True, frozen=True)
class SourceProblem:
    """A source that yielded no message bytes (unreadable file, broken archive): logged, counted."""

    source: str
    reason: str  # short machine-readable code, e.g. "unreadable", "truncated-archive"
    detail: str = ""


@dataclass(slots=True, frozen=True)
class Hop:
    """One parsed ``Received:`` header. ``index`` 0 is the top (most recent) header."""

    index: int
    raw: str
    from_helo: str | None = None  # name the client gave in HELO/EHLO
    from_rdns: str | None = None  # reverse-DNS name the receiver looked up
    from_ip: str | None = None  # connecting IP (v4 or v6, normalised text form)
    by_host: str | None = None
    protocol: str | None = None  # SMTP, ESMTP, ESMTPS, POP3, IMAP, HTTP, local, ...
    smtp_id: str | None = None
    for_addr: str | None = None
    timestamp: datetime | None = None  # UTC
    trusted: bool = False  # inside the trust boundary (set by the origin walk)


@dataclass(slots=True, frozen=True)
class Origin:
    """Result of walking the Received chain: who handed the message to the trusted boundary."""

    ip: str | None
    hop_index: int | None  # index of the hop whose from_ip is the origin
    received_at: datetime | None  # UTC; top trusted hop's time, else Date header
    received_at_source: Literal["trap", "received", "date", "none"] = "none"


@dataclass(slots=True, frozen=True)
class Url:
    url: str  # as found (obfuscated forms kept as-is)
    host: str | None
    registered_domain: str | None  # via the offline Public Suffix List
    # Where it was found: plain text, the rendered text of an HTML part, or an HTML attribute.
    source: Literal[
        "text", "html-text", "href", "src", "action", "background", "refresh", "base"
    ] = "text"
    obfuscated: bool = False  # hxxp://, [.] and similar defanging
    # Which part: "plain.N" / "html.N" (Nth body part of that kind), "attachment.N" (Nth
    # attachment), nested with "/" for parts of an embedded message ("attachment.2/html.1").
    part: str = ""


@dataclass(slots=True, frozen=True)
class Attachment:
    filename: str | None
    content_type: str
    size: int
    sha256: str


@dataclass(slots=True, frozen=True)
class Address:
    name: str | None
    addr: str | None
    domain: str | None


@dataclass(slots=True, frozen=True)
class Message:
    """A parsed message. Derived entirely from ``RawMessage`` (plus read-only context)."""

    id: str
    size: int
    source: str
    received_at: datetime | None  # UTC
    received_at_source: str
    date: datetime | None  # the Date header, parsed, UTC
    date_flags: tuple[str, ...]  # e.g. "unparseable", "far-future", "before-1990", "skewed"
    message_id: str | None
    subject: str | None
    from_: Address
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    hops: tuple[Hop, ...]
    origin_ip: str | None
    origin_hop: int | None
    text: str  # plain text body, or HTML rendered to text when there is no plain part
    html: str | None
    urls: tuple[Url, ...]
    attachments: tuple[Attachment, ...]
    defects: tuple[str, ...]  # parse problems that did not stop parsing
    headers: tuple[tuple[str, str], ...] = ()  # decoded (name, value) pairs, order kept
    envelope: Envelope | None = None
    # Filled by later stages (enrich, fingerprint); None until then.
    origin_asn: int | None = None
    origin_prefix: str | None = None
    routing_snapshot: str | None = None
    extra: dict[str, object] = field(default_factory=dict, compare=False, hash=False)


@dataclass(slots=True, frozen=True)
class Quarantined:
    """A message whose bytes are archived but that could not be parsed into a ``Message``."""

    id: str
    size: int
    source: str
    reason: str  # short code: "empty", "binary", "no-headers", "parser-error", ...
    detail: str = ""
