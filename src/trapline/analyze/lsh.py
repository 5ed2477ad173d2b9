"""Candidate links between messages: LSH banding on MinHash plus URL templates in a time window.

The link rule is defined by processing order (``seq``, the order messages were fingerprinted),
so that running it in pieces gives exactly the links of one run over everything:

* text: in every LSH bucket (one band's key), each message is checked against the bucket's
  FIRST member and the member just BEFORE it; the pair links when the estimated Jaccard is at
  least ``threshold``. A bucket's state is two numbers (first, last), stored between runs.
* URL template: each (template, period) group has an anchor, its first member; a message links
  to the anchors of its own and the two adjacent periods that came before it. So messages that
  share a tracking-URL template within about one to two periods join, with no verification.

Linking to the first and previous member (not all pairs) keeps the work linear in the number
of messages, however large a bucket grows; transitivity comes from connected components.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from trapline.config import SettingsView, setting
from trapline.errors import ConfigError
from trapline.fingerprint.minhash import (
    KEY_FREE_BITS,
    NUM_PERM,
    band_keys_by_band,
    equal_counts,
    is_empty,
)

_PERIOD_BITS = 20  # periods since 1970 fit easily: 2^20 x 3 days is 8,600 years


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


@dataclass(slots=True, frozen=True)
class UrlPrior:
    keys: np.ndarray  # int64, sorted
    anchor: np.ndarray  # int64 seq


EMPTY_TEXT = TextPrior(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
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


def _index_dtype(n: int) -> type[np.signedinteger[Any]]:
    """Node indices as int32 while they fit: half the bytes of every pass over them, and the
    label array of a million nodes stays in L2 cache (int64 look-ups there were 4x slower)."""
    return np.int32 if n < np.iinfo(np.int32).max else np.int64


def _lookup(keys: np.ndarray, table: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` for ``keys`` found in sorted ``table``, else -1."""
    if len(table) == 0:
        return np.full(len(keys), -1, values.dtype)
    pos = np.minimum(np.searchsorted(table, keys), len(table) - 1)
    return np.where(table[pos] == keys, values[pos], -1).astype(values.dtype, copy=False)


class _Work:
    """Arrays reused by every band of one run: fresh 8 MB arrays cost page faults that made a
    million messages 1.6x slower per message than 100,000 (measured); reuse keeps it flat."""

    def __init__(self, n: int, dtype: type[np.signedinteger[Any]]) -> None:
        self.arange = np.arange(n, dtype=np.int64)
        self.packed = np.empty(n, np.int64)
        self.idx = [np.empty(n, dtype) for _ in range(7)]
        self.pairs = [np.empty(2 * n, dtype) for _ in range(2)]
        self.bools = [np.empty(max(n, 1), bool) for _ in range(3)]


def text_candidates(
    nodes: np.ndarray,
    keys: np.ndarray,
    prior: TextPrior,
    work: _Work | None = None,
    *,
    label: np.ndarray | None = None,
    want_state: bool = True,
) -> tuple[np.ndarray, np.ndarray, TextPrior]:
    """Candidate pairs (node, node) for one band's bucket ``keys``; ``nodes`` ascending.

    ``nodes`` are node indices in processing order and ``prior`` names nodes the same way; the
    returned state does too. ``label`` (component label per node) leaves out pairs already in
    one component: they cannot change the partition. With ``work`` the pair arrays are views
    into its buffers, valid until the next call.
    """
    n = len(keys)
    if work is None or len(work.arange) < n:
        work = _Work(n, _index_dtype(int(nodes[-1]) + 1 if n else 0))
    packed = work.packed[:n]
    s, grp, anchor, prev, lab, lab_a, lab_p = (a[:n] for a in work.idx)
    start, m1, m2 = (b[:n] for b in work.bools)
    mask = (1 << KEY_FREE_BITS) - 1
    if n <= mask:
        # Positions ride in the zeroed low bits: one value sort orders by (key, position).
        np.bitwise_or(keys, work.arange[:n], out=packed)
        packed.sort()
        np.bitwise_and(packed, mask, out=s, casting="unsafe")
        packed &= ~np.int64(mask)
        k = packed
    else:
        order = np.argsort(keys, kind="stable")  # stable: processing order kept in a bucket
        s[:] = order
        k = keys[order]
    # A batch's nodes are usually consecutive: then nodes[i] = nodes[0] + i and no gather.
    if n and int(nodes[-1]) - int(nodes[0]) == n - 1:
        s += nodes[0]
    else:
        np.take(nodes, s, out=s)
    start[:1] = True
    np.not_equal(k[1:], k[:-1], out=start[1:])
    prev[1:] = s[:-1]
    stored = len(prior.keys) > 0
    if stored:
        uniq = k[start]
        p_first = _lookup(uniq, prior.keys, prior.first)
        first = np.where(p_first >= 0, p_first, s[start]).astype(s.dtype, copy=False)
        prev[start] = _lookup(uniq, prior.keys, prior.last)  # -1 when the bucket is new
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
        # come from it sequentially (a gather per pair was most of a million-message run).
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
    ca, cb = (b[: n1 + n2] for b in work.pairs)
    np.compress(m1, s, out=ca[:n1])
    np.compress(m2, s, out=ca[n1:])
    np.compress(m1, anchor, out=cb[:n1])
    np.compress(m2, prev, out=cb[n1:])
    return ca, cb, state


_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it is a bijection on 64 bits


def _grouped(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, sorted keys)``: positions ordered by key, ascending inside equal keys.

    URL keys use all 64 bits, so positions cannot ride in them as in ``text_candidates``; a
    stable argsort of a million keys was 100 ns each. Instead the keys are grouped by a 43-bit
    mix of themselves with the position packed below, sorted as plain values (7 ns each), then
    the (far fewer) distinct keys are sorted. A mixed-key collision (odds ~2^-43 per pair) is
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
        p_anchor = _lookup(uniq, prior.keys, prior.anchor)
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
            per_group = _lookup(uniq + delta, table_keys, table_anchor)
        anchor = per_group[group]
        ok = (anchor >= 0) & (anchor < s)
        a_out.append(s[ok])
        b_out.append(anchor[ok])
    return np.concatenate(a_out), np.concatenate(b_out), UrlPrior(uniq, anchors)


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root (smallest index) of each node's connected component, for ``n`` nodes and edges."""
    idx = _index_dtype(n)
    edges = (a.astype(idx, copy=False), b.astype(idx, copy=False))
    graph = coo_matrix((np.ones(len(a), np.int8), edges), shape=(n, n)).tocsr()
    count, labels = connected_components(graph, directed=False)
    # scipy labels components as it meets them scanning nodes 0..n-1, so label L's root is
    # where the running maximum first reaches L; checked, with the general way as fallback.
    rises = np.empty(n, bool)
    if n:
        top = np.maximum.accumulate(labels)
        rises[0] = True
        np.not_equal(top[1:], top[:-1], out=rises[1:])
    root = np.flatnonzero(rises).astype(idx)
    if len(root) != count:
        root = np.full(count, n, idx)
        np.minimum.at(root, labels, np.arange(n, dtype=idx))
    return root[labels]


def merge_edges(label: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``label`` (each node's root, the smallest node of its component) after adding edges.

    Only the roots the edges touch form the graph: after the first bands most links join
    components already found, so this is far less work than a rebuild over every node.
    """
    n = len(label)
    if not len(a):
        return label
    ra, rb = np.take(label, a), np.take(label, b)
    touched = np.zeros(n, bool)
    touched[ra] = True
    touched[rb] = True
    roots = np.flatnonzero(touched).astype(label.dtype)  # ascending, so index order = root order
    compact = np.cumsum(touched, dtype=label.dtype)
    compact -= 1
    joined = roots[components(len(roots), compact[ra], compact[rb])]
    changed = joined != roots
    if not changed.any():
        return label
    table = np.arange(n, dtype=label.dtype)
    table[roots[changed]] = joined[changed]
    return np.take(table, label)


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
    idx = _index_dtype(n)
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

    new_sig = sig[new_rows]
    live = ~is_empty(new_sig)
    keys = band_keys_by_band(
        new_sig[live] if not live.all() else new_sig, params.bands, params.rows
    )
    live_nodes = np.asarray(new_rows, dtype=idx)[live]
    label = np.arange(n, dtype=idx)
    a_all: list[np.ndarray] = []
    b_all: list[np.ndarray] = []
    states: list[TextPrior] = []
    candidates = 0
    work = _Work(len(live_nodes), idx)
    need = int(np.ceil(params.threshold * sig.shape[1] - 1e-9))  # equal values for a link
    for band in range(params.bands):
        la, lb, state = text_candidates(
            live_nodes, keys[band], local_prior(band), work, label=label, want_state=want_state
        )
        if want_state:
            states.append(TextPrior(state.keys, seq_of(state.first), seq_of(state.last)))
        candidates += len(la)
        if idx is np.int32 and len(la) > 4096:
            # Verify in node order: rows of ``sig`` are then read front to back, not at random
            # (a million rows are 512 MB; random row reads made each check ~40% slower).
            packed = la.astype(np.int64) << 32
            packed |= lb
            packed.sort()
            la = (packed >> 32).astype(idx)
            lb = packed.astype(idx)  # the low 32 bits
        ok = equal_counts(sig, la, lb) >= need
        a_all.append(la[ok])
        b_all.append(lb[ok])
        if band in (0, 1, 3, 7, 15, 23):  # early and often: later bands then verify little
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
