"""MinHash signatures and LSH band keys, batched.

MinHash (Broder 1997): for P random hash functions keep the minimum hash over a document's
shingles; the share of equal positions between two signatures estimates their Jaccard
similarity. Signatures are computed in batches by ``rensa`` (Rust) and kept as a ``uint32``
matrix, one row per message, so banding and verification are numpy operations, not Python loops.
See docs/campaigns.md for why rensa rather than a numpy implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import rensa

from trapline.fingerprint.normalise import (
    MIN_WORDS_FOR_WORD_SHINGLES,
    WORD_NGRAM,
    char_shingles,
)

NUM_PERM = 128
SEED = 20260101  # fixed: signatures stored today must compare with signatures computed later
EMPTY = np.uint32(0xFFFFFFFF)  # rensa's value for a position no shingle reached

_MERSENNE = np.uint64((1 << 61) - 1)
KEY_FREE_BITS = 21  # band keys keep 43 bits; 2^21 rows fit beside them

_rayon_started = False


def _rmh() -> Any:
    """rensa's MinHash class, noting that its thread pool may now run (``rayon_started``)."""
    global _rayon_started
    _rayon_started = True
    return rensa.RMinHash


def rayon_started() -> bool:
    """Whether this process has called rensa. Its batch functions run on a rayon thread pool,
    which does not survive ``fork()``: a process forked after that hangs at its first rensa
    call (seen with a parse pool started after an in-process ingest). Pools check this."""
    return _rayon_started


def minhash_matrix(
    shingle_sets: Sequence[Sequence[str]], *, num_perm: int = NUM_PERM, seed: int = SEED
) -> np.ndarray:
    """``(len(shingle_sets), num_perm)`` uint32 MinHash matrix (rensa R-MinHash)."""
    if not shingle_sets:
        return np.zeros((0, num_perm), dtype=np.uint32)
    matrix = _rmh().digest_matrix_from_token_sets(shingle_sets, num_perm=num_perm, seed=seed)
    return np.asarray(matrix.to_rows(), dtype=np.uint32).reshape(len(shingle_sets), num_perm)


def word_signatures(
    word_lists: Sequence[Sequence[str]], *, num_perm: int = NUM_PERM, seed: int = SEED
) -> np.ndarray:
    """MinHash matrix of normalised word lists, shingled as in ``normalise.shingles``.

    Word 3-grams are hashed in numpy from per-word hashes (rensa's stable 64-bit token hash),
    so no shingle string is ever built; short texts fall back to character 5-grams. The
    result equals ``minhash_matrix`` over the hashed shingles and costs a fraction of it.
    """
    n = len(word_lists)
    out = np.full((n, num_perm), EMPTY, dtype=np.uint32)
    lengths = np.fromiter((len(w) for w in word_lists), dtype=np.int64, count=n)
    long_rows = np.flatnonzero(lengths >= MIN_WORDS_FOR_WORD_SHINGLES)
    short_rows = np.flatnonzero((lengths > 0) & (lengths < MIN_WORDS_FOR_WORD_SHINGLES))
    if len(long_rows):
        flat_words = [w for i in long_rows.tolist() for w in word_lists[i]]
        hashed = np.asarray(_rmh().hash_token_sets([flat_words])[0], dtype=np.uint64)
        grams, offsets = _ngram_hashes(hashed, lengths[long_rows], WORD_NGRAM)
        matrix = _rmh().digest_matrix_from_flat_token_hashes(
            grams, offsets, num_perm=num_perm, seed=seed
        )
        out[long_rows] = np.asarray(matrix.to_rows(), dtype=np.uint32)
    if len(short_rows):
        sets = [char_shingles(list(word_lists[i])) for i in short_rows.tolist()]
        out[short_rows] = minhash_matrix(sets, num_perm=num_perm, seed=seed)
    return out


def _ngram_hashes(hashed: np.ndarray, lengths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every n-gram inside each document of a flat word-hash array, and row offsets.

    Duplicate n-grams are kept: they cannot change a minimum, so deduplicating is wasted work.
    """
    ends = np.cumsum(lengths)
    doc = np.repeat(np.arange(len(lengths)), lengths)
    pos = np.arange(len(hashed))
    valid = pos + (n - 1) < ends[doc]
    idx = pos[valid]
    with np.errstate(over="ignore"):
        gram = hashed[idx].copy()
        for k in range(1, n):
            # Multiply-and-add with distinct odd constants so "a b c" != "b a c".
            gram = gram * np.uint64(0x9E3779B97F4A7C15) + hashed[idx + k]
    counts = lengths - (n - 1)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.uint64)
    return gram, offsets


def minhash_matrix_numpy(
    shingle_sets: Sequence[Sequence[str]], *, num_perm: int = NUM_PERM, seed: int = SEED
) -> np.ndarray:
    """Pure-numpy MinHash (universal hashing mod 2^61-1); kept to measure against rensa."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 1 << 31, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, 1 << 31, size=num_perm, dtype=np.uint64)
    lengths = np.fromiter((len(s) for s in shingle_sets), dtype=np.int64, count=len(shingle_sets))
    out = np.full((len(shingle_sets), num_perm), EMPTY, dtype=np.uint32)
    if lengths.sum() == 0:
        return out
    tokens = _rmh().hash_token_sets(shingle_sets)
    flat = np.fromiter((h for row in tokens for h in row), dtype=np.uint64) >> np.uint64(33)
    # (a*x + b) mod p, with x < 2^31 and a < 2^31 so the product fits in 64 bits.
    hashed = ((flat[:, None] * a[None, :] + b[None, :]) % _MERSENNE).astype(np.uint32)
    nonempty = lengths > 0
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))[nonempty]
    out[nonempty] = np.minimum.reduceat(hashed, starts, axis=0)
    return out


def band_keys_by_band(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``(bands, n)`` int64 keys: each band's ``rows`` values hashed together (FNV-1a style).

    The band index is mixed in, so equal keys in different bands do not collide. 43 bits are
    kept: two unrelated rows share a key with odds ~2^-43, and such a pair is only a
    candidate (verification rejects it). Rows are read in cache-sized chunks and the result
    is band-major, so each band's keys are contiguous: reading a band's columns straight from
    a (n, 128) matrix touches every cache line of it, which slows large runs per row.
    """
    if bands * rows > sig.shape[1]:
        raise ValueError(f"{bands} bands x {rows} rows needs {bands * rows} permutations")
    n = sig.shape[0]
    out = np.empty((bands, n), np.int64)
    prime = np.uint64(0x100000001B3)
    seed = np.uint64(0xCBF29CE484222325) ^ np.arange(bands, dtype=np.uint64)
    free = ~np.uint64((1 << KEY_FREE_BITS) - 1)
    step = 8192
    with np.errstate(over="ignore"):
        for lo in range(0, n, step):
            cube = sig[lo : lo + step, : bands * rows].reshape(-1, bands, rows).astype(np.uint64)
            key = np.broadcast_to(seed, cube.shape[:2]).copy()
            for r in range(rows):
                key ^= cube[:, :, r]
                key *= prime
            # The low KEY_FREE_BITS are zeroed so a key and a row number share one int64 and
            # a plain value sort orders by (key, row), far cheaper than a stable argsort.
            key &= free
            out[:, lo : lo + step] = key.view(np.int64).T
    return out


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``(n, bands)`` int64 keys (see ``band_keys_by_band``)."""
    return band_keys_by_band(sig, bands, rows).T


def equal_counts(sig: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Equal MinHash values of row pairs ``(left[k], right[k])`` (Jaccard x permutations)."""
    out = np.empty(len(left), dtype=np.int32)
    step = 8192  # chunks of 4 MB per side stay in cache; 1M pairs never make a 128 MB array
    for s in range(0, len(left), step):
        eq = sig[left[s : s + step]] == sig[right[s : s + step]]
        out[s : s + step] = np.count_nonzero(eq, axis=1)
    return out


def is_empty(sig: np.ndarray) -> np.ndarray:
    """Rows whose document had no shingles (all positions EMPTY): they never join by text."""
    return (sig == EMPTY).all(axis=1)
