"""``fingerprint(fields) -> Signature``: the pure near-duplicate signature of one message.

Batches are the normal case (ingest, Spark partitions, the benchmark): ``fingerprint_batch``
normalises each text in Python and computes all MinHash rows in one Rust call, returning a
matrix rather than a million small objects. ``fingerprint`` is the one-message form.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from trapline.fingerprint.minhash import NUM_PERM, word_signatures
from trapline.fingerprint.normalise import normalise_without, personal_tokens
from trapline.fingerprint.templates import subject_template_without, url_templates
from trapline.model import Message, clean_text


@dataclass(slots=True, frozen=True)
class FingerprintInput:
    """The message fields a fingerprint depends on (and nothing else)."""

    message_id: str
    text: str
    subject: str | None = None
    urls: tuple[tuple[str, str | None], ...] = ()  # (url, registered_domain)
    recipients: tuple[str, ...] = ()  # names and addresses to strip from the text


@dataclass(slots=True, frozen=True)
class Signature:
    """One message's fingerprint: MinHash (``NUM_PERM`` uint32), URL and subject templates."""

    message_id: str
    minhash: bytes  # little-endian uint32 x NUM_PERM
    n_words: int
    url_templates: tuple[str, ...]
    subject_template: str

    def array(self) -> np.ndarray:
        return np.frombuffer(self.minhash, dtype="<u4")


@dataclass(slots=True, frozen=True)
class Fingerprints:
    """Signatures of a batch: row ``i`` of ``matrix`` belongs to ``message_ids[i]``."""

    message_ids: tuple[str, ...]
    matrix: np.ndarray  # (n, NUM_PERM) uint32
    n_words: np.ndarray  # (n,) int32
    url_templates: tuple[tuple[str, ...], ...]
    subject_templates: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.message_ids)

    def signatures(self) -> Iterator[Signature]:
        rows = self.matrix.astype("<u4", copy=False)
        for i, mid in enumerate(self.message_ids):
            yield Signature(
                mid,
                rows[i].tobytes(),
                int(self.n_words[i]),
                self.url_templates[i],
                self.subject_templates[i],
            )


def _url(pair: tuple[str, str | None]) -> str:
    return pair[0]


def _clean(value: str | None) -> str | None:
    return None if value is None else clean_text(value)


def input_of(msg: Message) -> FingerprintInput:
    """The fingerprint fields of a parsed ``Message``, as the store gives them back.

    Strings cleaned as the writer stores them (``clean_text``), URLs in ``ORDER BY url`` order
    (URL templates keep the first ones), recipients from To/Cc and the SMTP envelope: so a
    signature made from the record at parse time equals one made later from stored rows
    (``pipeline.adapters.fingerprint.fingerprint_ids``).
    """
    urls = sorted(((clean_text(u.url), _clean(u.registered_domain)) for u in msg.urls), key=_url)
    names = [clean_text(a.name) for a in (*msg.to, *msg.cc) if a.name is not None]
    addrs = [clean_text(a.addr) for a in (*msg.to, *msg.cc) if a.addr is not None]
    if msg.envelope is not None:
        addrs.extend(clean_text(a) for a in msg.envelope.rcpt_to)
    return FingerprintInput(
        msg.id,
        clean_text(msg.text or ""),
        _clean(msg.subject),
        tuple(urls),
        tuple([*names, *addrs]),
    )


# A trap's messages reach the same few recipients (SpamAssassin: 6,046 messages, 1,903
# distinct recipient lists), so each short list's tokens are computed once per process. Long
# lists (a hostile 16k-address To:) are not kept: the cache stays a few MB at most.
_cached_personal_tokens = lru_cache(maxsize=4096)(personal_tokens)
_MAX_CACHED_RECIPIENTS = 8
_MAX_CACHED_RECIPIENT_CHARS = 1024


def _personal_tokens(recipients: tuple[str, ...]) -> frozenset[str]:
    # Callers outside trapline may pass a list, or None for an absent name: not cached.
    if isinstance(recipients, tuple) and len(recipients) <= _MAX_CACHED_RECIPIENTS:
        try:
            if sum(map(len, recipients)) <= _MAX_CACHED_RECIPIENT_CHARS:
                return _cached_personal_tokens(recipients)
        except TypeError:
            pass
    return personal_tokens(recipients)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Suspend the cyclic garbage collector for a block that makes no reference cycles.

    A batch allocates tens of thousands of short-lived lists, tuples and sets; each burst of
    allocations triggers collections that walk every live container of the process, above
    all the batch's parsed ``Message`` records, none of which the batch can free. At the
    default threshold that walking was 18 us of the 134 us a message ``signature_table`` cost
    on SpamAssassin (``fingerprint_ids`` in the main process); parse workers already collect
    rarely (``pipeline.pool.WORKER_GC_THRESHOLD``) and gain ~3 us. Reference counting still frees
    everything at once; only cycles wait, and the batch creates none.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def fingerprint_batch(items: Sequence[FingerprintInput]) -> Fingerprints:
    """Fingerprints of many messages at once (pure; the fast path)."""
    with _gc_paused():
        return _fingerprint_batch(items)


def _fingerprint_batch(items: Sequence[FingerprintInput]) -> Fingerprints:
    # Body and subject strip the same recipients: their tokens are computed once per message.
    personal = [_personal_tokens(it.recipients) for it in items]
    words = [normalise_without(it.text or "", p) for it, p in zip(items, personal, strict=True)]
    matrix = word_signatures(words)
    return Fingerprints(
        tuple(it.message_id for it in items),
        matrix,
        np.fromiter((len(w) for w in words), dtype=np.int32, count=len(words)),
        tuple(url_templates(it.urls) for it in items),
        tuple(
            subject_template_without(it.subject, p) for it, p in zip(items, personal, strict=True)
        ),
    )


def fingerprint(item: FingerprintInput) -> Signature:
    """The signature of one message."""
    return next(fingerprint_batch([item]).signatures())


def fingerprint_message(msg: Message) -> Signature:
    """The signature of a parsed ``Message`` (``fingerprint(msg) -> Signature`` in the design)."""
    return fingerprint(input_of(msg))


__all__ = [
    "NUM_PERM",
    "FingerprintInput",
    "Fingerprints",
    "Signature",
    "fingerprint",
    "fingerprint_batch",
    "fingerprint_message",
    "input_of",
]
