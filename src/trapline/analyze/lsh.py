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
(``trapline.analyze.graph``). One band's text pairs are ``trapline.analyze.text_links``.
``cluster_rule`` at the end (with ``text_rule``, ``url_rule``) states the rule in plain Python:
the executable specification the tests hold the array code to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from trapline.analyze.graph import index_dtype, merge_edges, union_find_roots
from trapline.analyze.heap import reusing_freed_memory
from trapline.analyze.text_links import (
    EMPTY_TEXT,
    Scratch,
    TextPrior,
    text_candidates,
    text_rule,
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
class LinkResult:
    """The partition found, as an edge from each non-root local node to its root (``a`` ->
    ``b``; the root is the component's smallest node), and the bucket state to store."""

    a: np.ndarray
    b: np.ndarray
    text_state: list[TextPrior]  # one per band
    url_state: UrlPrior
    candidates: int


@reusing_freed_memory()  # freed arrays are kept for the next band (``analyze.heap``)
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
