"""Text links: one LSH band's buckets, each member paired with the bucket's first member and
the member just before it (the rule in ``trapline.analyze.lsh``).

``text_candidates`` is the array form, for batches with stored bucket state and for runs from
scratch; ``text_rule`` states the same plainly, and the tests compare them. A run from scratch
that already knows the components so far (``skip_settled``) first drops the buckets whose
members are all in one component, with a hash-slot filter that errs only towards keeping:
those buckets can give no pair, and most buckets are settled after the first bands, so the
sort (the one step that is not linear) sees only the few that still matter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trapline.analyze.graph import index_dtype, sorted_lookup
from trapline.fingerprint.minhash import KEY_FREE_BITS

# Rounds of the settled-bucket filter: (odd multiplier hashing a band key to a slot, slots per
# entry). A bucket sharing a slot with another component's bucket survives a round, rarely two;
# the first round's table is kept small because a table past the L2 cache costs more than the
# extra survivors it saves.
SLOT_ROUNDS = ((np.uint64(0x9E3779B97F4A7C15), 1), (np.uint64(0xC2B2AE3D27D4EB4F), 2))


@dataclass(slots=True, frozen=True)
class TextPrior:
    """Stored state of the LSH buckets a batch touches (sorted by key)."""

    keys: np.ndarray  # int64
    first: np.ndarray  # int64 seq
    last: np.ndarray  # int64 seq


EMPTY_TEXT = TextPrior(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))


@dataclass(slots=True)
class Scratch:
    """Arrays every band of one run reuses: fresh large arrays per band cost page faults that
    grow with the run, so per-message time would not stay flat as runs get larger."""

    positions: np.ndarray  # 0..n-1, int64
    packed: np.ndarray  # band key with the position in its free low bits, int64
    member: np.ndarray  # node of each bucket-ordered entry
    group: np.ndarray  # bucket number of each entry
    anchor: np.ndarray  # first member of the entry's bucket
    prev: np.ndarray  # member just before the entry in its bucket (-1: none)
    label: np.ndarray  # component label of the entry
    label_anchor: np.ndarray  # ... of its anchor
    label_prev: np.ndarray  # ... of its predecessor
    pair_a: np.ndarray  # candidate pairs out (2n: an anchor pair and a predecessor pair each)
    pair_b: np.ndarray
    starts: np.ndarray  # entry opens a bucket (bool; reused as a temporary)
    to_anchor: np.ndarray  # entry pairs with its anchor (bool)
    to_prev: np.ndarray  # entry pairs with its predecessor (bool)
    slot: np.ndarray  # hash slot of each entry (settled-bucket filter; uint64, read as intp)
    slot_seen: np.ndarray  # the label its slot holds
    slot_flag: np.ndarray  # entry's label differs from it / entry's slot is mixed (bool)
    slot_label: np.ndarray  # a component label per hash slot
    slot_mixed: np.ndarray  # slot holds two labels (bool)

    @classmethod
    def sized(cls, n: int, dtype: type[np.signedinteger[Any]]) -> Scratch:
        def nodes() -> np.ndarray:
            return np.empty(n, dtype)

        def flags() -> np.ndarray:
            return np.empty(max(n, 1), bool)

        slots = 1 << max(1, (2 * n - 1).bit_length())  # the filter's largest table

        return cls(
            positions=np.arange(n, dtype=np.int64),
            packed=np.empty(n, np.int64),
            member=nodes(),
            group=nodes(),
            anchor=nodes(),
            prev=nodes(),
            label=nodes(),
            label_anchor=nodes(),
            label_prev=nodes(),
            pair_a=np.empty(2 * n, dtype),
            pair_b=np.empty(2 * n, dtype),
            starts=flags(),
            to_anchor=flags(),
            to_prev=flags(),
            slot=np.empty(n, np.uint64),
            slot_seen=nodes(),
            slot_flag=flags(),
            slot_label=np.empty(slots, dtype),
            slot_mixed=np.empty(slots, bool),
        )


def text_candidates(
    nodes: np.ndarray,
    keys: np.ndarray,
    prior: TextPrior,
    work: Scratch | None = None,
    *,
    label: np.ndarray | None = None,
    want_state: bool = True,
    skip_settled: bool = False,
) -> tuple[np.ndarray, np.ndarray, TextPrior]:
    """Candidate pairs (node, node) for one band's bucket ``keys``; ``nodes`` ascending.

    ``nodes`` are node indices in processing order and ``prior`` names nodes the same way; the
    returned state does too. ``label`` (component label per node) leaves out pairs already in
    one component: they cannot change the partition. ``skip_settled`` (with ``label``, no
    prior and no state wanted) first drops the buckets whose members all share one label,
    so only the rest is sorted. With ``work`` the pair arrays are views into its buffers,
    valid until the next call.
    """
    n = len(keys)
    if work is None or len(work.positions) < n:
        work = Scratch.sized(n, index_dtype(int(nodes[-1]) + 1 if n else 0))
    mask = (1 << KEY_FREE_BITS) - 1
    packs = n <= mask
    if packs and skip_settled and label is not None and not want_state and not len(prior.keys):
        n = _pack_unsettled(keys, _node_labels(nodes, label), work)  # n: entries left
    elif packs:
        # Positions ride in the zeroed low bits: one value sort orders by (key, position).
        np.bitwise_or(keys, work.positions[:n], out=work.packed[:n])
    packed = work.packed[:n]
    s, grp, anchor, prev = work.member[:n], work.group[:n], work.anchor[:n], work.prev[:n]
    lab, lab_a, lab_p = work.label[:n], work.label_anchor[:n], work.label_prev[:n]
    start, m1, m2 = work.starts[:n], work.to_anchor[:n], work.to_prev[:n]
    if packs:
        packed.sort()
        np.bitwise_and(packed, mask, out=s, casting="unsafe")
        packed &= ~np.int64(mask)
        k = packed
    else:
        order = np.argsort(keys, kind="stable")  # stable: processing order kept in a bucket
        s[:] = order
        k = keys[order]
    # A batch's nodes are usually consecutive: then nodes[i] = nodes[0] + i and no gather.
    if n and int(nodes[-1]) - int(nodes[0]) == len(nodes) - 1:
        s += nodes[0]
    else:
        np.take(nodes, s, out=s)
    start[:1] = True
    np.not_equal(k[1:], k[:-1], out=start[1:])
    prev[1:] = s[:-1]
    stored = len(prior.keys) > 0
    if stored:
        uniq = k[start]
        p_first = sorted_lookup(uniq, prior.keys, prior.first)
        first = np.where(p_first >= 0, p_first, s[start]).astype(s.dtype, copy=False)
        prev[start] = sorted_lookup(uniq, prior.keys, prior.last)  # -1 when the bucket is new
    else:  # from scratch: nothing stored to look up
        first = s[start]
        prev[start] = -1
    np.cumsum(start, out=grp)
    grp -= 1
    np.take(first, grp, out=anchor)
    if want_state:
        end = np.ones(n, bool)
        end[:-1] = start[1:]
        state = TextPrior(k[start], first, s[end])
    else:
        state = EMPTY_TEXT
    # Pair (s, anchor) for every member but the first, (s, prev) where prev is not the anchor.
    np.not_equal(anchor, s, out=m1)
    np.not_equal(prev, anchor, out=m2)
    if label is None:
        m2 &= prev >= 0
    else:
        # Labels in bucket order: one gather per band; anchors' and predecessors' labels then
        # come from it sequentially instead of a random gather per pair.
        np.take(label, s, out=lab)
        first_lab = np.take(label, first) if stored else lab[start]
        np.take(first_lab, grp, out=lab_a)
        lab_p[1:] = lab[:-1]
        if stored:
            before = prev[start]
            lab_p[start] = np.where(before >= 0, label[np.maximum(before, 0)], lab[start])
        else:
            lab_p[start] = lab[start]  # no predecessor: equal labels drop the pair
        m1 &= np.not_equal(lab, lab_a, out=start)  # start is not needed any more: reuse it
        m2 &= np.not_equal(lab, lab_p, out=start)
    n1, n2 = int(np.count_nonzero(m1)), int(np.count_nonzero(m2))
    ca, cb = work.pair_a[: n1 + n2], work.pair_b[: n1 + n2]
    np.compress(m1, s, out=ca[:n1])
    np.compress(m2, s, out=ca[n1:])
    np.compress(m1, anchor, out=cb[:n1])
    np.compress(m2, prev, out=cb[n1:])
    return ca, cb, state


def _node_labels(nodes: np.ndarray, label: np.ndarray) -> np.ndarray:
    first = int(nodes[0]) if len(nodes) else 0
    if len(nodes) and int(nodes[-1]) - first == len(nodes) - 1:
        return label[first : first + len(nodes)]  # consecutive nodes: a view
    return label[nodes]


def _pack_unsettled(keys: np.ndarray, node_label: np.ndarray, work: Scratch) -> int:
    """Pack (key, position) into ``work.packed`` for the entries whose bucket may hold more
    than one component label, and return their count; the other buckets give no pair."""
    pos, k, lab = work.positions[: len(keys)], keys, node_label
    for mixer, load in SLOT_ROUNDS:
        m = len(k)
        bits = max(1, (load * m - 1).bit_length())
        hashed, seen, clash = work.slot[:m], work.slot_seen[:m], work.slot_flag[:m]
        np.multiply(k.view(np.uint64), mixer, out=hashed)
        np.right_shift(hashed, np.uint64(64 - bits), out=hashed)
        slot = hashed.view(np.intp)
        table, mixed = work.slot_label[: 1 << bits], work.slot_mixed[: 1 << bits]
        table[slot] = lab  # one label per slot survives; any other in the slot differs from it
        np.take(table, slot, out=seen)
        np.not_equal(seen, lab, out=clash)
        mixed.fill(False)
        mixed[slot[clash]] = True
        np.take(mixed, slot, out=clash)
        keep = np.flatnonzero(clash)  # whole buckets: a bucket's entries share a slot
        pos, k, lab = pos[keep], k[keep], lab[keep]
    np.bitwise_or(k, pos, out=work.packed[: len(k)])
    return len(k)


# --- the rule, stated plainly --------------------------------------------------------------


def text_rule(
    nodes: Sequence[int], keys: Sequence[int], first: dict[int, int], last: dict[int, int]
) -> set[tuple[int, int]]:
    """One band's candidate pairs: in processing order, each member meets its bucket's first
    member and the member just before it (``first``/``last``: stored buckets)."""
    first, last, out = dict(first), dict(last), set()
    for node, key in zip(nodes, keys, strict=True):
        if key in first:
            out.add((node, first[key]))
            if last[key] != first[key]:
                out.add((node, last[key]))
        else:
            first[key] = node
        last[key] = node
    return out
