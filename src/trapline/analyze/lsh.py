"""Candidate links between messages: LSH banding on MinHash plus URL templates in a time window.

The link rule is defined by processing order (``seq``, the order messages were fingerprinted),
so that running it in pieces gives exactly the links of one run over everything:

* text: in every LSH bucket (one band's key), each message is checked against the bucket's
  FIRST member and the member just BEFORE it; the pair links when the estimated Jaccard is at
  least ``threshold``. A bucket's state is two numbers (first, last), stored between runs.
* URL template: each (template, period) group has an anchor, its first member; a message links
  to the anchors of its own and the two adjacent periods that came before it
  (``trapline.analyze.url_links``).

Linking to the first and previous member (not all pairs) keeps the work linear in the number
of messages, however large a bucket grows; transitivity comes from connected components
(``trapline.analyze.graph``). ``text_rule`` and ``cluster_rule`` at the end state the rule in
plain Python: the executable specification the tests hold the array code to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trapline.analyze.graph import (
    index_dtype,
    merge_edges,
    sorted_lookup,
    union_find_roots,
)
from trapline.analyze.url_links import (
    EMPTY_URL,
    UrlPrior,
    url_candidates,
    url_keys,
    url_rule,
)
from trapline.config import SettingsView, setting
from trapline.errors import ConfigError
from trapline.fingerprint.minhash import (
    EMPTY,
    KEY_FREE_BITS,
    NUM_PERM,
    band_keys_by_band,
    equal_counts,
    is_empty,
)

# Bands after which the links found so far are merged into the component labels. Early and
# then doubling: once most links are known, later bands' candidates mostly fall inside one
# component and are dropped before verification, while each merge stays cheap.
MERGE_AFTER_BANDS = frozenset({0, 1, 3, 7, 15, 23})
# Candidate lists longer than this are sorted by node before verification, so the signature
# rows are read front to back; shorter ones are not worth the sort.
VERIFY_IN_ORDER_ABOVE = 4096
# First band whose settled buckets are dropped before the sort: until a few merges have joined
# the large campaigns most buckets are still mixed, and the filter costs more than it saves.
SKIP_SETTLED_FROM_BAND = 4
# Rounds of the settled-bucket filter: (odd multiplier hashing a band key to a slot, slots per
# entry). A bucket sharing a slot with another component's bucket survives a round, rarely two;
# the first round's table is kept small because a table past the L2 cache costs more than the
# extra survivors it saves.
SLOT_ROUNDS = ((np.uint64(0x9E3779B97F4A7C15), 1), (np.uint64(0xC2B2AE3D27D4EB4F), 2))


@dataclass(slots=True, frozen=True)
class ClusterParams(SettingsView):
    """Thresholds (``campaign_*`` settings); see docs/campaigns.md for the S-curve these give.
    ``ClusterParams.from_settings({})`` is the defaults."""

    threshold: float = setting("campaign_jaccard")  # estimated Jaccard: one template
    bands: int = setting("campaign_lsh_bands")
    rows: int = setting("campaign_lsh_rows")  # bands x rows MinHash values are used
    url_period_days: float = setting("campaign_url_window_days")

    def __post_init__(self) -> None:
        if self.bands * self.rows > NUM_PERM or not 0 < self.threshold <= 1:
            raise ConfigError(
                f"campaign_lsh_bands x campaign_lsh_rows must be <= {NUM_PERM} and "
                "campaign_jaccard in (0, 1]; fix trapline.toml"
            )

    def key(self) -> str:
        return f"t={self.threshold};b={self.bands};r={self.rows};p={self.url_period_days}"


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
    packed = work.packed[:n]
    s, grp, anchor, prev = work.member[:n], work.group[:n], work.anchor[:n], work.prev[:n]
    lab, lab_a, lab_p = work.label[:n], work.label_anchor[:n], work.label_prev[:n]
    start, m1, m2 = work.starts[:n], work.to_anchor[:n], work.to_prev[:n]
    mask = (1 << KEY_FREE_BITS) - 1
    if n <= mask:
        if skip_settled and label is not None and not want_state and not len(prior.keys):
            first_node = int(nodes[0]) if n else 0
            consecutive = n and int(nodes[-1]) - first_node == n - 1
            node_label = label[first_node : first_node + n] if consecutive else label[nodes]
            n = _pack_unsettled(keys, node_label, work)
            packed, s, grp, anchor, prev = (a[:n] for a in (packed, s, grp, anchor, prev))
            lab, lab_a, lab_p = work.label[:n], work.label_anchor[:n], work.label_prev[:n]
            start, m1, m2 = work.starts[:n], work.to_anchor[:n], work.to_prev[:n]
        else:
            # Positions ride in the zeroed low bits: one value sort orders by (key, position).
            np.bitwise_or(keys, work.positions[:n], out=packed)
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


@dataclass(slots=True, frozen=True)
class LinkResult:
    """The partition found, as an edge from each non-root local node to its root (``a`` ->
    ``b``; the root is the component's smallest node), and the bucket state to store."""

    a: np.ndarray
    b: np.ndarray
    text_state: list[TextPrior]  # one per band
    url_state: UrlPrior
    candidates: int


def link(
    local_seq: np.ndarray,
    sig: np.ndarray,
    new_rows: np.ndarray,
    url_rows: np.ndarray,
    url_key: np.ndarray,
    params: ClusterParams,
    text_prior: Callable[[int], TextPrior] = lambda band: EMPTY_TEXT,
    url_prior: UrlPrior = EMPTY_URL,
    *,
    want_state: bool = True,
) -> LinkResult:
    """Verified links among ``local_seq`` nodes (ascending; older stored members first).

    ``sig`` holds a MinHash row per local node; ``new_rows`` are the nodes being added (their
    seqs are the largest). ``text_prior(band)`` returns the stored buckets a band may hit.
    Everything runs on local node indices (processing order is the same as seq order); seqs
    appear only in the state, which is what gets stored.
    """
    n = len(local_seq)
    idx = index_dtype(n)
    dense = n == 0 or (local_seq[0] == 0 and local_seq[-1] == n - 1)

    def local(seqs: np.ndarray) -> np.ndarray:
        return (seqs if dense else np.searchsorted(local_seq, seqs)).astype(idx, copy=False)

    def seq_of(nodes: np.ndarray) -> np.ndarray:
        return nodes.astype(np.int64) if dense else local_seq[nodes]

    localised: dict[int, tuple[TextPrior, TextPrior]] = {}

    def local_prior(band: int) -> TextPrior:
        prior = text_prior(band)
        if not len(prior.keys):
            return prior
        if id(prior) not in localised:  # one prior object often serves every band
            converted = TextPrior(prior.keys, local(prior.first), local(prior.last))
            localised[id(prior)] = (prior, converted)
        return localised[id(prior)][1]

    rows = np.asarray(new_rows)
    if len(rows) and int(rows[-1]) - int(rows[0]) == len(rows) - 1:
        new_sig = sig[int(rows[0]) : int(rows[-1]) + 1]  # consecutive rows: a view, no copy
    else:
        new_sig = sig[rows]
    live = np.ones(len(rows), bool)
    maybe = np.flatnonzero(new_sig[:, 0] == EMPTY)  # an empty row is EMPTY everywhere
    live[maybe] = ~is_empty(new_sig[maybe])
    keys = band_keys_by_band(
        new_sig[live] if not live.all() else new_sig, params.bands, params.rows
    )
    live_nodes = np.asarray(new_rows, dtype=idx)[live]
    label = np.arange(n, dtype=idx)
    a_all: list[np.ndarray] = []
    b_all: list[np.ndarray] = []
    states: list[TextPrior] = []
    candidates = 0
    work = Scratch.sized(len(live_nodes), idx)
    need = int(np.ceil(params.threshold * sig.shape[1] - 1e-9))  # equal values for a link
    for band in range(params.bands):
        # Before the first merge every node is its own component: labels would drop nothing.
        known = label if band > min(MERGE_AFTER_BANDS) else None
        la, lb, state = text_candidates(
            live_nodes,
            keys[band],
            local_prior(band),
            work,
            label=known,
            want_state=want_state,
            skip_settled=band >= SKIP_SETTLED_FROM_BAND,
        )
        if want_state:
            states.append(TextPrior(state.keys, seq_of(state.first), seq_of(state.last)))
        candidates += len(la)
        if idx is np.int32 and len(la) > VERIFY_IN_ORDER_ABOVE:
            # Verify in node order: rows of ``sig`` are then read front to back, not at random.
            packed = la.astype(np.int64) << 32
            packed |= lb
            packed.sort()
            la = (packed >> 32).astype(idx)
            lb = packed.astype(idx)  # the low 32 bits
        ok = equal_counts(sig, la, lb) >= need
        a_all.append(la[ok])
        b_all.append(lb[ok])
        if band in MERGE_AFTER_BANDS:
            label = merge_edges(label, np.concatenate(a_all), np.concatenate(b_all))
            a_all, b_all = [], []
    u_prior = url_prior
    if len(url_prior.keys):
        u_prior = UrlPrior(url_prior.keys, local(url_prior.anchor))
    ua, ub, ustate = url_candidates(np.asarray(url_rows, dtype=idx), url_key, u_prior)
    label = merge_edges(label, np.concatenate((*a_all, ua)), np.concatenate((*b_all, ub)))
    # The partition as one edge per non-root node: at most n edges, however many links.
    moved = np.flatnonzero(label != np.arange(n, dtype=idx)).astype(idx)
    return LinkResult(
        moved,
        label[moved],
        states,
        UrlPrior(ustate.keys, seq_of(ustate.anchor)),
        candidates + len(ua),
    )


def cluster_matrix(
    sig: np.ndarray,
    times_s: np.ndarray,
    template_hashes: Sequence[Sequence[int]],
    params: ClusterParams | None = None,
) -> np.ndarray:
    """From-scratch clustering of rows in order: each row's campaign root row index."""
    params = params or ClusterParams.from_settings({})
    n = sig.shape[0]
    seq = np.arange(n, dtype=np.int64)
    url_rows, ukey = url_keys(template_hashes, times_s, params.url_period_days)
    result = link(seq, sig, seq, url_rows, ukey, params, want_state=False)
    root = np.arange(n, dtype=np.int64)
    root[result.a] = result.b  # link's edges go from each non-root node to its root
    return root


# --- the rule, stated plainly ---------------------------------------------------------------
# The executable specification of what the array code above computes (tests hold it to this on
# random and real signatures). Slow and obvious on purpose: dicts, loops, a union-find.


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


def cluster_rule(
    sig: np.ndarray,
    times_s: np.ndarray,
    template_hashes: Sequence[Sequence[int]],
    params: ClusterParams,
) -> list[int]:
    """``cluster_matrix`` stated plainly: text pairs of every band that agree on at least
    ``threshold`` of the MinHash values, plus every URL-template pair, joined transitively."""
    need = int(np.ceil(params.threshold * sig.shape[1] - 1e-9))
    live = [i for i in range(sig.shape[0]) if not is_empty(sig[i : i + 1])[0]]
    keys = band_keys_by_band(sig[live], params.bands, params.rows) if live else None
    a: list[int] = []
    b: list[int] = []
    for band in range(params.bands if keys is not None else 0):
        assert keys is not None
        for x, y in text_rule(live, keys[band].tolist(), {}, {}):
            if int(np.count_nonzero(sig[x] == sig[y])) >= need:
                a.append(x)
                b.append(y)
    rows, ukeys = url_keys(template_hashes, times_s, params.url_period_days)
    for x, y in url_rule(rows.tolist(), ukeys.tolist(), {}):
        a.append(x)
        b.append(y)
    return union_find_roots(sig.shape[0], a, b)
