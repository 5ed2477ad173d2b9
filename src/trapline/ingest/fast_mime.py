"""The fast MIME path: ``fast_mail_parser`` results turned into ``Fields``.

The Rust parser does the MIME work; this module fixes what its flat projection loses or gets
wrong for old spam: header order (it groups values by name), raw 8-bit legacy-charset headers
(it reads them as Latin-1), and address lists it cannot parse (the stdlib's lenient parser
gets a second look).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence

import fast_mail_parser as fmp

from trapline.ingest.embedded import ExtraTexts
from trapline.ingest.fields import DEFAULT_LIMITS, Fields, ParseLimits, cap
from trapline.ingest.headers import (
    decode_8bit,
    decode_rfc2047,
    make_address,
    parse_addresses,
    parse_date_header,
    raw_header,
)
from trapline.model import Address, Attachment

# RFC 5322 §2.2: a field starts at a line start with its name; folded lines start with WSP.
# Anchored on a literal "\n" rather than "^" with MULTILINE: the regex engine then skips to
# each newline instead of trying every position.
_FIELD_NAME = re.compile(r"\n([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_BOUNDARY = re.compile(r"""boundary\s*=\s*(?:"([^"]{1,200})"|([^\s;"]{1,200}))""", re.IGNORECASE)
_BAD_CHARSET = re.compile(r'charset "([^"]{1,40})"')
_WARNING_DEFECTS = {
    "unterminated-header-block": "missing-header-separator",
    "date-unparseable": None,  # reported through date_flags instead
}


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
    if all(len(values) == 1 for values in grouped.values()):
        # One value per name: first-appearance order is already the wire order.
        return [(name, values[0]) for name, values in grouped.items()]
    # How many of each name's values are placed; one C-level dict, no iterator per name.
    used = dict.fromkeys(grouped, 0)
    pairs: list[tuple[str, str]] = []
    append = pairs.append
    for name in _FIELD_NAME.findall("\n" + block.decode("latin-1")):
        i = used.get(name)
        if i is not None:
            values = grouped[name]
            if i < len(values):
                append((name, values[i]))
                used[name] = i + 1
    for name, values in grouped.items():
        i = used[name]
        if i < len(values):
            pairs.extend((name, value) for value in values[i:])
    return pairs


_META_CHARSET = re.compile(r"""<meta[^>]{0,200}?charset\s*=\s*["']?([A-Za-z0-9_.:-]{1,40})""", re.I)
_BEYOND_LATIN1 = re.compile(r"[^\x00-\xff]")
_LATIN = {"iso-8859-1", "iso8859-1", "latin1", "latin-1", "windows-1252", "cp1252", "us-ascii"}


def looks_misdecoded(html: str) -> bool:
    """True when an HTML body was read as Latin-1 although its ``<meta>`` names another charset.

    The fast parser reads a part without a MIME charset as Latin-1; 2002-era Korean and Chinese
    spam declared its charset only in ``<meta>``. Every character below U+0100 with a non-Latin
    meta charset is the mojibake signature.
    """
    if html.isascii() or _BEYOND_LATIN1.search(html):  # (max(html) >= U+0100, in C)
        return False
    meta = _META_CHARSET.search(html, 0, 4096)
    return meta is not None and meta.group(1).lower() not in _LATIN


def _salvage_after_close(payload: bytes, boundary: bytes, out: Fields, limits: ParseLimits) -> None:
    """Parts hidden after a premature close delimiter of the top-level multipart.

    A nested multipart that reuses its parent's boundary (RFC 2046 §5.1.1 forbids it; malware
    mailers do it) closes the parent early, and every parser then reads the rest, often the
    payload, as epilogue. A second close delimiter for the same boundary is the tell; each
    delimited chunk after the first one is parsed as a standalone entity.
    """
    close = b"--" + boundary + b"--"
    first = payload.find(close)
    if first == -1 or payload.find(close, first + len(close)) == -1:
        return
    chunks = payload[first + len(close) :].split(b"\n--" + boundary)[1:]
    salvaged = 0
    for chunk in chunks:
        if chunk.startswith(b"--") or len(out.attachments) >= limits.max_attachments:
            break  # the real close delimiter
        try:
            part = fmp.parse_email(chunk.lstrip(b"\r\n"))
        except fmp.ParseError:
            continue
        out.plain.extend(part.text_plain)
        out.html.extend(part.text_html)
        for attachment in part.attachments:
            out.attachments.append(
                _attachment(attachment.filename, attachment.mimetype, attachment.content)
            )
        salvaged += 1
    if salvaged:
        out.defects.append("parts-after-close-delimiter")


def fast_fields(
    mail: fmp.PyMail | fmp.PyLazyMail,
    payload: bytes,
    header_end: int,
    limits: ParseLimits = DEFAULT_LIMITS,
    bodies: tuple[Sequence[str], Sequence[str]] | None = None,
) -> Fields:
    """Fill ``Fields`` from a ``fast_mail_parser`` result for ``payload``.

    ``bodies`` are ``mail``'s (text_plain, text_html) when the caller has read them already.
    """
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
    block = payload[:header_end] if header_end != -1 else payload
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
    boundary = None
    if ctype and ctype[0].lstrip().lower().startswith("multipart/"):
        param = _BOUNDARY.search(ctype[0])
        if param is None:
            defects.append("missing-boundary")
        else:
            boundary = param.group(1) or param.group(2)
    # Copies: salvaged parts are appended to these lists.
    out.plain = list(bodies[0] if bodies is not None else mail.text_plain)
    out.html = list(bodies[1] if bodies is not None else mail.text_html)
    attachments = mail.attachments
    if len(attachments) > limits.max_attachments:
        defects.append("too-many-attachments")
    embedded = _embedded_parser(out.extra, limits)
    index = 0  # 1-based position among the attachments, for the URL part locator
    for part in attachments[: limits.max_attachments]:
        index += 1
        try:
            content = part.content  # lazy mode decodes here, and may fail for this part only
        except fmp.ParseError:
            if "undecodable-attachment" not in defects:
                defects.append("undecodable-attachment")
            continue
        out.attachments.append(_attachment(part.filename, part.mimetype, content))
        mimetype = (part.mimetype or "").lower()
        out.extra.attachment(f"attachment.{index}", mimetype, content, embedded)
    if boundary and len(out.attachments) < limits.max_attachments:
        _salvage_after_close(payload, boundary.encode("latin-1"), out, limits)
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


def _embedded_parser(extra: ExtraTexts, limits: ParseLimits) -> Callable[[bytes, str, int], None]:
    """A parser for embedded messages that files their texts and attachments in ``extra``."""

    def parse(content: bytes, part: str, depth: int) -> None:
        try:
            mail = fmp.parse_email(content)
        except Exception:  # an unreadable embedded message costs its URLs, not the message
            return
        for i, text in enumerate(mail.text_plain, start=1):
            extra.add(f"{part}/plain.{i}", "plain", text)
        for i, html in enumerate(mail.text_html, start=1):
            extra.add(f"{part}/html.{i}", "html", html)
        for i, inner in enumerate(mail.attachments[: limits.max_attachments], start=1):
            try:
                content = inner.content
            except fmp.ParseError:
                continue
            mimetype = (inner.mimetype or "").lower()
            extra.attachment(f"{part}/attachment.{i}", mimetype, content, parse, depth)

    return parse


def _attachment(filename: str | None, mimetype: str | None, content: bytes) -> Attachment:
    """The record for one decoded attachment: name, lower-cased type, size and SHA-256."""
    return Attachment(
        filename=filename or None,
        content_type=(mimetype or "application/octet-stream").lower(),
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
    )
