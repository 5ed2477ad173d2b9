"""The fallback MIME path: stdlib ``email`` with ``compat32``, plus the record both paths fill.

Used only for the messages ``fast_mail_parser`` rejects (undecodable base64, structure it
refuses). ``compat32`` is lenient and linear; ``policy.default`` is not used anywhere because its
header parser is quadratic on hostile address lists (a 16k-recipient ``To:`` takes minutes).
"""

from __future__ import annotations

import binascii
import contextlib
import email
import email.message
import email.parser
import hashlib
import re
from collections.abc import Iterator
from email.policy import compat32

from trapline.ingest.fields import DEFAULT_LIMITS, Fields, ParseLimits, cap
from trapline.ingest.headers import (
    decode_8bit,
    decode_bytes,
    decode_rfc2047,
    known_charset,
    make_address,
    parse_addresses,
    parse_date_header,
)
from trapline.model import Attachment

_FOLD = re.compile(r"\r?\n(?=[ \t])")
_B64_LINE = re.compile(rb"[A-Za-z0-9+/=]+")
_META_CHARSET = re.compile(
    rb"""<meta[^>]{0,200}?charset\s*=\s*["']?([A-Za-z0-9_.:-]{1,40})""", re.I
)


def _header_text(value: object, payload: bytes, defects: list[str]) -> str:
    """A raw compat32 header value as text: unfolded, 8-bit bytes decoded (not U+FFFD)."""
    text = value if isinstance(value, str) else str(value)
    # RFC 5322 §2.2.3: unfolding removes the CRLF before folding whitespace.
    text = _FOLD.sub("", text).strip()
    if not text.isascii():
        # message_from_bytes keeps 8-bit header bytes as surrogate escapes; recover the bytes.
        raw = text.encode("utf-8", "surrogateescape")
        text, defect = decode_8bit(raw, payload)
        if defect and defect not in defects:
            defects.append(defect)
    return text


def lenient_base64(data: bytes) -> tuple[bytes, bytes, bool]:
    """Decode base64 up to the first line that is not base64; return (decoded, rest, clean).

    List servers append plain-text footers to base64 bodies and spamware truncates them;
    the stdlib then gives up and returns the encoded text, which is worse than a partial decode.
    """
    lines = data.splitlines()
    good: list[bytes] = []
    for index, line in enumerate(lines):
        line = line.strip()
        if not line:
            continue
        if _B64_LINE.fullmatch(line) is None:
            rest = b"\n".join(lines[index:])
            break
        good.append(line)
    else:
        rest = b""
    joined = b"".join(good).rstrip(b"=")
    usable = len(joined) - len(joined) % 4
    tail_ok = len(joined) % 4 != 1  # one leftover base64 char carries no whole byte
    chunk = joined[:usable] + (joined[usable:] + b"==")[:4] if tail_ok else joined[:usable]
    try:
        decoded = binascii.a2b_base64(chunk)
    except binascii.Error:
        return b"", data, False
    return decoded, rest, not rest and tail_ok and len(joined) == usable


def _get(part: email.message.Message, name: str) -> str:
    """A part's header as ``str`` (compat32 hands back ``Header`` objects for 8-bit values)."""
    value = part.get(name)
    if value is None:
        return ""
    try:
        return str(value)
    except (UnicodeError, LookupError, ValueError):
        return ""


def _leaf_bytes(part: email.message.Message, defects: list[str]) -> tuple[bytes, bytes]:
    """Transfer-decoded bytes of a leaf, plus any plain text found after broken base64."""
    if _get(part, "Content-Transfer-Encoding").strip().lower() == "base64":
        encoded = part.get_payload(decode=False)
        if isinstance(encoded, str):
            decoded, rest, clean = lenient_base64(encoded.encode("ascii", "surrogateescape"))
            if not clean and "bad-base64" not in defects:
                defects.append("bad-base64")
            return decoded, rest
    payload = part.get_payload(decode=True)
    return (payload if isinstance(payload, bytes) else b""), b""


def _leaf_text(part: email.message.Message, defects: list[str]) -> str:
    payload, rest = _leaf_bytes(part, defects)
    charset = part.get_content_charset()
    if not payload.isascii() and (charset is None or not known_charset(charset)):
        # HTML often declares its charset only in <meta> (HTML5 §4.2.5.5), not in MIME.
        meta = _META_CHARSET.search(payload[:4096])
        if meta:
            charset = meta.group(1).decode("ascii")
    text, defect = decode_bytes(payload, charset)
    if defect and defect not in defects:
        defects.append(defect)
    if rest:
        text += "\n" + decode_bytes(rest, "utf-8")[0]
    return text


def _add_leaf(part: email.message.Message, out: Fields, limits: ParseLimits) -> None:
    """File one MIME leaf as body text or as an attachment."""
    defects = out.defects
    ctype = part.get_content_type()
    disposition = _get(part, "Content-Disposition").lower()
    if ctype in ("text/plain", "text/html") and not disposition.startswith("attachment"):
        target = out.plain if ctype == "text/plain" else out.html
        target.append(_leaf_text(part, defects))
        return
    if len(out.attachments) >= limits.max_attachments:
        if "too-many-attachments" not in defects:
            defects.append("too-many-attachments")
        return
    content = _leaf_bytes(part, defects)[0]
    try:
        filename = part.get_filename()
    except (ValueError, LookupError, TypeError):
        filename = None
    out.attachments.append(
        Attachment(
            filename=decode_rfc2047(str(filename)) if filename else None,
            content_type=ctype,
            size=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
        )
    )
    # Embedded messages are walked as leaves already; an HTML page under any type is not.
    out.extra.attachment(f"attachment.{len(out.attachments)}", ctype, content, None)


def _leaves(
    msg: email.message.Message, max_depth: int, defects: list[str]
) -> Iterator[email.message.Message]:
    """MIME leaves depth first, like ``Message.walk`` but iterative and depth-capped.

    ``walk`` recurses once per level, so a few hundred nested multiparts (the fast parser
    stops at 256 and hands them here) would hit Python's recursion limit.
    """
    stack: list[tuple[email.message.Message, int]] = [(msg, 0)]
    while stack:
        part, depth = stack.pop()
        if not part.is_multipart():
            yield part
            continue
        if depth >= max_depth:
            if "too-deep" not in defects:
                defects.append("too-deep")
            continue
        children = part.get_payload()
        if isinstance(children, list):
            stack.extend(
                (child, depth + 1)
                for child in reversed(children)
                if isinstance(child, email.message.Message)
            )


def stdlib_fields(
    payload: bytes, limits: ParseLimits = DEFAULT_LIMITS, *, bodies: bool = True
) -> Fields:
    """Extract ``Fields`` with the stdlib parser; raises only on stdlib bugs (caller catches)."""
    out = Fields()
    defects = out.defects
    msg: email.message.Message | None = None
    if bodies:
        # The feed parser recurses once per multipart level and gives up near 300 levels.
        with contextlib.suppress(RecursionError):
            msg = email.message_from_bytes(payload, policy=compat32)
    if msg is None:
        # No body walk (too deep, or too large for this slow path): the headers still parse,
        # the bodies are lost, and the defect says so.
        msg = email.parser.BytesHeaderParser(policy=compat32).parsebytes(payload)
        defects.append("too-deep" if bodies else "bodies-skipped")
        bodies = False
    by_name: dict[str, list[str]] = {}
    for index, (name, value) in enumerate(msg.raw_items()):
        if index >= limits.max_headers:
            defects.append("too-many-headers")
            break
        # Decoding is bounded by the cap: a 10 MB header is cut before RFC 2047 work.
        value = cap(_header_text(value, payload, defects), limits.max_header_value, defects)
        text = decode_rfc2047(value, defects)
        out.headers.append((name, text))
        by_name.setdefault(name.lower(), []).append(text)
    out.received = by_name.get("received", [])
    if "message-id" in by_name:
        out.message_id = by_name["message-id"][0][:998] or None
    if "subject" in by_name:
        out.subject = by_name["subject"][0]
    if "from" in by_name:
        found, _ = parse_addresses(by_name["from"][:1], 1)
        if found:
            out.from_ = found[0]
        else:
            out.from_ = make_address(None, None)
            defects.append("bad-from")
    else:
        defects.append("no-from")
    for key in ("to", "cc"):
        found, truncated = parse_addresses(by_name.get(key, []), limits.max_recipients)
        if truncated:
            defects.append("too-many-recipients")
        setattr(out, key, found)
    if "date" in by_name and by_name["date"][0]:
        out.date_present = True
        out.date = parse_date_header(by_name["date"][0])
    for issue in msg.defects:
        code = {
            "NoBoundaryInMultipartDefect": "missing-boundary",
            "StartBoundaryNotFoundDefect": "missing-boundary",
            "MissingHeaderBodySeparatorDefect": "missing-header-separator",
        }.get(type(issue).__name__)
        if code and code not in defects:
            defects.append(code)
    leaves = _leaves(msg, limits.max_depth, defects) if bodies else iter(())
    for count, part in enumerate(leaves, start=1):
        if count > limits.max_parts:
            defects.append("too-many-parts")
            break
        try:
            _add_leaf(part, out, limits)
        except Exception:  # one unreadable part must not cost the rest of the message
            if "bad-part" not in defects:
                defects.append("bad-part")
    return out
