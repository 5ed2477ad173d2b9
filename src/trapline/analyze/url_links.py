"""URL-template links: messages that share a tracking-URL template within adjacent periods.

Each (template, period) group has an anchor, its first member; a message links to the anchors
of its own and the two adjacent periods that came before it, with no verification. ``url_rule``
states the rule plainly; ``url_candidates`` is its array form (the tests compare them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trapline.analyze.graph import sorted_lookup
from trapline.fingerprint.minhash import KEY_FREE_BITS

_PERIOD_BITS = 20  # periods since 1970 fit easily: 2^20 x 3 days is 8,600 years


@dataclass(slots=True, frozen=True)
class UrlPrior:
    keys: np.ndarray  # int64, sorted
    anchor: np.ndarray  # int64 seq


EMPTY_URL = UrlPrior(np.zeros(0, np.int64), np.zeros(0, np.int64))


def url_keys(
    template_hashes: Sequence[Sequence[int]], times_s: np.ndarray, period_days: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(row, key)`` pairs: one per (message, template) with a known time; key = hash|period."""
    lengths = np.fromiter((len(t) for t in template_hashes), np.int64, len(template_hashes))
    rows = np.repeat(np.arange(len(template_hashes)), lengths)
    flat = np.fromiter((h for t in template_hashes for h in t), np.int64, int(lengths.sum()))
    period = np.floor_divide(times_s[rows], int(period_days * 86400))
    ok = (times_s[rows] >= 0) & (period < (1 << _PERIOD_BITS))
    key = (flat[ok] & ~np.int64((1 << _PERIOD_BITS) - 1)) | period[ok]
    return rows[ok], key


_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it is a bijection on 64 bits


def _grouped(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, sorted keys)``: positions ordered by key, ascending inside equal keys.

    URL keys use all 64 bits, so positions cannot ride in them as in ``text_candidates``, and a
    stable argsort is an order of magnitude slower than a plain value sort. Instead the keys are
    grouped by a 43-bit mix of themselves with the position packed below, sorted as plain
    values, then the (far fewer) distinct keys are sorted. A mixed-key collision (odds ~2^-43 per pair) is
    detected exactly and falls back to the argsort.
    """
    n = len(keys)
    mask = (1 << KEY_FREE_BITS) - 1
    if n == 0 or n > mask:
        order = np.argsort(keys, kind="stable")
        return order, keys[order]
    mixed = (keys.view(np.uint64) * _MIX).view(np.int64) & ~np.int64(mask)
    packed = mixed | np.arange(n, dtype=np.int64)
    packed.sort()
    pos = packed & mask
    packed &= ~np.int64(mask)
    k = keys[pos]
    new_mix = np.empty(n, bool)
    new_mix[0] = True
    np.not_equal(packed[1:], packed[:-1], out=new_mix[1:])
    if not np.array_equal(new_mix[1:], k[1:] != k[:-1]):  # two keys share a mix: rare
        order = np.argsort(keys, kind="stable")
        return order, keys[order]
    # Order the groups by key; inside a group positions stay ascending.
    starts = np.flatnonzero(new_mix)
    by_key = np.argsort(k[starts])
    sizes = np.diff(np.append(starts, n))[by_key]
    offset = np.repeat(starts[by_key] - (np.cumsum(sizes) - sizes), sizes)
    take = np.arange(n) + offset
    return pos[take], k[take]


def url_candidates(
    nodes: np.ndarray, keys: np.ndarray, prior: UrlPrior
) -> tuple[np.ndarray, np.ndarray, UrlPrior]:
    """Pairs (node, anchor node) for URL-template keys; ``nodes`` ascending. New anchors too."""
    order, k = _grouped(keys)
    s = nodes[order]
    start = np.ones(len(k), bool)
    start[1:] = k[1:] != k[:-1]
    group = np.cumsum(start) - 1
    uniq = k[start]  # ascending
    first_new = s[start]  # nodes ascend inside a group: the first is the oldest
    if len(prior.keys):
        p_anchor = sorted_lookup(uniq, prior.keys, prior.anchor)
        fresh = p_anchor < 0
        table_keys = np.concatenate((prior.keys, uniq[fresh]))
        table_anchor = np.concatenate((prior.anchor, first_new[fresh]))
        by_key = np.argsort(table_keys)  # keys are distinct: no order to keep
        table_keys, table_anchor = table_keys[by_key], table_anchor[by_key]
        anchors = np.where(fresh, first_new, p_anchor).astype(s.dtype, copy=False)
    else:
        table_keys, table_anchor, anchors = uniq, first_new, first_new
    a_out, b_out = [], []
    for delta in (-1, 0, 1):
        if delta == 0:
            per_group = anchors
        elif table_keys is uniq:
            # From scratch the table is the sorted keys themselves, and a key's neighbour
            # period (same template, period +-1) is the adjacent entry when it exists.
            per_group = np.full(len(uniq), -1, anchors.dtype)
            hit = uniq[1:] == uniq[:-1] + 1
            if delta < 0:
                per_group[1:][hit] = anchors[:-1][hit]
            else:
                per_group[:-1][hit] = anchors[1:][hit]
        else:  # looked up once per group, not per message: groups can be large
            per_group = sorted_lookup(uniq + delta, table_keys, table_anchor)
        anchor = per_group[group]
        ok = (anchor >= 0) & (anchor < s)
        a_out.append(s[ok])
        b_out.append(anchor[ok])
    return np.concatenate(a_out), np.concatenate(b_out), UrlPrior(uniq, anchors)


def url_rule(
    nodes: Sequence[int], keys: Sequence[int], anchors: dict[int, int]
) -> set[tuple[int, int]]:
    """URL-template pairs: a key's anchor is its first member ever; members meet the anchors of
    key-1, key and key+1 (the adjacent periods) that came before them."""
    anchor = dict(anchors)
    for node, key in sorted(zip(nodes, keys, strict=True)):
        anchor.setdefault(key, node)
    out = set()
    for node, key in zip(nodes, keys, strict=True):
        for near in (key - 1, key, key + 1):
            a = anchor.get(near)
            if a is not None and a < node:
                out.add((node, a))
    return out
