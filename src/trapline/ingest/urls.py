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
from collections.abc import Iterable
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

from trapline.ingest.html import render
from trapline.model import Url

MAX_URLS = 500  # per message: link farms repeat one template thousands of times
MAX_URL_CHARS = 2048

# RFC 3986 §2: characters outside these never appear unencoded in a URL; spam text wraps them.
_URL_CHAR = r"[^\s<>\"'`{}|\\^\x00-\x20\x7f]"
_DEFANG_DOT = r"(?:\[\.\]|\(\.\)|\{\.\}|\[dot\]|\(dot\)|\{dot\})"
_SCHEME_URL = re.compile(
    rf"(?:(?:h[tx]{{2}}ps?|ftp|fxp)(?:://|\[://\]|\[:\]//)|www(?:\.|{_DEFANG_DOT})){_URL_CHAR}{{1,{MAX_URL_CHARS}}}",
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
_BARE_HOST = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)+(/|$)")
_AUTHORITY_END = re.compile(r"[/?#\\]")
_HOST_OK = re.compile(r"[\w.:-]+")
_DEFANGED = re.compile(rf"^hxxps?|{_DEFANG_DOT}|\[://\]|\[:\]", re.IGNORECASE)
_REFANG = (
    (re.compile(_DEFANG_DOT, re.IGNORECASE), "."),
    (re.compile(r"\[://\]|\[:\]//", re.IGNORECASE), "://"),
    (re.compile(r"^hxxp", re.IGNORECASE), "http"),
    (re.compile(r"^fxp", re.IGNORECASE), "ftp"),
)
_TRAILING = ".,;:!?'\")]}>*"
_SCHEMES_WITHOUT_HOST = ("mailto:", "cid:", "javascript:", "data:", "tel:", "#", "about:")


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    # The list bundled with the package: offline, and fixed for a given install.
    return PublicSuffixList(accept_unknown=False)


def _is_ip(host: str) -> bool:
    # An IPv4 address ends in a digit and an IPv6 one holds ":"; anything else would only make
    # ``ipaddress`` raise twice (~3 µs a host name on a cold cache).
    if ":" not in host and not host[-1:].isdigit():
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=65536)
def registered_domain(host: str) -> str | None:
    """The registrable domain of ``host`` (eTLD+1 from the Public Suffix List), or ``None``.

    ``None`` for IP literals, bare public suffixes and names without a dot.
    """
    host = host.strip().strip("[]").rstrip(".").lower()
    if not host or "." not in host or _is_ip(host) or len(host) > 253:
        return None
    try:
        return _psl().privatesuffix(host)
    except (ValueError, UnicodeError):
        return None


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
    if not host.isascii():
        # One spelling per domain: IDNA (RFC 5891) A-labels, as DNS and blocklists use them.
        with contextlib.suppress(UnicodeError, ValueError):
            host = host.encode("idna").decode("ascii")
    if not host or len(host) > 253 or not _HOST_OK.fullmatch(host):
        return None
    return host


@lru_cache(maxsize=65536)
def make_url(url: str, source: str) -> Url:
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
    )


def _strip_trailing(url: str) -> str:
    # Prose puts punctuation after a URL; a closing bracket is kept only if one was opened.
    opened = {")": url.count("("), "]": url.count("["), "}": url.count("{")}
    closed = {")": url.count(")"), "]": url.count("]"), "}": url.count("}")}
    end = len(url)
    while end and url[end - 1] in _TRAILING:
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
    p = low.find("www")
    while p >= 0:
        out.add(p)
        p = low.find("www", p + 1)
    return sorted(out)


def urls_in_text(text: str, limit: int = 4 * MAX_URLS) -> list[str]:
    """URL-looking substrings of plain text in order, trailing prose punctuation removed.

    At most ``limit`` candidates of each kind are looked at, so a body of a million URLs costs
    the same as one of a few thousand.
    """
    if not text:
        return []
    found: list[tuple[int, str]] = []
    if "://" in text or "[:" in text or "ww" in text or "WW" in text:
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
            if start == 0 or not text[start - 1].isalnum():  # a word boundary before the scheme
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


def collect_urls(
    texts: Iterable[str],
    links: Iterable[tuple[str, str]],
    *,
    limit: int = MAX_URLS,
) -> tuple[tuple[Url, ...], bool]:
    """Deduplicated ``Url`` records from HTML links then body texts; (urls, truncated)."""
    seen: set[tuple[str, str]] = set()
    out: list[Url] = []

    def add(url: str, source: str) -> bool:
        key = (url, source)
        if key in seen:
            return True
        if len(out) >= limit:
            return False
        seen.add(key)
        out.append(make_url(url, source))
        return True

    for source, value in links:
        lower = value.lower()
        if not value or lower.startswith(_SCHEMES_WITHOUT_HOST):
            continue
        if not add(value, source):
            return tuple(out), True
    for text in texts:
        for url in urls_in_text(text):
            if not add(url, "text"):
                return tuple(out), True
    return tuple(out), False


def extract_urls(text: str, html: str | None) -> tuple[Url, ...]:
    """Every URL in a plain-text body and an HTML body (``href``, ``src``, and visible text)."""
    texts = [text]
    links: tuple[tuple[str, str], ...] = ()
    if html:
        rendered = render(html)
        texts.append(rendered.text)
        links = rendered.links
    return collect_urls(texts, links)[0]
