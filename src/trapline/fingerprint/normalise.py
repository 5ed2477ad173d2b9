"""Text normalisation and shingling for near-duplicate fingerprints.

Spam engines personalise every copy (recipient name and address, tracking ids, rotated URLs,
numbers). Normalisation removes exactly those variable parts so that copies of one template
produce nearly the same shingle set, while keeping the words that make a template distinctive.
Pure functions, stdlib only, so they run unchanged inside Spark's ``mapPartitions``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

# Bodies are cut here before normalising: the first few KB identify a template, the tail is
# often long boilerplate, and the cut bounds the cost of a hostile 10 MB body.
MAX_CHARS = 6000
# Word n-gram size. 3 keeps most shingles intact when a spam engine inserts random words
# (each inserted word breaks at most 3 shingles) while unrelated spams still share few.
WORD_NGRAM = 3
# Texts with fewer words than this are shingled as character 5-grams instead, so a two-line
# image-spam stub still yields a usable set.
MIN_WORDS_FOR_WORD_SHINGLES = 8
CHAR_NGRAM = 5

# Applied to lowercased text, so no IGNORECASE (it would slow this hot pattern down).
_URL_RE = re.compile(r"(?:(?:https?|hxxps?|ftp)://|www\.)([a-z0-9.\-\[\]]+)[^\s<>\"')]*")
# Everything that is not a letter/digit/underscore becomes a space, every digit becomes "0":
# one C-level str.translate instead of a regex per word.
_TABLE = {c: " " for c in range(128) if not (chr(c).isalnum() or c == ord("_"))}
_TABLE.update({c: "0" for c in range(ord("0"), ord("9") + 1)})
# The same table for ASCII text as bytes: bytes.translate is a plain 256-byte lookup.
_BYTES_TABLE = bytes(ord(_TABLE[c]) if c in _TABLE else c for c in range(256))


def host_shape(host: str) -> str:
    """A token for a URL host that survives domain rotation: its label count only.

    ``http://x7k.cheap-meds.biz/..`` and ``http://www.pills-now.com/..`` both become
    ``urlhostd`` (d: 3 labels). Spam engines rotate names and TLDs (.ws to .com in the real
    ``diet-adclick`` group), rarely the shape; a literal IP host becomes ``urlhostip``.
    """
    labels = [label for label in host.lower().strip(".[]").split(".") if label]
    if labels and labels[-1].isdigit():
        return "urlhostip"
    # No digits in the token: the digit rule below would turn it into "#".
    return "urlhost" + "abcdefghij"[min(len(labels), 9)]


def _url_token(host: str) -> str:
    return " " + host_shape(host) + " "


# Hosts repeat across a corpus (a campaign's, the footers'), so their tokens are looked up,
# not recomputed. Every cache here is bounded in entries and only takes short keys (a host
# name is at most 253 characters, RFC 1035 section 2.3.4), so a hostile input cannot pin
# megabytes in a worker.
_cached_url_token = lru_cache(maxsize=4096)(_url_token)
_MAX_HOST_CHARS = 253


def _replace_urls(text: str) -> str:
    """``_URL_RE.sub`` with each URL replaced by its ``host_shape`` token, done faster.

    ``re.sub`` tries the pattern at every character;
    a match can only start where ``str.find`` (memchr-fast) sees ``www.`` or 3 to 5 characters
    before ``://`` (ftp, http/hxxp, https/hxxps). Trying ``match`` at those positions in order,
    skipping any inside the previous match, gives the same leftmost, non-overlapping matches.
    """
    starts: set[int] = set()
    i = text.find("://")
    while i != -1:
        starts.update(range(max(i - 5, 0), max(i - 2, 0)))
        i = text.find("://", i + 1)
    i = text.find("www.")
    while i != -1:
        starts.add(i)
        i = text.find("www.", i + 1)
    out: list[str] = []
    last = 0
    for start in sorted(starts):
        if start < last:
            continue
        m = _URL_RE.match(text, start)
        if m is not None:
            out.append(text[last:start])
            host = m.group(1)
            cached = len(host) <= _MAX_HOST_CHARS
            out.append(_cached_url_token(host) if cached else _url_token(host))
            last = m.end()
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


def _tokens(text: str) -> list[str]:
    if text.isascii():  # most bodies: bytes.translate is the fast path
        return text.encode("ascii").translate(_BYTES_TABLE).decode("ascii").split()
    return text.translate(_TABLE).split()


def _item_tokens(item: str) -> frozenset[str]:
    return frozenset(t for t in _tokens(item.lower()) if len(t) >= 3)


# A trap's addresses and names recur in message after message (SpamAssassin: 14,703
# recipient strings, 5,258 distinct), so each is tokenised once per process; an address is at
# most 320 characters (RFC 5321 section 4.5.3.1: 64 local part + "@" + 255 domain).
_cached_item_tokens = lru_cache(maxsize=8192)(_item_tokens)
_MAX_ITEM_CHARS = 320


def personal_tokens(recipients: Iterable[str]) -> frozenset[str]:
    """Lowercase tokens that identify recipients (address local parts, domains, name parts).

    These are removed from the text because engines insert them per copy ("Dear john.smith").
    Very short parts (<3 chars) are kept: dropping them would delete ordinary words.
    """
    tokens: set[str] = set()
    for item in recipients:
        if item:
            cached = len(item) <= _MAX_ITEM_CHARS
            tokens.update(_cached_item_tokens(item) if cached else _item_tokens(item))
    return frozenset(tokens)


def normalise(text: str, recipients: Iterable[str] = ()) -> list[str]:
    """Normalised word tokens of ``text``.

    Lowercase; URLs become a host-shape token; any token with a digit becomes ``#`` (numbers,
    prices, tracking ids like ``a8f3k2``); recipient names and address parts (so the whole
    address) are dropped. Whitespace and punctuation vanish with tokenisation.
    """
    return normalise_without(text, personal_tokens(recipients))


def normalise_without(text: str, personal: frozenset[str]) -> list[str]:
    """``normalise`` with the recipients' ``personal_tokens`` already computed (a batch
    normalises a message's body and subject with the same set)."""
    text = text[:MAX_CHARS].lower()
    if "://" in text or "www." in text:
        text = _replace_urls(text)
    words = _tokens(text)
    # One pass for both rules (personal filter, then the digit rule), not a list per rule.
    if personal:
        return ["#" if "0" in w else w for w in words if w not in personal]
    return ["#" if "0" in w else w for w in words]


def shingles(words: list[str]) -> list[str]:
    """The shingle set of a normalised token list (word 3-grams, or char 5-grams if short).

    Reference form, used for short texts and in tests; batches hash word 3-grams in numpy
    (``minhash.shingle_hashes``), which gives the same set as hashes rather than strings.
    """
    if len(words) >= MIN_WORDS_FOR_WORD_SHINGLES:
        n = WORD_NGRAM
        return list({" ".join(words[i : i + n]) for i in range(len(words) - n + 1)})
    return char_shingles(words)


def char_shingles(words: list[str]) -> list[str]:
    """Character 5-grams of a short text (fewer than 8 words)."""
    joined = " ".join(words)
    if len(joined) < CHAR_NGRAM:
        return [joined] if joined else []
    return list({joined[i : i + CHAR_NGRAM] for i in range(len(joined) - CHAR_NGRAM + 1)})
