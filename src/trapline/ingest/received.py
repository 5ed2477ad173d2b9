"""Parse ``Received:`` headers (RFC 5321 §4.4, RFC 5322 §3.6.7) into :class:`~trapline.model.Hop`.

Real mail does not follow the RFC grammar: every MTA writes its own shape (sendmail, Postfix,
Exim, qmail, Exchange, Gmail, fetchmail) and spamware forges more. So the parser is a tolerant
clause splitter, not a grammar: it hides comments, cuts the value at the top-level keywords
``from``/``by``/``via``/``with``/``id``/``for`` and the last ``;`` (the date), then reads each
clause with small precompiled patterns. It never raises; whatever it cannot read stays in ``raw``.
The common MTA shapes are first tried by :mod:`trapline.ingest.received_fast`, which gives the
same hop for them at about half the cost.

The trust walk that turns hops into an origin IP lives in :mod:`trapline.ingest.trust` and is
re-exported here, so callers import everything from this module.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_tz
from functools import lru_cache

from trapline.ingest.hop_text import HELO_IN_COMMENT as _HELO_IN_COMMENT
from trapline.ingest.hop_text import clean_name as _clean_name
from trapline.ingest.hop_text import first_ip as _first_ip
from trapline.ingest.received_fast import fast_hop as _fast_hop
from trapline.ingest.trust import DEFAULT_TRUST, TrustBoundary, find_origin, normalize_ip
from trapline.model import Hop

__all__ = [
    "DEFAULT_TRUST",
    "MAX_HOPS",
    "TrustBoundary",
    "find_origin",
    "normalize_ip",
    "parse_chain",
    "parse_date",
    "parse_received",
]

# Innermost comment: replaced by a same-length run of \x01 so keyword positions keep matching
# the original text and comment spans can be found again in the masked string.
_INNER_COMMENT = re.compile(r"\([^()]*\)")
_MASKED_RUN = re.compile("\x01+")
# Top-level clause keywords of RFC 5321 §4.4 "Received:" lines.
_KEYWORDS = ("from", "by", "via", "with", "id", "for")
_NEEDLES = tuple((kw, " " + kw, len(kw) + 1) for kw in _KEYWORDS)
_WS = re.compile(r"\s+")
MAX_HOPS = 256  # Received headers parsed per message (see parse_chain)
_MAX_PARSED = 8192  # characters of one header value that are parsed (raw keeps all)

_BRACKET_IP = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]", re.IGNORECASE)
# sendmail / Postfix / Gmail: "(rdns [ip])", "(user@rdns [ip])", "(rdns. [IPv6:...])".
_RDNS_BEFORE_BRACKET = re.compile(r"^\(\s*(?:[^\s@()\[]+@)?([A-Za-z0-9_][\w.-]*?)\.?\s+\[")
# First word of a clause; comment runs (\x01) end it, as in "by host(Postfix)".
_FIRST_TOKEN = re.compile(r"\s*([^\s()\x01]+)")
# qmail "(1.2.3.4)" and Exchange "(2603:10b6::28)": an address alone in a comment.
_BARE_IP_COMMENT = re.compile(r"^\(\s*[0-9A-Fa-f.:]+\s*\)$")

# RFC 5322 §3.3 dates, loosely (2-digit years, zone names, no seconds); then the US-style
# "Jul, 28 2002 2:23:00 AM +1100" that spamware writes; then email.utils.parsedate_tz.
_DATE = re.compile(
    r"(\d{1,2})\s+([A-Za-z]{3})[A-Za-z]*\.?\s+(\d{2,4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?"
    r"(?:\.\d+)?\s*([+-]\d{4}|[A-Za-z]{1,5}\b)?"
)
_US_DATE = re.compile(
    r"([A-Za-z]{3})[A-Za-z]*\.?,?\s+(\d{1,2}),?\s+(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?"
    r"\s*([AaPp][Mm])?\s*([+-]\d{4}|[A-Za-z]{1,5}\b)?"
)
# qmail-scanner: "21/08/2002 10:54:49" (day first; month first when the day cannot be one)
_SLASH_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?")
# The exact shape nearly every MTA writes, tried first with a cheap anchored match.
_CANONICAL_DATE = re.compile(
    r"\s*(?:[A-Za-z]{3},?\s+)?(\d{1,2}) ([A-Za-z]{3}) (\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"
)
_CANONICAL_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_MONTH_DIGITS = {i: f"{i:02d}" for i in range(1, 13)}
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
# RFC 5322 §4.3 obsolete zones; anything else alphabetic is read as UTC (-0000, "unknown").
_ZONES = {
    "ut": 0, "utc": 0, "gmt": 0, "z": 0,
    "est": -5, "edt": -4, "cst": -6, "cdt": -5, "mst": -7, "mdt": -6, "pst": -8, "pdt": -7,
}  # fmt: skip


@lru_cache(maxsize=1024)
def _month(name: str) -> int | None:
    return _MONTHS.get(name[:3].lower())


def _offset_minutes(zone: str | None) -> int:
    if not zone:
        return 0
    if zone[0] in "+-":
        sign = -1 if zone[0] == "-" else 1
        hours, minutes = int(zone[1:3]), int(zone[3:5])
        if hours > 23 or minutes > 59:
            return 0
        return sign * (hours * 60 + minutes)
    return _ZONES.get(zone.lower(), 0) * 60


def _build(year: int, month: int, day: int, hh: int, mm: int, ss: int, off: int) -> datetime | None:
    if year < 100:  # RFC 5322 §4.3: two-digit years
        year += 2000 if year < 50 else 1900
    try:
        local = datetime(year, month, day, hh, mm, min(ss, 59), tzinfo=UTC)
        return local - timedelta(minutes=off)
    except (ValueError, OverflowError):
        return None


@lru_cache(maxsize=512)
def _zone_delta(sign: str, hours: str, minutes: str) -> timedelta:
    offset = int(hours) * 60 + int(minutes)
    return timedelta(minutes=-offset if sign == "-" else offset)


def parse_date(text: str) -> datetime | None:
    """A Received/Date timestamp as aware UTC ``datetime``; ``None`` when it cannot be read."""
    m = _CANONICAL_DATE.match(text)
    if m:  # the RFC 5322 shape nearly every MTA writes: half the cost of the general path
        day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
        month = _CANONICAL_MONTHS.get(mon)
        if month and int(zh) < 24 and int(zm) < 60:
            try:
                # The same fields as ISO 8601 text, read in C: cheaper than the
                # ints, datetime and timedelta below. It accepts ASCII digits only, so anything
                # else (\d also matches other scripts' digits) takes the path below unchanged.
                iso = f"{year}-{_MONTH_DIGITS[month]}-{day:0>2}T{hh}:{mm}:{ss}{sign}{zh}:{zm}"
                return datetime.fromisoformat(iso).astimezone(UTC)
            except (ValueError, OverflowError):
                pass
            try:
                stamp = datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=UTC)
                return stamp - _zone_delta(sign, zh, zm)
            except (ValueError, OverflowError):
                pass  # leap seconds, day 31 of a short month: let the general path decide
    m = _DATE.search(text)
    if m:
        month = _month(m.group(2))
        if month:
            return _build(
                int(m.group(3)),
                month,
                int(m.group(1)),
                int(m.group(4)),
                int(m.group(5)),
                int(m.group(6) or 0),
                _offset_minutes(m.group(7)),
            )
    m = _US_DATE.search(text)
    if m:
        month = _month(m.group(1))
        if month:
            hh = int(m.group(4))
            ampm = (m.group(7) or "").lower()
            if ampm == "pm" and hh < 12:
                hh += 12
            elif ampm == "am" and hh == 12:
                hh = 0
            return _build(
                int(m.group(3)),
                month,
                int(m.group(2)),
                hh,
                int(m.group(5)),
                int(m.group(6) or 0),
                _offset_minutes(m.group(8)),
            )
    m = _SLASH_DATE.search(text)
    if m:
        day, month = int(m.group(1)), int(m.group(2))
        if month > 12:
            day, month = month, day
        return _build(
            int(m.group(3)), month, day, int(m.group(4)), int(m.group(5)), int(m.group(6) or 0), 0
        )
    try:
        parts = parsedate_tz(text)
    except Exception:  # stdlib raises assorted errors on junk; junk is simply "no date"
        return None
    if not parts:
        return None
    offset = parts[9] or 0
    return _build(parts[0], parts[1], parts[2], parts[3], parts[4], parts[5], offset // 60)


def _mask_comments(text: str) -> str:
    """``text`` with every (possibly nested) comment replaced by \\x01 runs of equal length."""
    if "(" not in text:
        return text
    for _ in range(6):  # nesting deeper than this is junk; leftovers stay visible
        text = _INNER_COMMENT.sub(_blank, text)
        if "(" not in text:
            break
    return text


def _blank(m: re.Match[str]) -> str:
    return "\x01" * (m.end() - m.start())


def _parse_from(
    clause: str, masked: str, qmail_style: bool = False
) -> tuple[str | None, str | None, str | None]:
    """(helo, rdns, ip) from the text after ``from``; ``masked`` is the same span, comments hidden."""
    comments = [clause[m.start() : m.end()] for m in _MASKED_RUN.finditer(masked)]
    outside = _MASKED_RUN.sub(" ", masked)
    tok = _FIRST_TOKEN.match(outside)
    token = tok.group(1) if tok else None
    helo: str | None = token
    rdns: str | None = None
    ip: str | None = None
    for comment in comments:
        hm = _HELO_IN_COMMENT.search(comment) if "elo" in comment or "ELO" in comment else None
        if hm:
            # qmail "from rdns (HELO x) (ip)", Exim "from rdns ([ip] helo=x)": the leading token is
            # what the receiver resolved, the HELO value is what the client claimed.
            if token and token.lower() != "unknown" and not token.startswith("["):
                rdns = token
            helo = hm.group(1)
            comment = comment[: hm.start()] + comment[hm.end() :]
        elif rdns is None:
            rm = _RDNS_BEFORE_BRACKET.match(comment)
            if rm and rm.group(1).lower() != "unknown":
                rdns = rm.group(1)
            elif (
                qmail_style
                and token
                and _BARE_IP_COMMENT.match(comment)
                and token.lower() != "unknown"
                and normalize_ip(token) is None
            ):
                # qmail "from rdns (1.2.3.4)": the leading name is tcpserver's reverse lookup
                # (the HELO is shown only when it differs). Exchange writes the same shape
                # with the HELO first, so the caller says which one this is.
                rdns = token
        if ip is None:
            # The receiver's comment holds the address it saw; it wins over any HELO literal.
            ip = _first_ip(comment)
    if ip is None:
        # fetchmail "from host [ip] by", Exim "from [ip] (helo=x)", qmail-ish "from 1.2.3.4 by",
        # Microsoft's odd "from host - 1.2.3.4 by".
        for m in _BRACKET_IP.finditer(outside):
            ip = normalize_ip(m.group(1))
            if ip:
                break
        if ip is None:
            ip = _first_ip(outside)
    return _clean_name(helo), _clean_name(rdns), ip


def _clauses(masked: str) -> dict[str, tuple[int, int]]:
    """Start and end of the text after each top-level keyword in ``masked`` (comments hidden).

    Only a keyword's first occurrence starts a clause (Smail writes "from a from [ip] by").
    Plain ``str.find`` on a lowercased copy is faster than one alternation regex.
    """
    low = masked.lower()
    if len(low) != len(masked):  # a few Unicode letters change length when lowercased
        low = masked.encode("ascii", "replace").decode("ascii").lower()
    # pad and blank out comment runs and ';' so every keyword is preceded by a space
    low = " " + low.replace("\x01", " ").replace(";", " ") + " "
    found: list[tuple[int, int, str]] = []  # (keyword start, keyword end) in ``masked``
    for kw, needle, n in _NEEDLES:
        pos = low.find(needle)
        while pos >= 0:
            if low[pos + n] in " ([":
                found.append((pos, pos + n - 1, kw))
                break
            pos = low.find(needle, pos + 1)
    found.sort()
    clauses: dict[str, tuple[int, int]] = {}
    last = len(found) - 1
    for i, (_start, end, kw) in enumerate(found):
        clauses[kw] = (end, found[i + 1][0] if i < last else len(masked))
    return clauses


def parse_received(value: str, index: int = 0) -> Hop:
    """One ``Received:`` header value (unfolded or not) as a :class:`Hop`. Never raises."""
    try:
        return _parse(value, index)
    except Exception:  # a parser bug must not lose a message; the raw text is kept
        return Hop(index=index, raw=value)


def _parse(value: str, index: int) -> Hop:
    if len(value) > _MAX_PARSED:
        # Real Received lines are well under 1 KB; a hostile 10 MB one is read by its start
        # (the from/by clauses) and its end (the date), so the cost stays bounded.
        value_text = value[: _MAX_PARSED - 1024] + " " + value[-1024:]
    else:
        value_text = value
    text = " ".join(value_text.split())
    # RFC 5321 §4.4: the date follows the last ';'. Some spamware omits the ';'.
    semi = text.rfind(";")
    if semi >= 0:
        head, date_text = text[:semi], text[semi + 1 :]
        timestamp = parse_date(date_text)
    else:
        head, timestamp = text, None
        m = _DATE.search(text)
        if m:
            timestamp = parse_date(text[m.start() :])
            head = text[: m.start()]
    fast = _fast_hop(head, value, index, timestamp)
    if fast is not None:
        return fast
    masked = _mask_comments(head)
    clauses = _clauses(masked)
    helo = rdns = ip = None
    span = clauses.get("from")
    if span:
        qmail_style = "microsoft" not in head.lower()
        helo, rdns, ip = _parse_from(
            head[span[0] : span[1]], masked[span[0] : span[1]], qmail_style
        )
    by_host = protocol = smtp_id = for_addr = None
    if "by" in clauses:
        s, e = clauses["by"]
        tok = _FIRST_TOKEN.match(masked, s, e)
        by_host = _clean_name(tok.group(1)) if tok else None
    if "with" in clauses:
        s, e = clauses["with"]
        tok = _FIRST_TOKEN.match(masked, s, e)
        if tok:
            protocol = tok.group(1).rstrip(";,")
            if protocol.lower() == "microsoft":  # "with Microsoft SMTP Server", "...SMTPSVC(6.0)"
                protocol = _WS.sub(" ", masked[tok.start(1) : e].replace("\x01", " ")).strip()
    if "id" in clauses:
        s, e = clauses["id"]
        tok = _FIRST_TOKEN.match(masked, s, e)
        smtp_id = tok.group(1).rstrip(";,") if tok else None
    if "for" in clauses:
        s, e = clauses["for"]
        tok = _FIRST_TOKEN.match(masked, s, e)
        for_addr = tok.group(1).strip("<>;,") or None if tok else None
    if protocol is None and not clauses:
        # qmail "(qmail 1234 invoked from network)", sendmail "(from user@localhost) by ..."
        low = head.lower()
        if "qmail" in low and "invoked" in low:
            protocol = "local"
    # Positional, in Hop's field order (cheaper than keywords on this hot path).
    return Hop(index, value, helo, rdns, ip, by_host, protocol, smtp_id, for_addr, timestamp)


def parse_chain(values: Sequence[str]) -> tuple[Hop, ...]:
    """All ``Received:`` values of a message, top (most recent) first, as hops indexed 0..n-1.

    At most ``MAX_HOPS`` are parsed: RFC 5321 §6.3 has relays reject mail past about 100
    Received lines as a loop, so more is padding meant to cost us time; the walk starts at
    the top and never needs the tail.
    """
    return tuple(parse_received(v, i) for i, v in enumerate(values[:MAX_HOPS]))
