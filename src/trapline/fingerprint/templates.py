"""URL-template and subject-template signatures (AutoRE-style generalisation).

AutoRE (Xie et al., SIGCOMM 2008) found spam campaigns by the URLs they share once the
per-recipient parts are generalised: the invariant parts of a URL identify the campaign, the
variable parts (ids, random tokens, numbers) are replaced by character classes. Here each host
label, path segment and query value is classified; a template that contains at least one
variable slot is "specific" (a tracking URL built per copy) and may join messages into a
campaign; a plain URL (``http://www.w3.org/TR/html4``) may not, because unrelated mail shares it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import urlsplit

from trapline.fingerprint.normalise import normalise_without, personal_tokens

MAX_TEMPLATES = 3  # per message; the first few links carry the campaign, the rest is footer
MAX_SUBJECT_CHARS = 120
_HEX = re.compile(r"[0-9a-f]+")
_DIMENSIONS = re.compile(r"\d{1,4}x\d{1,4}")
_CONSONANT_RUN = re.compile(r"[^aeiouy0-9_\-.]{6,}")
_SPLIT = re.compile(r"([/_\-.=&?]+)")


def classify(part: str) -> str:
    """A URL part, or its class if per-copy: ``<d>`` digits, ``<h>`` hex, ``<a>`` random."""
    if not part or not part.isascii():
        return part
    if part.isdigit():
        return "<d>"
    if part.isalpha():
        # Letters only: random only when clearly unpronounceable. Real path words can be
        # consonant-heavy ("webscr", "strengths"), and a false slot would make a brand's
        # genuine URL a join key for every phish that links to it.
        if len(part) >= 8 and (
            sum(part.count(v) for v in "aeiouy") / len(part) < 0.15 or _CONSONANT_RUN.search(part)
        ):
            return "<a>"
        return part
    if not part.isalnum():
        return part  # "~bob", "a+b": punctuation inside, leave it
    # Letters and digits mixed.
    if _DIMENSIONS.fullmatch(part):
        return part  # "150x40": an image size in a file name, not a per-copy id
    if len(part) >= 6 and _HEX.fullmatch(part):
        return "<h>"
    # "img3" is a server name, "a8f3k2" an id: a letter stem with a short number becomes
    # "img#", which matches rotated servers but is not a per-copy slot.
    stem = part.rstrip("0123456789")
    if stem.isalpha() and len(stem) >= 2 and len(part) - len(stem) <= 2:
        return stem + "#"
    return "<a>"


# Parts repeat far more than they vary (SpamAssassin: 415,236 URL parts, 20,024 distinct), so
# parts of short texts are classified once per process; the cache is bounded in entries and
# key length, so a worker's memory stays flat (a few MB at most) whatever the input.
_cached_classify = lru_cache(maxsize=16384)(classify)
_CACHED_TEXT_CHARS = 256


def _generalise(text: str) -> str:
    # ``_SPLIT`` has one capturing group, so ``split`` alternates part, separator run, part, ..
    # (parts may be empty): the even items are the parts, the odd ones the separators.
    pieces = _SPLIT.split(text)
    pieces[::2] = map(
        _cached_classify if len(text) <= _CACHED_TEXT_CHARS else classify, pieces[::2]
    )
    return "".join(pieces)


def url_template(url: str, registered_domain: str | None = None) -> tuple[str, bool]:
    """``(template, specific)`` for a URL; ``specific`` when a variable slot was generalised.

    The registered domain is kept literally (it is what the spammer paid for); subdomain
    labels, path segments and query values are generalised; query keys are kept and sorted.
    """
    if len(url) <= _CACHED_URL_CHARS:
        return _cached_url_template(url, registered_domain)
    return _url_template(url, registered_domain)


# Footer, image and unsubscribe links recur from message to message (SpamAssassin: 28,130 URLs,
# 16,069 distinct), so templates of short URLs are kept; long ones (rarely repeated, and a
# hostile 100 KB URL must not be pinned in memory) are always computed: a few MB at most.
_CACHED_URL_CHARS = 512


@lru_cache(maxsize=4096)
def _cached_url_template(url: str, registered_domain: str | None) -> tuple[str, bool]:
    return _url_template(url, registered_domain)


def _url_template(url: str, registered_domain: str | None) -> tuple[str, bool]:
    try:
        parts = urlsplit(url.strip().lower().replace("hxxp", "http"))
    except ValueError:
        return "", False
    host = (parts.hostname or "").rstrip(".")
    if host.startswith("www."):
        host = host[4:]
    domain = registered_domain.lower() if registered_domain else ".".join(host.split(".")[-2:])
    if host.replace(".", "").isdigit():
        host_t = host  # a literal IP is the campaign's own server
    else:
        sub = host[: -len(domain)].rstrip(".") if host.endswith(domain) else ""
        host_t = (_generalise(sub) + "." if sub else "") + domain
    path_t = _generalise(parts.path.rstrip("/"))
    query = sorted(q.split("=", 1) for q in parts.query.split("&") if q)
    query_t = "&".join(f"{kv[0]}={_generalise(kv[1])}" if len(kv) == 2 else kv[0] for kv in query)
    template = host_t + path_t + ("?" + query_t if query_t else "")
    return template, "<" in template


def url_templates(urls: Iterable[tuple[str, str | None]]) -> tuple[str, ...]:
    """Distinct specific templates of a message's URLs (``(url, registered_domain)`` pairs)."""
    out: dict[str, None] = {}
    for url, domain in urls:
        template, specific = url_template(url, domain)
        if specific:
            out[template] = None
            if len(out) >= MAX_TEMPLATES:
                break
    return tuple(out)


def subject_template(subject: str | None, recipients: Iterable[str] = ()) -> str:
    """Subject with case, numbers, punctuation and recipient names normalised away."""
    return subject_template_without(
        subject, personal_tokens(recipients) if subject else frozenset()
    )


def subject_template_without(subject: str | None, personal: frozenset[str]) -> str:
    """``subject_template`` with the recipients' ``personal_tokens`` already computed."""
    if not subject:
        return ""
    return " ".join(normalise_without(subject, personal))[:MAX_SUBJECT_CHARS]


def template_hash(template: str) -> int:
    """Stable signed 64-bit hash of a template (Python's ``hash`` changes per process)."""
    return int.from_bytes(
        hashlib.blake2b(template.encode(), digest_size=8).digest(), "little", signed=True
    )
