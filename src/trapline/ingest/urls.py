"""URLs in message bodies: found in text and HTML, hosts and registered domains resolved offline.

Defanged forms (``hxxp://``, ``example[.]com``, ``example[dot]com``) are common in abuse reports
and forwarded phish; they are kept exactly as written so evidence is not altered, but flagged
``obfuscated=True`` and refanged only to compute the host and registered domain.
"""

from __future__ import annotations

import bisect
import contextlib
import ipaddress
import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

from trapline.ingest.domains import is_ip_literal as _is_ip
from trapline.ingest.domains import public_suffixes as _psl
from trapline.ingest.domains import registered_domain
from trapline.ingest.html import render
from trapline.model import Url

MAX_URLS = 500  # per message: link farms repeat one template thousands of times
MAX_URL_CHARS = 2048

# RFC 3986 §2: characters outside these never appear unencoded in a URL; spam text wraps them.
_URL_CHAR = r"[^\s<>\"'`{}|\\^\x00-\x20\x7f]"
_DEFANG_DOT = r"(?:\[\.\]|\(\.\)|\{\.\}|\[dot\]|\(dot\)|\{dot\})"
_SCHEME_URL = re.compile(
    rf"(?:(?:h[tx]{{2}}ps?|ftp|fxp)(?:://|\[://\]|\[:\]//)|(?:www|ftp)(?:\.|{_DEFANG_DOT})){_URL_CHAR}{{1,{MAX_URL_CHARS}}}",
    re.IGNORECASE,
)
# Candidate starts found with a first-character set, which the regex engine scans for in C
# several times faster than the alternation above; each candidate is then checked anchored.
_SCHEME_HINT = re.compile(r"[hHfFwW](?:[tTxX]{1,2}[pP]|[wW]{2})")
# A bare defanged name ("evil[.]com/x"); only searched for when a defang token is present,
# because a pattern that may start at any word is the slow part of URL scanning.
_DEFANGED_NAME = re.compile(
    rf"\b[a-z0-9][a-z0-9-]*(?:{_DEFANG_DOT}[a-z0-9-]+)+(?:/{_URL_CHAR}{{0,{MAX_URL_CHARS}}})?",
    re.IGNORECASE,
)
_DEFANG_TOKEN = re.compile(_DEFANG_DOT, re.IGNORECASE)
_FTP = re.compile(r"ftp\.", re.IGNORECASE)
_TAB_NEWLINE = re.compile(r"[\t\n\r]")
_BARE_HOST = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)+(/|$)")
_AUTHORITY_END = re.compile(r"[/?#\\]")
# RFC 1123 §2.1 / RFC 5890: a registered name is letters, digits and hyphens; DNS itself
# serves any label of 1-63 octets, and dynamic-DNS names with "_" or an edge "-" resolved.
_LDH = re.compile(r"[a-z0-9-]{1,63}")
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_DEFANGED = re.compile(rf"^hxxps?|{_DEFANG_DOT}|\[://\]|\[:\]", re.IGNORECASE)
_REFANG = (
    (re.compile(_DEFANG_DOT, re.IGNORECASE), "."),
    (re.compile(r"\[://\]|\[:\]//", re.IGNORECASE), "://"),
    (re.compile(r"^hxxp", re.IGNORECASE), "http"),
    (re.compile(r"^fxp", re.IGNORECASE), "ftp"),
)
_TRAILING = ".,;:!?'\")]}>*"
_SCHEMES_WITHOUT_HOST = ("mailto:", "cid:", "javascript:", "data:", "tel:", "#", "about:")


def _may_be_defanged(url: str) -> bool:
    """Cheap test before the defang patterns: each needs a bracket or an hxxp/fxp start."""
    return (
        "[" in url
        or "(" in url
        or "{" in url
        or url[:4].lower() == "hxxp"
        or url[:3].lower() == "fxp"
    )


def refang(url: str) -> str:
    """Undo common defanging so the URL can be parsed (the stored URL keeps the original)."""
    if not _may_be_defanged(url):
        return url
    for pattern, replacement in _REFANG:
        url = pattern.sub(replacement, url)
    return url


def host_of(url: str) -> str | None:
    """Lowercased host of ``url`` (refanged); ``None`` when it has no plausible host."""
    url = refang(url.strip())
    lower = url.lower()
    if lower.startswith(_SCHEMES_WITHOUT_HOST):
        return None
    if "://" in url:
        rest = url.split("://", 1)[1]
    elif lower.startswith("//"):
        rest = url[2:]
    elif lower.startswith("www.") or _BARE_HOST.match(lower):
        rest = url
    else:
        return None  # a relative link: no host of its own
    authority = _AUTHORITY_END.split(rest, maxsplit=1)[0]
    authority = authority.rpartition("@")[2]  # RFC 3986 §3.2.1: userinfo tricks hide the host
    if authority.startswith("["):  # RFC 3986 §3.2.2: IPv6 literal
        host = authority[1 : authority.find("]")] if "]" in authority else authority[1:]
    else:
        host = authority.split(":", 1)[0]
    host = host.strip().rstrip(".").lower()
    if host[-1:].isdigit() or host.rpartition(".")[2].startswith("0x"):
        # Browsers read "3286983112", "0x425c45de" and "66.92.0x45.221" as IPv4 addresses
        # and spam uses them to hide the address from filters: the dotted form maps to its
        # network, and a name ending in a number that is no address cannot be resolved.
        host = whatwg_ipv4(host) or (host if ":" in host else "")
    if not host.isascii():
        # One spelling per domain: IDNA (RFC 5891) A-labels, as DNS and blocklists use them.
        with contextlib.suppress(UnicodeError, ValueError):
            host = host.encode("idna").decode("ascii")
    return host if valid_host(host) else None


def whatwg_ipv4(host: str) -> str | None:
    """The dotted IPv4 address browsers read ``host`` as, or ``None`` (WHATWG URL §3.5).

    Each of one to four dot-separated parts is decimal, ``0x`` hex or ``0``-prefixed octal;
    the last part fills the bytes the others leave ("1.2.3" is 1.2.0.3).
    """
    parts = host.split(".")
    if parts and parts[-1] == "":
        parts.pop()
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        base, digits = 10, part
        if part[:2] in ("0x", "0X"):
            base, digits = 16, part[2:] or "0"
        elif len(part) > 1 and part.startswith("0"):
            base, digits = 8, part[1:]
        try:
            numbers.append(int(digits, base))
        except ValueError:
            return None
    last = numbers.pop()
    if any(n > 255 for n in numbers) or last >= 256 ** (4 - len(numbers)):
        return None
    value = last
    for i, n in enumerate(numbers):
        value += n * 256 ** (3 - i)
    return str(ipaddress.IPv4Address(value))


@lru_cache(maxsize=65536)
def valid_host(host: str) -> bool:
    """True for an IP literal or a name that can exist: LDH labels ending in a known TLD.

    Prose glued to a link ("canadianpharm.hk.Yours"), a leading dot, single labels and
    ``localhost`` cannot be resolved on the Internet; such URLs keep their text as evidence
    but get no host, so they add nothing to network or campaign evidence. Registries issue
    only letters, digits and hyphens, so the registered name is held to that; labels below it
    may also hold "_", which DNS serves and phishing used ("signin_ebay_com.example.co.kr").
    """
    if not host or len(host) > 253 or not host.isascii():
        return False
    if _is_ip(host):
        return True
    labels = host.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        return False
    # The registered name ends in a suffix the Public Suffix List knows (bundled, offline).
    suffix = _psl().publicsuffix(host)
    if suffix is None or suffix == host:
        return False
    registered = labels[-(suffix.count(".") + 2) :]
    return all(_LDH.fullmatch(label) for label in registered)


@lru_cache(maxsize=65536)
def make_url(url: str, source: str, part: str = "") -> Url:
    """A ``Url`` record for ``url`` as found, with host, registered domain and defang flag.

    Cached: list footers and campaign links repeat across thousands of messages, and ``Url``
    is immutable so sharing one instance is safe.
    """
    url = url[:MAX_URL_CHARS]
    host = host_of(url)
    return Url(
        url=url,
        host=host,
        registered_domain=registered_domain(host) if host else None,
        source=source,  # type: ignore[arg-type]  # one of the Url.source literals by construction
        obfuscated=_may_be_defanged(url) and _DEFANGED.search(url) is not None,
        part=part,
    )


def _foreign_break(char: str) -> bool:
    """Non-ASCII punctuation, symbols and spaces ("、", "。", "，", "）", U+3000) end a URL.

    Mail clients stop linkifying there: RFC 3987 IRIs allow letters of any script in a path,
    but a URL holding such punctuation would have had it percent-encoded.
    """
    return not char.isascii() and unicodedata.category(char)[0] in "PSZ"


def _fit(url: str) -> str:
    """``url`` cut where the text around it begins, for URLs written next to non-Latin text.

    A host is ASCII unless the whole name is a valid IDN ("bücher.de"); a host running into
    the words after it ("example.com中文") ends at the first non-ASCII character.
    """
    if url.isascii():
        return url
    for i, char in enumerate(url):
        if _foreign_break(char):
            url = url[:i]
            break
    sep = url.find("://")
    start = sep + 3 if sep >= 0 else 0
    found = _AUTHORITY_END.search(url, start)
    end = found.start() if found else len(url)
    host = url[start:end].rpartition("@")[2]
    if host.isascii():
        return url
    try:
        encoded = host.rstrip(".").lower().encode("idna").decode("ascii")
    except (UnicodeError, ValueError):
        encoded = ""
    if valid_host(encoded):
        return url
    offset = end - len(host)
    return url[: offset + next(i for i, c in enumerate(host) if not c.isascii())]


def _strip_trailing(url: str) -> str:
    # Prose puts punctuation after a URL; a closing bracket is kept only if one was opened.
    url = _fit(url)
    opened = {")": url.count("("), "]": url.count("["), "}": url.count("{")}
    closed = {")": url.count(")"), "]": url.count("]"), "}": url.count("}")}
    end = len(url)
    while end and (url[end - 1] in _TRAILING or _foreign_break(url[end - 1])):
        char = url[end - 1]
        if char in closed:
            if opened[char] >= closed[char]:
                break
            closed[char] -= 1
        end -= 1
    return url[:end]


def _ascii_starts(text: str) -> list[int]:
    """Sorted positions where ``_SCHEME_URL`` could match in ASCII ``text``.

    A scheme URL has "://" or "[:" 3-5 characters after its start ("ftp", "http", "https") and
    a www one starts with "www"; ``str.find`` on a lowercased copy (same offsets for ASCII)
    finds these far faster than the hint regex, which stops at every h, f and w. Every position
    where the URL pattern matches is in the list, so trying them in order gives the same URLs.
    """
    low = text.lower()
    out: set[int] = set()
    for needle in ("://", "[:"):
        p = low.find(needle)
        while p >= 0:
            out.update(s for s in (p - 5, p - 4, p - 3) if s >= 0)
            p = low.find(needle, p + 1)
    for needle in ("www", "ftp"):
        p = low.find(needle)
        while p >= 0:
            out.add(p)
            p = low.find(needle, p + 1)
    return sorted(out)


def urls_in_text(text: str, limit: int = 4 * MAX_URLS) -> list[str]:
    """URL-looking substrings of plain text in order, trailing prose punctuation removed.

    At most ``limit`` candidates of each kind are looked at, so a body of a million URLs costs
    the same as one of a few thousand.
    """
    if not text:
        return []
    found: list[tuple[int, str]] = []
    if "://" in text or "[:" in text or "ww" in text or "WW" in text or _FTP.search(text):
        pos = 0
        starts = _ascii_starts(text) if text.isascii() else None
        while len(found) < limit:
            if starts is None:
                hint = _SCHEME_HINT.search(text, pos)
                if hint is None:
                    break
                start = hint.start()
            else:
                i = bisect.bisect_left(starts, pos)
                if i == len(starts):
                    break
                start = starts[i]
            match = _SCHEME_URL.match(text, start)
            if match is None:
                pos = start + 1
                continue
            # A word boundary before the scheme; a letter of another script ("看http://")
            # is one too, as CJK prose puts no space before a link.
            before = text[start - 1] if start else " "
            if not (before.isascii() and before.isalnum()):
                found.append((start, match.group(0)))
            pos = match.end()
    if _DEFANG_TOKEN.search(text):
        # Spans of the scheme URLs, sorted by start: a defanged name inside one of them
        # ("hxxp://a[.]b/c") is the same URL, found once.
        starts = [start for start, _ in found]
        ends = [start + len(url) for start, url in found]
        extra: list[tuple[int, str]] = []
        for m in _DEFANGED_NAME.finditer(text):
            if len(extra) >= limit:
                break
            i = bisect.bisect_right(starts, m.start()) - 1
            if i < 0 or m.start() >= ends[i]:
                extra.append((m.start(), m.group(0)))
        if extra:
            found = sorted(found + extra)
    urls = (_strip_trailing(raw) for _, raw in found)
    return [url for url in urls if len(url) > 4]


# Sources whose value is text to scan for URLs; every other source is one link value.
TEXT_SOURCES = frozenset({"text", "html-text"})


def collect_urls(
    found: Iterable[tuple[str, str, str]], *, limit: int = MAX_URLS
) -> tuple[tuple[Url, ...], bool]:
    """Deduplicated ``Url`` records from ``(source, part, value)`` triples; (urls, truncated).

    ``value`` is a link (an HTML attribute) or, for the text sources, a text to scan. A URL
    found in two ways (the link text shows one URL, the ``href`` another, or the same one)
    is kept once per source: each is evidence of what the reader saw or would follow.
    """
    seen: set[tuple[str, str]] = set()
    out: list[Url] = []
    for source, part, value in found:
        if source in TEXT_SOURCES:
            candidates = urls_in_text(value)
        elif not value or value.lower().startswith(_SCHEMES_WITHOUT_HOST):
            continue
        else:
            # WHATWG URL §4.4: a browser drops tabs and newlines inside an attribute's URL,
            # which phishing uses to split "yaho\no.com" past filters.
            candidates = [_TAB_NEWLINE.sub("", value) if _TAB_NEWLINE.search(value) else value]
        for url in candidates:
            key = (url, source)
            if key in seen:
                continue
            if len(out) >= limit:
                return tuple(out), True
            seen.add(key)
            out.append(make_url(url, source, part))
    return tuple(out), False


def extract_urls(text: str, html: str | None) -> tuple[Url, ...]:
    """Every URL in a plain-text body and an HTML body (its attributes and its visible text)."""
    found = [("text", "plain.1", text)]
    if html:
        rendered = render(html)
        found = [
            *((source, "html.1", url) for source, url in rendered.links),
            *found,
            ("html-text", "html.1", rendered.text),
        ]
    return collect_urls(found)[0]
