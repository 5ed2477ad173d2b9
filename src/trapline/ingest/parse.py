"""Raw bytes to a ``Message``: MIME, headers, bodies, URLs, Received chain, defects.

The fast path is ``fast_mail_parser`` (Rust) over a whole batch in one call; any message it
rejects is re-parsed by the stdlib ``email`` package with the ``compat32`` policy, never
``policy.default``, whose address parser goes quadratic on a hostile ``To:`` line. Both paths
fill the same ``Fields`` and share one assembly step, so a record looks the same whichever
parser read it (the ``fallback-parser`` defect says which did).

``parse`` and ``parse_many`` never raise: bytes that are not mail at all become ``Quarantined``
with a short reason; everything else becomes a ``Message`` whose ``defects`` say what was wrong.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import fast_mail_parser as fmp

from trapline.ingest import received as _received
from trapline.ingest.headers import (
    EARLIEST_PLAUSIBLE,
    date_flags,
    decode_8bit,
    decode_rfc2047,
    make_address,
    parse_addresses,
    parse_date_header,
    raw_header,
)
from trapline.ingest.html import render
from trapline.ingest.stdlib_mime import DEFAULT_LIMITS, Fields, ParseLimits, cap, stdlib_fields
from trapline.ingest.urls import collect_urls
from trapline.model import (
    Address,
    Attachment,
    Hop,
    Message,
    Origin,
    Quarantined,
    RawMessage,
    message_id_of,
)

if TYPE_CHECKING:
    from trapline.ingest.received import TrustBoundary

__all__ = ["DEFAULT_LIMITS", "ParseLimits", "parse", "parse_many"]


@dataclass(slots=True, frozen=True)
class _Prepared:
    """Bytes ready for a MIME parser plus the defects found on the way there."""

    payload: bytes
    defects: tuple[str, ...]
    header_end: int  # offset of the blank line after the headers, or -1


# RFC 5322 §2.2: a field name is printable US-ASCII except ":"; "From " postmarks (mbox) and
# ">From " quoting are handled before this test.
_FIRST_HEADER = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
# Bytes that never occur in text; deleting every other byte and counting what is left is the
# fastest way to measure them in CPython.
_NOT_CONTROL = bytes(b for b in range(256) if not (b < 9 or 13 < b < 27 or 27 < b < 32 or b == 127))
# RFC 5322 §2.2: a field starts at a line start with its name; folded lines start with WSP.
_FIELD_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:", re.MULTILINE)
_BOUNDARY = re.compile(r"boundary\s*=", re.IGNORECASE)
_BAD_CHARSET = re.compile(r'charset "([^"]{1,40})"')
_WARNING_DEFECTS = {
    "unterminated-header-block": "missing-header-separator",
    "date-unparseable": None,  # reported through date_flags instead
}


def _header_end(data: bytes, limit: int = -1) -> int:
    """Offset of the blank line that ends the header block (RFC 5322 §2.1), or -1."""
    lf = data.find(b"\n\n", 0, limit if limit > 0 else len(data))
    crlf = data.find(b"\n\r\n", 0, lf if lf != -1 else (limit if limit > 0 else len(data)))
    return crlf if crlf != -1 else lf


def _quarantine(raw: RawMessage, reason: str, detail: str) -> Quarantined:
    return Quarantined(
        id=message_id_of(raw.data),
        size=len(raw.data),
        source=raw.source,
        reason=reason,
        detail=detail,
    )


def _prepare(raw: RawMessage) -> _Prepared | Quarantined:
    """Strip the mbox postmark, reject non-mail, and note byte-level defects."""
    data = raw.data
    defects: list[str] = []
    if data.startswith(b"From "):
        # mbox "From sender date" postmark (RFC 4155): not a header; the id still hashes it.
        cut = data.find(b"\n")
        data = data[cut + 1 :] if cut >= 0 else b""
    stripped = data.lstrip(b"\r\n")
    if len(stripped) != len(data):
        defects.append("leading-blank-lines")
        data = stripped
    if not data.strip():
        return _quarantine(raw, "empty", "no bytes besides whitespace or an mbox postmark")
    end = _header_end(data, 65536)
    # Judge the header block, not the body: a real message may carry any bytes after it.
    head = data[: min(end, 4096)] if end > 0 else data[:4096]
    head_controls = len(head.translate(None, _NOT_CONTROL))
    if head_controls * 10 > len(head) or not _FIRST_HEADER.match(data):
        sample = data[:4096]
        controls = len(sample.translate(None, _NOT_CONTROL))
        if head_controls * 10 > len(head) or controls * 10 > len(sample):
            return _quarantine(
                raw, "binary", f"{controls} of the first {len(sample)} bytes are control characters"
            )
        first = data[:60].split(b"\n", 1)[0].decode("latin-1")
        return _quarantine(
            raw, "no-headers", f"first line is not a 'Name: value' header: {first!r}"
        )
    if b"\x00" in data:
        # NULs are illegal in mail (RFC 5322 §2.1) and break text columns downstream.
        defects.append("nul-bytes")
        data = data.replace(b"\x00", b"")
    end = _header_end(data)
    block = data[:end] if end != -1 else data
    # RFC 5322 §2.1.1: a line is at most 998 characters before CRLF.
    if len(block) > 998 and max(map(len, block.split(b"\n"))) > 999:
        defects.append("header-line-too-long")
    return _Prepared(payload=data, defects=tuple(defects), header_end=end)


def _addresses(
    parsed: Sequence[fmp.PyAddress], raw_values: list[str] | None, limit: int, defects: list[str]
) -> tuple[Address, ...]:
    """Addresses from the fast parser; the stdlib's lenient parser when it found none."""
    if parsed:
        if len(parsed) > limit:
            defects.append("too-many-recipients")
        return tuple(make_address(a.display_name, a.address) for a in parsed[:limit])
    if not raw_values:
        return ()
    found, truncated = parse_addresses(raw_values, limit)
    if truncated:
        defects.append("too-many-recipients")
    return found


def _redecode(payload: bytes, name: str, limits: ParseLimits, defects: list[str]) -> str | None:
    """Header ``name`` re-read from raw bytes when they are 8-bit and not UTF-8, else ``None``.

    The fast parser reads such bytes as Latin-1, which turns a GB2312 or Big5 subject (2002-era
    spam wrote them raw, against RFC 5322 §2.2) into mojibake; the body's charset is the better
    guess.
    """
    raw = raw_header(payload, name)
    if raw is None or raw.isascii():
        return None
    raw = raw[: limits.max_header_value * 4]
    try:
        raw.decode("utf-8")
        return None  # valid UTF-8 (RFC 6532): the fast parser read it right
    except UnicodeDecodeError:
        pass
    text, defect = decode_8bit(raw, payload)
    if defect and defect not in defects:
        defects.append(defect)
    return decode_rfc2047(text, defects)[: limits.max_header_value]


def _fix_8bit_headers(out: Fields, payload: bytes, limits: ParseLimits) -> None:
    """Re-decode Subject and From display name when they came from raw legacy-charset bytes."""
    fixed: dict[str, str] = {}
    if out.subject and not out.subject.isascii():
        subject = _redecode(payload, "Subject", limits, out.defects)
        if subject is not None:
            out.subject = fixed["subject"] = subject
    if out.from_.name and not out.from_.name.isascii():
        value = _redecode(payload, "From", limits, out.defects)
        if value is not None:
            found, _ = parse_addresses([value], 1)
            if found:
                out.from_ = found[0]
            fixed["from"] = value
    if fixed:
        out.headers = [(name, fixed.pop(name.lower(), value)) for name, value in out.headers]


def _wire_order(grouped: dict[str, list[str]], block: bytes) -> list[tuple[str, str]]:
    """(name, value) pairs in the order the fields appear in the raw header block.

    The fast parser groups values by name; the names' order in the raw block puts them back,
    so a Received between two X- headers stays between them. Fields the raw scan did not see
    (a malformed line the parser still read) are appended in the parser's order.
    """
    queues = {name: iter(values) for name, values in grouped.items()}
    pairs: list[tuple[str, str]] = []
    for raw_name in _FIELD_NAME.findall(block):
        queue = queues.get(raw_name.decode("latin-1"))
        if queue is not None:
            value = next(queue, None)
            if value is not None:
                pairs.append((raw_name.decode("latin-1"), value))
    for name, queue in queues.items():
        pairs.extend((name, value) for value in queue)
    return pairs


def _fast_fields(mail: fmp.PyMail, prep: _Prepared, limits: ParseLimits) -> Fields:
    """Fill ``Fields`` from a ``fast_mail_parser`` result."""
    payload = prep.payload
    out = Fields()
    defects = out.defects
    by_name: dict[str, list[str]] = {}
    max_value = limits.max_header_value
    grouped = mail.headers
    for name, values in grouped.items():
        key = name.lower()
        if key in by_name:  # same name in another case ("received" vs "Received")
            by_name[key] = by_name[key] + values
        else:
            by_name[key] = values  # read-only use below, so no copy
    block = payload[: prep.header_end] if prep.header_end != -1 else payload
    out.headers = headers = _wire_order(grouped, block)
    if len(headers) > limits.max_headers:
        del headers[limits.max_headers :]
        defects.append("too-many-headers")
    if any(len(value) > max_value for _, value in headers):
        out.headers = headers = [(n, cap(v, max_value, defects)) for n, v in headers]
    out.received = by_name.get("received", [])
    if "message-id" in by_name:
        out.message_id = by_name["message-id"][0].strip()[:998] or None
    if "subject" in by_name:
        out.subject = cap(mail.subject, limits.max_header_value, defects)
    from_values = by_name.get("from")
    if mail.from_ is not None:
        out.from_ = make_address(mail.from_.display_name, mail.from_.address)
    elif from_values:
        found, _ = parse_addresses([from_values[0][: limits.max_header_value]], 1)
        if found:
            out.from_ = found[0]
        defects.append("bad-from")
    else:
        defects.append("no-from")
    out.to = _addresses(mail.to, by_name.get("to"), limits.max_recipients, defects)
    out.cc = _addresses(mail.cc, by_name.get("cc"), limits.max_recipients, defects)
    date_values = by_name.get("date")
    out.date_present = bool(date_values and date_values[0].strip())
    if out.date_present:
        out.date = mail.date_parsed or parse_date_header(date_values[0] if date_values else None)
    ctype = by_name.get("content-type")
    if (
        ctype
        and ctype[0].lstrip().lower().startswith("multipart/")
        and not _BOUNDARY.search(ctype[0])
    ):
        defects.append("missing-boundary")
    out.plain = list(mail.text_plain)
    out.html = list(mail.text_html)
    attachments = mail.attachments
    if len(attachments) > limits.max_attachments:
        defects.append("too-many-attachments")
    for part in attachments[: limits.max_attachments]:
        content = part.content
        out.attachments.append(
            Attachment(
                filename=part.filename or None,
                content_type=(part.mimetype or "application/octet-stream").lower(),
                size=len(content),
                sha256=hashlib.sha256(content).hexdigest(),
            )
        )
    for warning in mail.warnings:
        kind = warning.kind
        if kind == "charset-fallback":
            match = _BAD_CHARSET.search(warning.detail)
            defects.append(f"bad-charset:{match.group(1).lower() if match else 'unknown'}")
            continue
        code = _WARNING_DEFECTS.get(kind, kind)
        if code and code not in defects:
            defects.append(code)
    _fix_8bit_headers(out, payload, limits)
    return out


def _route(
    values: list[str], trust: TrustBoundary | None, date: datetime | None, raw: RawMessage
) -> tuple[tuple[Hop, ...], Origin | None]:
    """Received chain and origin, via ``trapline.ingest.received``."""
    hops = _received.parse_chain(values)
    origin = _received.find_origin(
        hops,
        trust if trust is not None else _received.DEFAULT_TRUST,
        date=date,
        envelope=raw.envelope,
    )
    return origin[0], origin[1]


def _assemble(
    raw: RawMessage,
    fields: Fields,
    prep_defects: tuple[str, ...],
    trust: TrustBoundary | None,
    now: datetime,
    limits: ParseLimits,
) -> Message:
    """The shared tail of both parser paths: bodies, URLs, hops, dates, caps."""
    defects = list(prep_defects)
    defects.extend(d for d in fields.defects if d not in defects)
    text = "\n".join(p for p in fields.plain if p)
    html = "\n".join(h for h in fields.html if h) or None
    # Transfer decoding (base64 "AAAA", QP "=00") can produce NULs the byte-level pass never saw.
    if "\x00" in text:
        text = text.replace("\x00", "")
    if html and "\x00" in html:
        html = html.replace("\x00", "")
    if any("\x00" in value for _, value in fields.headers):  # from RFC 2047 "=00" and kin
        fields.headers = [(n, v.replace("\x00", "")) for n, v in fields.headers]
        if fields.subject:
            fields.subject = fields.subject.replace("\x00", "")
        if fields.from_.name:
            fields.from_ = make_address(fields.from_.name.replace("\x00", ""), fields.from_.addr)
    links: tuple[tuple[str, str], ...] = ()
    rendered_text = ""
    if html:
        # With a plain-text alternative only the links are needed; rendering is the costly part.
        need_text = not text.strip()
        rendered = render(html, max_chars=limits.max_html_render, text=need_text)
        links, rendered_text = rendered.links, rendered.text
        if rendered.truncated:
            defects.append("html-truncated")
        if need_text:
            text = rendered_text
    if len(text) > limits.max_body_chars:
        text = text[: limits.max_body_chars]
        defects.append("text-truncated")
    if html and len(html) > limits.max_body_chars:
        html = html[: limits.max_body_chars]
    texts = [text] if not rendered_text or rendered_text == text else [text, rendered_text]
    urls, truncated = collect_urls(texts, links, limit=limits.max_urls)
    if truncated:
        defects.append("too-many-urls")
    # A forged Date (year 0102, or ahead of our clock) must not stand in for the received time.
    usable_date = fields.date
    if usable_date is not None and (usable_date < EARLIEST_PLAUSIBLE or usable_date > now):
        usable_date = None
    try:
        hops, origin = _route(fields.received, trust, usable_date, raw)
    except Exception:  # the chain parser is best effort; a bug there must not lose the message
        hops, origin = (), None
        defects.append("received-parse-failed")
    received_at = origin.received_at if origin else None
    source = origin.received_at_source if origin else "none"
    if received_at is None and origin is None and usable_date is not None:
        received_at, source = usable_date, "date"
    hop_time = received_at if source in ("received", "trap") else None
    if not fields.date_present:
        defects.append("no-date")
    return Message(
        id=message_id_of(raw.data),
        size=len(raw.data),
        source=raw.source,
        received_at=received_at,
        received_at_source=source,
        date=fields.date,
        date_flags=date_flags(fields.date, fields.date_present, hop_time, now),
        message_id=fields.message_id,
        subject=fields.subject.strip() if fields.subject is not None else None,
        from_=fields.from_,
        to=fields.to,
        cc=fields.cc,
        hops=hops,
        origin_ip=origin.ip if origin else None,
        origin_hop=origin.hop_index if origin else None,
        text=text,
        html=html,
        urls=urls,
        attachments=tuple(fields.attachments),
        defects=tuple(defects),
        headers=tuple(fields.headers),
        envelope=raw.envelope,
    )


def _parse_one(
    raw: RawMessage,
    prep: _Prepared,
    mail: fmp.PyMail | Exception | None,
    trust: TrustBoundary | None,
    now: datetime,
    limits: ParseLimits,
) -> Message | Quarantined:
    """One message from a fast-parser outcome, falling back to the stdlib on any failure.

    A fast parse that had to replace body bytes with U+FFFD is redone by the stdlib path too:
    Python's codecs cover charsets the fast parser lacks (ISO-2022-JP), and its fallback to
    UTF-8/cp1252 keeps unknown-charset text readable.
    """
    lossy = isinstance(mail, fmp.PyMail) and (
        any(w.kind == "charset-fallback" for w in mail.warnings)
        # Some charsets (ISO-2022-JP) are decoded lossily without a warning; U+FFFD tells.
        or any("\ufffd" in part for part in mail.text_plain)
        or any("\ufffd" in part for part in mail.text_html)
    )
    if isinstance(mail, fmp.PyMail) and not lossy:
        try:
            fields = _fast_fields(mail, prep, limits)
            return _assemble(raw, fields, prep.defects, trust, now, limits)
        except Exception as exc:  # fall through to the stdlib path below
            mail = exc
    reason = type(mail).__name__
    try:
        fields = stdlib_fields(prep.payload, limits)
        fields.defects.insert(0, "fallback-parser")
        return _assemble(raw, fields, prep.defects, trust, now, limits)
    except Exception as exc:  # the stdlib failed too
        if isinstance(mail, fmp.PyMail):  # a lossy fast parse still beats nothing
            try:
                fields = _fast_fields(mail, prep, limits)
                return _assemble(raw, fields, prep.defects, trust, now, limits)
            except Exception:  # reported below
                pass
        detail = f"fast parser: {reason}; stdlib: {type(exc).__name__}: {exc}"
        return _quarantine(raw, "parser-error", detail[:500])


def parse_many(
    raws: Sequence[RawMessage],
    *,
    trust: TrustBoundary | None = None,
    now: datetime | None = None,
    limits: ParseLimits = DEFAULT_LIMITS,
    threads: int | None = 1,
) -> list[Message | Quarantined]:
    """Parse a batch, in input order; the form worker processes use. Never raises.

    ``threads`` is the fast parser's thread count: 1 by default because ingest already runs
    one worker process per core. ``now`` anchors the "far-future" date flag (default: now).
    """
    now = now or datetime.now(UTC)
    prepared: list[_Prepared | Quarantined] = [_prepare(raw) for raw in raws]
    payloads: list[str | bytes] = [p.payload for p in prepared if isinstance(p, _Prepared)]
    outcomes: list[fmp.PyMail | Exception | None]
    try:
        outcomes = list(fmp.parse_many(payloads, threads=threads))
    except Exception:  # a batch-level failure: parse one by one on the fallback path
        outcomes = [None] * len(payloads)
    results: list[Message | Quarantined] = []
    it = iter(outcomes)
    for raw, prep in zip(raws, prepared, strict=True):
        if isinstance(prep, Quarantined):
            results.append(prep)
        else:
            results.append(_parse_one(raw, prep, next(it), trust, now, limits))
    return results


def parse(
    raw: RawMessage,
    *,
    trust: TrustBoundary | None = None,
    now: datetime | None = None,
    limits: ParseLimits = DEFAULT_LIMITS,
) -> Message | Quarantined:
    """Parse one message. Never raises: non-mail bytes come back ``Quarantined``."""
    try:
        return parse_many([raw], trust=trust, now=now, limits=limits)[0]
    except Exception as exc:  # last line of defence: the contract is "never raises"
        return _quarantine(raw, "parser-error", f"{type(exc).__name__}: {exc}"[:500])
