"""Header helpers: RFC 2047 decoding, address lists, and Date parsing with forgery flags.

The fast parser already decodes most of this; these functions are what the stdlib fallback path
uses, and the Date logic (flags for forged or impossible dates) is shared by both paths. Every
function here is total: bad input yields ``None`` or a defect, never an exception.
"""

from __future__ import annotations

import codecs
import email.errors
import email.header
import email.utils
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from trapline.model import Address

# Forged dates: spamware writes years like 0102 (a Y2K bug), 1970 or 9744 (see data/README.md).
EARLIEST_PLAUSIBLE = datetime(1990, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=2)
SKEW_LIMIT = timedelta(days=7)

_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
# Labels seen in real spam that Python's codec registry does not know (None: no real charset).
_CHARSET_ALIASES: dict[str, str | None] = {
    "x-unknown": None,
    "unknown-8bit": None,
    "default": None,
    "default_charset": None,
    "x-user-defined": "latin-1",
    "chinesebig5": "big5",
    "gb2312_charset": "gb2312",
    "x-gbk": "gbk",
    "x-sjis": "shift_jis",
    "windows-874": "cp874",
    "iso-8859-8-i": "iso-8859-8",
    "x-mac-roman": "mac-roman",
    "ks_c_5601-1987": "cp949",
}
# When the declared charset fails, mail clients of the era most often meant a sibling: EUC-JP
# labelled ISO-2022-JP, GBK bytes labelled GB2312, and so on.
_SIBLINGS: dict[str, tuple[str, ...]] = {
    "iso-2022-jp": ("euc-jp", "cp932"),
    "euc-jp": ("cp932",),
    "shift_jis": ("cp932", "euc-jp"),
    "gb2312": ("gb18030",),
    "gbk": ("gb18030",),
    "big5": ("cp950", "big5hkscs"),
    "euc-kr": ("cp949",),
    "iso-8859-1": ("cp1252",),
    "us-ascii": ("cp1252",),
}


def known_charset(label: str) -> bool:
    """Whether ``label`` names a charset Python can decode (aliases included)."""
    label = label.strip().strip("\"'").lower()
    codec = _CHARSET_ALIASES.get(label, label)
    if not codec:
        return False
    try:
        codecs.lookup(codec)
    except LookupError:
        return False
    return True


def decode_bytes(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """Decode ``data`` with ``charset``; return (text, defect or None).

    Unknown or wrong charsets fall back to UTF-8 (if it decodes cleanly) or Latin-1, which
    maps every byte, so nothing is lost and nothing raises.
    """
    label = (charset or "us-ascii").strip().strip("\"'").lower()
    if "=" in label:  # 'charset="iso-8859-1' from a doubled parameter name
        label = label.rpartition("=")[2].strip("\"' ")
    label = label or "us-ascii"
    codec = _CHARSET_ALIASES.get(label, label)
    if codec:
        try:
            return data.decode(codec), None
        except (LookupError, UnicodeDecodeError, ValueError):
            pass
    # 8-bit bytes under us-ascii are an undeclared charset, not a wrong one.
    defect = "undeclared-8bit" if label in ("us-ascii", "ascii") else f"bad-charset:{label[:40]}"
    for fallback in (*_SIBLINGS.get(codec or "", ()), "utf-8"):
        try:
            return data.decode(fallback), defect
        except UnicodeDecodeError:
            continue
    if codec and label not in ("us-ascii", "ascii"):
        # A few bad bytes in a long Big5 or GB2312 body: keep the declared charset, mark the
        # bad bytes, rather than turn every character into Latin-1 mojibake.
        try:
            text = data.decode(codec, errors="replace")
            if text.count("\ufffd") * 100 <= len(text):
                return text, defect
        except (LookupError, ValueError):
            pass
    try:
        return data.decode("cp1252"), defect
    except UnicodeDecodeError:
        return data.decode("latin-1"), defect


_CHARSET_PARAM = re.compile(rb"""charset\s*=\s*["']?([A-Za-z0-9_.:+-]{1,40})""", re.IGNORECASE)


def decode_8bit(data: bytes, payload: bytes = b"") -> tuple[str, str | None]:
    """Decode a raw 8-bit header value (RFC 6532 says UTF-8; 2002-era spam used its body's charset).

    Tries UTF-8, then the first ``charset=`` parameter in ``payload``, then cp1252/Latin-1.
    Returns (text, defect or None).
    """
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        pass
    match = _CHARSET_PARAM.search(payload[:65536])
    if match:
        label = match.group(1).decode("ascii").lower()
        codec = _CHARSET_ALIASES.get(label, label)
        if codec:
            try:
                return data.decode(codec), "raw-8bit-header"
            except (LookupError, UnicodeDecodeError, ValueError):
                pass
    try:
        return data.decode("cp1252"), "raw-8bit-header"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "raw-8bit-header"


def raw_header(payload: bytes, name: str) -> bytes | None:
    """The first raw (unfolded, undecoded) value of header ``name`` in ``payload``."""
    end = payload.find(b"\n\n")
    crlf = payload.find(b"\r\n\r\n")
    if crlf != -1 and (end == -1 or crlf < end):
        end = crlf
    block = payload if end == -1 else payload[: end + 1]
    pattern = rb"(?im)^" + re.escape(name.encode("ascii")) + rb"[ \t]*:[ \t]*(.*(?:\r?\n[ \t].*)*)"
    match = re.search(pattern, block)
    if match is None:
        return None
    # RFC 5322 §2.2.3: unfold by removing the line break before folding whitespace.
    return re.sub(rb"\r?\n(?=[ \t])", b"", match.group(1)).rstrip(b"\r")


def decode_rfc2047(value: str, defects: list[str] | None = None) -> str:
    """Decode RFC 2047 encoded-words in a header value; undecodable words stay as written."""
    if "=?" not in value or not _ENCODED_WORD.search(value):
        return value
    try:
        parts = email.header.decode_header(value)
    except (email.errors.MessageError, ValueError, LookupError, AssertionError) as exc:
        # HeaderParseError ("Base64 decoding error") is a MessageError, not a ValueError.
        if defects is not None:
            defects.append(f"bad-encoded-word:{type(exc).__name__}")
        return value
    out: list[str] = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            out.append(chunk)
            continue
        text, defect = decode_bytes(chunk, charset)
        if defect and defects is not None:
            defects.append(defect)
        out.append(text)
    # RFC 2047 §6.2: whitespace between adjacent encoded-words is dropped; decode_header keeps
    # the unencoded runs as their own chunks, so a plain join is right.
    return "".join(out)


@lru_cache(maxsize=8192)  # ~2.5 MB at most per process
def make_address(name: str | None, addr: str | None) -> Address:
    """An ``Address`` with the domain split off and lowercased; empty strings become ``None``.

    Cached: trap addresses, list addresses and campaign senders repeat across messages, and
    ``Address`` is immutable so sharing one instance is safe.
    """
    addr = (addr or "").strip().strip("<>").strip() or None
    name = (name or "").strip().strip('"').strip() or None
    domain = None
    if addr and "@" in addr:
        domain = addr.rpartition("@")[2].strip().rstrip(".").lower() or None
    return Address(name=name, addr=addr, domain=domain)


def parse_addresses(values: Iterable[str], limit: int) -> tuple[tuple[Address, ...], bool]:
    """Parse address-list header values (stdlib path); return (addresses, truncated).

    ``limit`` caps the work: ``getaddresses`` is linear, but a 16k-recipient ``To:`` would still
    cost a record per address downstream, and no analysis needs more than the first few hundred.
    """
    out: list[Address] = []
    truncated = False
    for value in values:
        if len(value) > limit * 256:  # a value this long cannot hold fewer than `limit` addresses
            value = value[: limit * 256]
            truncated = True
        try:
            pairs = email.utils.getaddresses([value])
        except (ValueError, IndexError, TypeError):
            continue
        for name, addr in pairs:
            if not (name or addr):
                continue
            if len(out) >= limit:
                return tuple(out), True
            out.append(make_address(decode_rfc2047(name), addr))
    return tuple(out), truncated


def parse_date_header(value: str | None) -> datetime | None:
    """Parse an RFC 5322 §3.3 date (with the obsolete forms spam uses); UTC, or ``None``."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    try:
        if parsed.tzinfo is None:
            # RFC 5322 §3.3: "-0000" or a missing zone means local time unknown; read as UTC.
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def date_flags(
    date: datetime | None,
    present: bool,
    received_at: datetime | None,
    now: datetime,
) -> tuple[str, ...]:
    """Flags for a Date header that is absent, unreadable, or forged.

    A Date is sender-controlled; the flags let analysis ignore it when it cannot be true:
    in the future of when we got it, before the spam era, or far from the receiving hop's time.
    """
    if not present:
        return ("missing",)
    if date is None:
        return ("unparseable",)
    flags: list[str] = []
    if date > now or (received_at is not None and date > received_at + FUTURE_SLACK):
        flags.append("far-future")
    if date < EARLIEST_PLAUSIBLE:
        flags.append("before-1990")
    if received_at is not None and abs(date - received_at) > SKEW_LIMIT:
        flags.append("skewed")
    return tuple(flags)
