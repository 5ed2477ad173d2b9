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

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from trapline.fingerprint.minhash import KEY_FREE_BITS, band_keys_by_band, equal_counts, is_empty

_PERIOD_BITS = 20  # periods since 1970 fit easily: 2^20 x 3 days is 8,600 years


@dataclass(slots=True, frozen=True)
class ClusterParams:
    """Thresholds; see docs/campaigns.md for the S-curve these give."""

    threshold: float = 0.45  # estimated Jaccard at which two texts are one template
    bands: int = 32
    rows: int = 4  # 32 x 4 = 128 permutations; 50% point of the S-curve at J ~ 0.42
    url_period_days: float = 3.0

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


def _lookup(keys: np.ndarray, table: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` for ``keys`` found in sorted ``table``, else -1."""
    if len(table) == 0:
        return np.full(len(keys), -1, np.int64)
    pos = np.minimum(np.searchsorted(table, keys), len(table) - 1)
    return np.where(table[pos] == keys, values[pos], -1)


class _Work:
    """Arrays reused by every band of one run: fresh 8 MB arrays cost page faults that made a
    million messages 1.6x slower per message than 100,000 (measured); reuse keeps it flat."""

    def __init__(self, n: int) -> None:
        self.arange = np.arange(n, dtype=np.int64)
        self.i64 = [np.empty(n, np.int64) for _ in range(5)]
        self.pairs = [np.empty(2 * n, np.int64) for _ in range(2)]
        self.bools = [np.empty(max(2 * n, 1), bool) for _ in range(3)]


def text_candidates(
    seq: np.ndarray,
    keys: np.ndarray,
    prior: TextPrior,
    work: _Work | None = None,
    *,
    want_state: bool = True,
) -> tuple[np.ndarray, np.ndarray, TextPrior]:
    """Candidate pairs (seq, seq) for one set of bucket keys; ``seq`` ascending. New state too.

    With ``work`` the returned pair arrays are views into its buffers, valid until next call.
    """
    n = len(keys)
    work = work if work is not None and len(work.arange) >= n else _Work(n)
    packed, s, grp, anchor, prev = (a[:n] for a in work.i64)
    start, m1, m2 = (b[:n] for b in work.bools)
    # A batch's seqs are usually consecutive: then seq[i] = seq[0] + i and no random gather.
    contiguous = n > 0 and int(seq[-1]) - int(seq[0]) == n - 1
    if n < (1 << KEY_FREE_BITS):
        # Positions ride in the zeroed low bits: one value sort orders by (key, position).
        np.bitwise_or(keys, work.arange[:n], out=packed)
        packed.sort()
        np.bitwise_and(packed, (1 << KEY_FREE_BITS) - 1, out=s)
        packed &= ~np.int64((1 << KEY_FREE_BITS) - 1)
        k = packed
    else:
        order = np.argsort(keys, kind="stable")  # stable: seq order kept inside a bucket
        s[:] = order
        k = keys[order]
    if contiguous:
        s += seq[0]
    else:
        np.take(seq, s, out=s)
    start[:1] = True
    np.not_equal(k[1:], k[:-1], out=start[1:])
    prev[1:] = s[:-1]
    if len(prior.keys):
        uniq = k[start]
        p_first = _lookup(uniq, prior.keys, prior.first)
        first = np.where(p_first >= 0, p_first, s[start])
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
    np.not_equal(anchor, s, out=m1)
    np.greater_equal(prev, 0, out=m2)
    np.not_equal(prev, anchor, out=start)  # start is not needed any more: reuse it
    m2 &= start
    n1, n2 = int(np.count_nonzero(m1)), int(np.count_nonzero(m2))
    ca, cb = (b[: n1 + n2] for b in work.pairs)
    np.compress(m1, s, out=ca[:n1])
    np.compress(m2, s, out=ca[n1:])
    np.compress(m1, anchor, out=cb[:n1])
    np.compress(m2, prev, out=cb[n1:])
    return ca, cb, state


def url_candidates(
    seq: np.ndarray, keys: np.ndarray, prior: UrlPrior
) -> tuple[np.ndarray, np.ndarray, UrlPrior]:
    """Pairs (seq, anchor seq) for URL-template keys of new messages; new anchors too."""
    order = np.argsort(keys)  # order inside a group does not matter: anchors are minima
    k, s = keys[order], seq[order]
    start = np.ones(len(k), bool)
    start[1:] = k[1:] != k[:-1]
    group = np.cumsum(start) - 1
    uniq = k[start]
    first_new = np.minimum.reduceat(s, np.flatnonzero(start)) if len(s) else s
    if len(prior.keys):
        p_anchor = _lookup(uniq, prior.keys, prior.anchor)
        fresh = p_anchor < 0
        table_keys = np.concatenate((prior.keys, uniq[fresh]))
        table_anchor = np.concatenate((prior.anchor, first_new[fresh]))
        order2 = np.argsort(table_keys, kind="stable")
        table_keys, table_anchor = table_keys[order2], table_anchor[order2]
        anchors = np.where(fresh, first_new, p_anchor)
    else:
        table_keys, table_anchor, anchors = uniq, first_new, first_new
    a_out, b_out = [], []
    for delta in (-1, 0, 1):
        # Looked up once per group, not per message: groups can be large.
        per_group = anchors if delta == 0 else _lookup(uniq + delta, table_keys, table_anchor)
        anchor = per_group[group]
        ok = (anchor >= 0) & (anchor < s)
        a_out.append(s[ok])
        b_out.append(anchor[ok])
    return np.concatenate(a_out), np.concatenate(b_out), UrlPrior(uniq, anchors)


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root (smallest index) of each node's connected component, for ``n`` nodes and edges."""
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    root = np.full(labels.max() + 1 if n else 0, n, np.int64)
    np.minimum.at(root, labels, np.arange(n))
    return root[labels]


@dataclass(slots=True, frozen=True)
class LinkResult:
    """Verified links (as local node indices) and the bucket state to store."""

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
    """
    # From scratch, local node i has seq i: skip the seq -> node lookups (a third of the time).
    n = len(local_seq)
    dense = n == 0 or (local_seq[0] == 0 and local_seq[-1] == n - 1)

    def local(seqs: np.ndarray) -> np.ndarray:
        return seqs if dense else np.searchsorted(local_seq, seqs)

    n = len(local_seq)
    new_seq = local_seq[new_rows]
    new_sig = sig[new_rows]
    live = ~is_empty(new_sig)
    keys = band_keys_by_band(
        new_sig[live] if not live.all() else new_sig, params.bands, params.rows
    )
    live_seq = new_seq[live]
    label = np.arange(n)
    a_all: list[np.ndarray] = []
    b_all: list[np.ndarray] = []
    states: list[TextPrior] = []
    candidates = 0
    work = _Work(len(live_seq))
    need = int(np.ceil(params.threshold * sig.shape[1] - 1e-9))  # equal values for a link
    la_lab, lb_lab = (np.empty(2 * len(live_seq), np.int64) for _ in range(2))
    todo_buf = np.empty(2 * len(live_seq), bool)
    for band in range(params.bands):
        bk = keys[band]
        ca, cb, state = text_candidates(live_seq, bk, text_prior(band), work, want_state=want_state)
        states.append(state)
        la, lb = local(ca), local(cb)
        # Pairs already in one component cannot change the partition: skip their check.
        c = len(la)
        todo = todo_buf[:c]
        np.not_equal(
            np.take(label, la, out=la_lab[:c]), np.take(label, lb, out=lb_lab[:c]), out=todo
        )
        la, lb = la[todo], lb[todo]
        candidates += len(la)
        ok = equal_counts(sig, la, lb) >= need
        a_all.append(la[ok])
        b_all.append(lb[ok])
        if band in (0, 1, 3, 7, 15, 23):  # early and often: later bands then verify little
            label = components(n, np.concatenate(a_all), np.concatenate(b_all))
            # Keep the components, not the edges: one edge per non-root node says the same
            # and keeps every later rebuild at most n edges.
            moved = np.flatnonzero(label != np.arange(n))
            a_all, b_all = [moved], [label[moved]]
    ua, ub, ustate = url_candidates(local_seq[url_rows], url_key, url_prior)
    a_all.append(local(ua))
    b_all.append(local(ub))
    return LinkResult(
        np.concatenate(a_all), np.concatenate(b_all), states, ustate, candidates + len(ua)
    )


def cluster_matrix(
    sig: np.ndarray,
    times_s: np.ndarray,
    template_hashes: Sequence[Sequence[int]],
    params: ClusterParams | None = None,
) -> np.ndarray:
    """From-scratch clustering of rows in order: each row's campaign root row index."""
    params = params or ClusterParams()
    n = sig.shape[0]
    seq = np.arange(n, dtype=np.int64)
    url_rows, ukey = url_keys(template_hashes, times_s, params.url_period_days)
    result = link(seq, sig, seq, url_rows, ukey, params, want_state=False)
    return components(n, result.a, result.b)
