"""Raw bytes to a ``Message``: MIME, headers, bodies, URLs, Received chain, defects.

The fast path is ``fast_mail_parser`` (Rust) over a whole batch in one call; any message it
rejects is re-parsed by the stdlib ``email`` package with the ``compat32`` policy, never
``policy.default``, whose address parser goes quadratic on a hostile ``To:`` line. Both paths
fill the same ``Fields`` and share one assembly step, so a record looks the same whichever
parser read it (the ``fallback-parser`` defect says which did).

``parse`` and ``parse_many`` never raise: bytes that are not mail at all become ``Quarantined``
with a short reason; everything else becomes a ``Message`` whose ``defects`` say what was wrong.

Quarantine reasons: ``empty``, ``binary`` (control and 8-bit bytes like random data), ``no-headers``
(first line is not ``Name: value``), ``parser-error`` (both parsers failed; a bug to report).

Defect codes (stable; analysis filters on them):

- bytes: ``nul-bytes``, ``leading-blank-lines``, ``header-line-too-long`` (RFC 5322 §2.1.1)
- structure: ``fallback-parser`` (the stdlib read it), ``lazy-parser`` (a large message the
  fast parser rejected, re-read part by part), ``bodies-skipped`` (a large message neither
  fast mode could read: headers only), ``undecodable-attachment``, ``missing-boundary``,
  ``missing-header-separator``, ``parts-after-close-delimiter``, ``bad-part``,
  ``bad-base64``, ``transfer-decode-lossy``
- text: ``bad-charset:<label>``, ``undeclared-8bit``, ``raw-8bit-header``,
  ``bad-encoded-word:<error>``
- fields: ``no-from``, ``bad-from``, ``address-unparseable``, ``no-date`` (see also
  ``date_flags``: ``missing``, ``unparseable``, ``far-future``, ``before-1990``, ``skewed``)
- caps hit (see ``ParseLimits``): ``too-many-headers``, ``header-value-truncated``,
  ``too-many-recipients``, ``too-many-attachments``, ``too-many-parts``, ``too-deep``,
  ``too-many-urls``,
  ``html-truncated``, ``html-too-deep`` (read with regexes, not a DOM), ``text-truncated``
- ``received-parse-failed``: the Received-chain parser failed; hops are empty
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import fast_mail_parser as fmp

from trapline.ingest import received as _received
from trapline.ingest.fast_mime import fast_fields, looks_misdecoded
from trapline.ingest.fields import DEFAULT_LIMITS, Fields, ParseLimits
from trapline.ingest.headers import (
    EARLIEST_PLAUSIBLE,
    date_flags,
    make_address,
)
from trapline.ingest.html import render
from trapline.ingest.stdlib_mime import stdlib_fields
from trapline.ingest.urls import collect_urls
from trapline.model import (
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
    id: str  # message_id_of the raw bytes (postmark included)


# RFC 5322 §2.2: a field name is printable US-ASCII except ":"; "From " postmarks (mbox) and
# ">From " quoting are handled before this test.
_FIRST_HEADER = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
# Bytes of plain ASCII text (tab..CR, ESC for ISO-2022, printable). Deleting them (and the
# 8-bit bytes) and counting what is left is the fastest way to measure the rest in CPython.
# A whole first line "Name: printable value" ending in a newline: random bytes essentially never
# produce one, so such data is mail however short and garbled the rest (a NUL and a few 8-bit
# bytes after "Subject: s" would otherwise tip the ratio test below).
_ASCII_HEADER_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:[\t\x20-\x7e]*\r?\n")
# A header line of 1000+ bytes (CR included, as the split-and-measure test it replaces counted):
# the first line by ``match``, the others after a literal newline, so the regex engine jumps from
# newline to newline instead of trying 1000 bytes from every position (~12x cheaper).
_LONG_LINE = re.compile(rb"[^\n]{1000}")
_LONG_LATER_LINE = re.compile(rb"\n[^\n]{1000}")
_TEXT_BYTES = bytes([*range(9, 14), 27, *range(32, 127)])
_TEXT_OR_8BIT = _TEXT_BYTES + bytes(range(128, 256))


def _looks_binary(sample: bytes, header_first: bool) -> bool:
    """Random or binary bytes rather than mail (legacy 8-bit text is not binary)."""
    if not sample:
        return False
    controls = len(sample.translate(None, _TEXT_OR_8BIT))
    high = len(sample.translate(None, _TEXT_BYTES)) - controls
    if header_first:
        # Random bytes are ~10% control and ~50% 8-bit; a header block is neither at once (a
        # raw GB2312 Subject makes a tiny one mostly 8-bit, stray NULs make it control-heavy).
        return controls * 20 > len(sample) and high * 10 > len(sample) * 3
    return controls * 20 > len(sample)


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


def _prepare(raw: RawMessage, mid: str | None = None) -> _Prepared | Quarantined:
    """Strip the mbox postmark, reject non-mail, and note byte-level defects.

    ``mid`` is the message's id when the caller has hashed it already.
    """
    data = raw.data
    defects: list[str] = list(raw.defects)
    if data.startswith(b"From "):
        # mbox "From sender date" postmark (RFC 4155): not a header; the id still hashes it.
        cut = data.find(b"\n")
        data = data[cut + 1 :] if cut >= 0 else b""
    stripped = data.lstrip(b"\r\n")
    if len(stripped) != len(data):
        defects.append("leading-blank-lines")
        data = stripped
    if not data or data.isspace():  # same test as "not data.strip()", without the copy
        return _quarantine(raw, "empty", "no bytes besides whitespace or an mbox postmark")
    end = _header_end(data, 65536)
    # Judge the header block, not the body: a real message may carry any bytes after it.
    head = data[: min(end, 4096)] if end > 0 else data[:4096]
    header_first = _FIRST_HEADER.match(data) is not None
    plain_first = header_first and _ASCII_HEADER_LINE.match(data) is not None
    if not plain_first and _looks_binary(head, header_first):
        return _quarantine(raw, "binary", f"the first {len(head)} bytes are not text")
    if not header_first:
        first = data[:60].split(b"\n", 1)[0].decode("latin-1")
        return _quarantine(
            raw, "no-headers", f"first line is not a 'Name: value' header: {first!r}"
        )
    if b"\x00" in data:
        # NULs are illegal in mail (RFC 5322 §2.1) and break text columns downstream.
        defects.append("nul-bytes")
        data = data.replace(b"\x00", b"")
        end = _header_end(data)
    elif end == -1:
        # A blank line found inside the first 64 KiB is the first one anywhere: only a
        # miss there needs the whole search.
        end = _header_end(data)
    block = data[:end] if end != -1 else data
    # RFC 5322 §2.1.1: a line is at most 998 characters before CRLF.
    if len(block) > 998 and (_LONG_LINE.match(block) or _LONG_LATER_LINE.search(block)):
        defects.append("header-line-too-long")
    return _Prepared(data, tuple(defects), end, mid or message_id_of(raw.data))


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
    prep: _Prepared,
    trust: TrustBoundary | None,
    now: datetime,
    limits: ParseLimits,
) -> Message:
    """The shared tail of both parser paths: bodies, URLs, hops, dates, caps."""
    defects = list(prep.defects)
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
    found: list[tuple[str, str, str]] = []  # (URL source, MIME part, value) in reading order
    html_texts: list[tuple[str, str, str]] = []
    if html:
        # The rendered text counts even beside a text/plain alternative: spam shows one URL as
        # link text and sends the reader to another in the href; both are evidence.
        rendered = render(html, max_chars=limits.max_html_render)
        if rendered.truncated:
            defects.append("html-truncated")
        if rendered.shallow:
            defects.append("html-too-deep")
        if not text.strip():
            text = rendered.text
        parts = [h for h in fields.html if h]
        if len(parts) > 1:  # one rendering per part, so each URL names its own part
            for i, part in enumerate(parts, start=1):
                one = render(part, max_chars=limits.max_html_render)
                found.extend((source, f"html.{i}", url) for source, url in one.links)
                html_texts.append(("html-text", f"html.{i}", one.text))
        else:
            found.extend((source, "html.1", url) for source, url in rendered.links)
            html_texts.append(("html-text", "html.1", rendered.text))
    plain = [p for p in fields.plain if p]
    found.extend(("text", f"plain.{i}", part) for i, part in enumerate(plain, start=1))
    found.extend(html_texts)
    for part, kind, value in fields.extra.items:
        if kind == "plain":
            found.append(("text", part, value))
            continue
        inner = render(value, max_chars=limits.max_html_render)
        found.extend((source, part, url) for source, url in inner.links)
        found.append(("html-text", part, inner.text))
    if len(text) > limits.max_body_chars:
        text = text[: limits.max_body_chars]
        defects.append("text-truncated")
    if html and len(html) > limits.max_body_chars:
        html = html[: limits.max_body_chars]
    urls, truncated = collect_urls(found, limit=limits.max_urls)
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
        id=prep.id,
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
    """One message from a fast-parser outcome, falling back on any failure.

    Small messages the fast parser rejects go to the stdlib; large ones to the fast parser's
    lazy mode, then to a headers-only stdlib read. A small fast parse that had to replace body
    bytes with U+FFFD is redone by the stdlib too: Python's codecs cover charsets the fast
    parser lacks (ISO-2022-JP), and its UTF-8/cp1252 fallback keeps unknown charsets readable.
    """
    # The stdlib's feed parser tests every line against every open boundary: on a large
    # payload nested near the fast parser's depth cap it would take seconds. Large payloads
    # therefore never get a stdlib body walk.
    small = len(prep.payload) <= limits.max_stdlib_bytes
    bodies: tuple[list[str], list[str]] | None = None
    if isinstance(mail, fmp.PyMail):
        # Each read of text_plain/text_html converts the bodies from Rust again: read them once.
        bodies = (mail.text_plain, mail.text_html)
    lossy = (
        small
        and bodies is not None
        and isinstance(mail, fmp.PyMail)
        and (
            any(w.kind == "charset-fallback" for w in mail.warnings)
            # Some charsets (ISO-2022-JP) are decoded lossily without a warning; U+FFFD tells.
            or any("\ufffd" in part for part in bodies[0])
            or any("\ufffd" in part for part in bodies[1])
            or any(looks_misdecoded(part) for part in bodies[1])
        )
    )
    if isinstance(mail, fmp.PyMail) and not lossy:
        try:
            fields = fast_fields(mail, prep.payload, prep.header_end, limits, bodies)
            return _assemble(raw, fields, prep, trust, now, limits)
        except Exception as exc:  # fall through to the other paths below
            mail = exc
    reason = type(mail).__name__
    if not small:
        # Lazy mode decodes attachments one by one, so one broken part costs only itself.
        try:
            lazy = fmp.parse_email(prep.payload, mode="lazy")
            fields = fast_fields(lazy, prep.payload, prep.header_end, limits)
            fields.defects.insert(0, "lazy-parser")
            return _assemble(raw, fields, prep, trust, now, limits)
        except Exception:  # headers only, below
            pass
    try:
        fields = stdlib_fields(prep.payload, limits, bodies=small)
        fields.defects.insert(0, "fallback-parser")
        return _assemble(raw, fields, prep, trust, now, limits)
    except Exception as exc:  # the stdlib failed too
        if isinstance(mail, fmp.PyMail):  # a lossy fast parse still beats nothing
            try:
                fields = fast_fields(mail, prep.payload, prep.header_end, limits, bodies)
                return _assemble(raw, fields, prep, trust, now, limits)
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
    ids: Sequence[str] | None = None,
) -> list[Message | Quarantined]:
    """Parse a batch, in input order; the form worker processes use. Never raises.

    ``threads`` is the fast parser's thread count: 1 by default because ingest already runs
    one worker process per core. ``now`` anchors the "far-future" date flag (default: now).
    ``ids``, when given, are the messages' ids (``message_id_of(raw.data)``, in order): the
    ingest pipeline hashes every message for deduplication already, so workers need not again.
    """
    now = now or datetime.now(UTC)
    if ids is not None and len(ids) != len(raws):
        ids = None  # not the caller's ids for these messages: hash them here instead
    results: list[Message | Quarantined] = []
    for start, stop in _chunks(raws, limits.max_chunk_bytes):
        chunk_ids = ids[start:stop] if ids is not None else None
        results.extend(_parse_chunk(raws[start:stop], chunk_ids, trust, now, limits, threads))
    return results


def _chunks(raws: Sequence[RawMessage], budget: int) -> Iterator[tuple[int, int]]:
    """Consecutive runs of messages whose bytes add up to at most ``budget`` (at least one).

    The fast parser materialises a whole call's results, decoded attachments included, so a
    batch of large messages is fed to it in slices: peak memory follows the budget, not the
    batch.
    """
    start = size = 0
    for index, raw in enumerate(raws):
        size += len(raw.data)
        if size > budget and index > start:
            yield start, index
            start, size = index, len(raw.data)
    if start < len(raws):
        yield start, len(raws)


def _parse_chunk(
    raws: Sequence[RawMessage],
    ids: Sequence[str] | None,
    trust: TrustBoundary | None,
    now: datetime,
    limits: ParseLimits,
    threads: int | None,
) -> list[Message | Quarantined]:
    if ids is None:
        prepared = [_safe_prepare(raw) for raw in raws]
    else:
        prepared = [_safe_prepare(raw, mid) for raw, mid in zip(raws, ids, strict=True)]
    payloads: list[str | bytes] = [p.payload for p in prepared if isinstance(p, _Prepared)]
    outcomes: list[fmp.PyMail | Exception | None]
    try:
        outcomes = list(fmp.parse_many(payloads, threads=threads))
    except Exception:  # a batch-level failure: one by one, so one bad input costs only itself
        outcomes = [_parse_alone(payload) for payload in payloads]
    results: list[Message | Quarantined] = []
    it = iter(outcomes)
    for raw, prep in zip(raws, prepared, strict=True):
        if isinstance(prep, Quarantined):
            results.append(prep)
            continue
        try:
            results.append(_parse_one(raw, prep, next(it), trust, now, limits))
        except Exception as exc:  # the contract is "never raises", per message too
            results.append(_quarantine(raw, "parser-error", f"{type(exc).__name__}: {exc}"[:500]))
    return results


def _safe_prepare(raw: RawMessage, mid: str | None = None) -> _Prepared | Quarantined:
    try:
        return _prepare(raw, mid)
    except Exception as exc:  # e.g. data that is not bytes at all
        data = bytes(raw.data) if isinstance(raw.data, bytes | bytearray | memoryview) else b""
        return Quarantined(
            id=message_id_of(data),
            size=len(data),
            source=str(raw.source),
            reason="parser-error",
            detail=f"{type(exc).__name__}: {exc}"[:500],
        )


def _parse_alone(payload: str | bytes) -> fmp.PyMail | Exception:
    try:
        return fmp.parse_email(payload)
    except Exception as exc:  # becomes the stdlib path's input, as in a batch
        return exc


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
