"""The link rule's array code equals its plain-Python definition (docs/campaigns.md, Link rule).

``text_candidates`` and ``url_candidates`` are vectorised for speed (packed sorts, int32 nodes,
labels gathered in bucket order); these tests run them against the dict-based statement of the
rule kept beside them (``text_rule``, ``url_rule``, ``union_find_roots``, ``cluster_rule``) on
random buckets, with and without stored state, and end to end on planted near-duplicates.
"""

from __future__ import annotations

import numpy as np
import pytest

from trapline.analyze.graph import components, merge_edges, union_find_roots
from trapline.analyze.lsh import ClusterParams, cluster_matrix, cluster_rule
from trapline.analyze.text_links import EMPTY_TEXT, TextPrior, text_candidates, text_rule
from trapline.analyze.url_links import EMPTY_URL, UrlPrior, _grouped, url_candidates, url_rule
from trapline.fingerprint.minhash import KEY_FREE_BITS

_MIX_INVERSE = pow(0x9E3779B97F4A7C15, -1, 1 << 64)


def _pairs(a: np.ndarray, b: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(a.tolist(), b.tolist(), strict=True))


@pytest.mark.parametrize("seed", range(6))
def test_text_candidates_follow_the_rule_from_scratch_and_with_stored_buckets(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_old, n_new = 40, 400
    nodes = np.arange(n_old, n_old + n_new, dtype=np.int32)
    if seed % 2:  # a batch whose nodes are not consecutive takes the gather path
        nodes = np.sort(rng.choice(np.arange(n_old, 5 * n_new), n_new, replace=False))
        nodes = nodes.astype(np.int32)
    keys = rng.integers(0, 60, n_new).astype(np.int64) << KEY_FREE_BITS
    a, b, _ = text_candidates(nodes, keys, EMPTY_TEXT)
    assert a.size > 0
    assert _pairs(a, b) == text_rule(nodes.tolist(), keys.tolist(), {}, {})
    # Stored buckets: a third of the keys were seen before, with first/last among old nodes.
    stored = np.unique(keys)[::3]
    first = rng.integers(0, n_old // 2, len(stored))
    last = first + rng.integers(0, n_old // 2, len(stored))
    prior = TextPrior(stored, first.astype(np.int32), last.astype(np.int32))
    a, b, state = text_candidates(nodes, keys, prior)
    expected = text_rule(
        nodes.tolist(),
        keys.tolist(),
        dict(zip(stored.tolist(), first.tolist(), strict=True)),
        dict(zip(stored.tolist(), last.tolist(), strict=True)),
    )
    assert _pairs(a, b) == expected
    # The state is each touched bucket's first and last member, old first members kept.
    want_first = dict(zip(stored.tolist(), first.tolist(), strict=True))
    want_last: dict[int, int] = {}
    for node, key in zip(nodes.tolist(), keys.tolist(), strict=True):
        want_first.setdefault(key, node)
        want_last[key] = node
    got = zip(state.keys.tolist(), state.first.tolist(), state.last.tolist(), strict=True)
    assert {k: (f, la) for k, f, la in got} == {k: (want_first[k], want_last[k]) for k in want_last}


@pytest.mark.parametrize("seed", range(4))
def test_labels_only_drop_pairs_already_in_one_component(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = 500
    nodes = np.arange(n, dtype=np.int32)
    keys = rng.integers(0, 40, n).astype(np.int64) << KEY_FREE_BITS
    label = rng.integers(0, 25, n).astype(np.int32)  # 25 components
    all_pairs = _pairs(*text_candidates(nodes, keys, EMPTY_TEXT)[:2])
    kept = _pairs(*text_candidates(nodes, keys, EMPTY_TEXT, label=label)[:2])
    assert kept == {(x, y) for x, y in all_pairs if label[x] != label[y]}
    assert len(kept) < len(all_pairs)


@pytest.mark.parametrize("seed", range(4))
def test_skipping_settled_buckets_keeps_every_pair_across_components(seed: int) -> None:
    """Buckets whose members share one label are dropped before the sort; whole buckets only,
    so every remaining member keeps its anchor and predecessor. Few labels and many buckets
    make hash slots shared by buckets of different labels (the filter's second round)."""
    rng = np.random.default_rng(500 + seed)
    n = 20_000
    nodes = np.arange(7, 7 + n, dtype=np.int32)
    buckets = rng.integers(-(1 << 42), 1 << 42, 6000) << KEY_FREE_BITS
    keys = buckets[rng.integers(0, len(buckets), n)]
    # Most buckets settled (one label per bucket), some mixed.
    label = np.zeros(7 + n, np.int32)
    label[nodes] = (keys >> KEY_FREE_BITS) % 300
    mixed = rng.random(n) < 0.05
    label[nodes[mixed]] = rng.integers(0, 300, int(mixed.sum()))
    a, b, _ = text_candidates(nodes, keys, EMPTY_TEXT, label=label, want_state=False)
    fast = _pairs(
        *text_candidates(nodes, keys, EMPTY_TEXT, label=label, want_state=False, skip_settled=True)[
            :2
        ]
    )
    expected = {
        (x, y) for x, y in text_rule(nodes.tolist(), keys.tolist(), {}, {}) if label[x] != label[y]
    }
    assert fast == _pairs(a, b) == expected
    assert len(expected) > 100


@pytest.mark.parametrize("seed", range(4))
def test_url_candidates_follow_the_rule(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    n = 600
    nodes = np.sort(rng.integers(50, 400, n)).astype(np.int32)  # a message can have two keys
    templates = rng.integers(-(1 << 62), 1 << 62, 30) & ~np.int64((1 << 20) - 1)
    keys = templates[rng.integers(0, 30, n)] | rng.integers(100, 104, n)  # period in low bits
    a, b, state = url_candidates(nodes, keys, EMPTY_URL)
    assert _pairs(a, b) == url_rule(nodes.tolist(), keys.tolist(), {})
    assert np.all(np.diff(state.keys) > 0)
    stored = np.unique(keys)[::4]
    anchors = rng.integers(0, 50, len(stored)).astype(np.int32)
    a, b, _ = url_candidates(nodes, keys, UrlPrior(stored, anchors))
    expected = url_rule(
        nodes.tolist(), keys.tolist(), dict(zip(stored.tolist(), anchors.tolist(), strict=True))
    )
    assert _pairs(a, b) == expected


def test_url_keys_whose_mix_collides_are_still_told_apart() -> None:
    # key * MIX for 0 and for MIX's inverse differ by 1: the same 43-bit group, different keys.
    inverse = np.array([_MIX_INVERSE], np.uint64).view(np.int64)[0]
    keys = np.array([0, inverse, 0, inverse, 7 << 30], np.int64)
    order, grouped = _grouped(keys)
    assert grouped.tolist() == sorted(keys.tolist())
    assert order.tolist() == np.argsort(keys, kind="stable").tolist()
    nodes = np.arange(len(keys), dtype=np.int32)
    a, b, _ = url_candidates(nodes, keys, EMPTY_URL)
    assert _pairs(a, b) == {(2, 0), (3, 1)}


@pytest.mark.parametrize("seed", range(5))
def test_components_and_merges_giveunion_find_roots(seed: int) -> None:
    rng = np.random.default_rng(300 + seed)
    n = 300
    a = rng.integers(0, n, 220)
    b = rng.integers(0, n, 220)
    want = union_find_roots(n, a.tolist(), b.tolist())
    assert components(n, a, b).tolist() == want
    # The same edges in three instalments, merged into the running labels.
    label = np.arange(n, dtype=np.int32)
    for part in np.array_split(np.arange(len(a)), 3):
        label = merge_edges(label, a[part], b[part])
    assert label.tolist() == want


@pytest.mark.parametrize("seed", range(3))
def test_cluster_matrix_equals_the_plain_rule_end_to_end(seed: int) -> None:
    """Families of near-duplicate signatures (some values changed per copy), some empty texts,
    shared URL templates in nearby and distant periods: the fast clustering (merge schedule,
    label-dropped pairs, sorted verification) gives exactly the plain rule's roots."""
    rng = np.random.default_rng(400 + seed)
    n, families = 3000, 60
    base = rng.integers(0, 2**32 - 1, (families, 128), dtype=np.uint64).astype(np.uint32)
    family = rng.integers(0, families, n)
    sig = base[family].copy()
    noise = rng.random((n, 128)) < rng.uniform(0.0, 0.7, (n, 1))  # from exact copies to strangers
    sig[noise] = rng.integers(0, 2**32 - 1, int(noise.sum()), dtype=np.uint64).astype(np.uint32)
    sig[rng.random(n) < 0.02] = np.iinfo(np.uint32).max  # documents without text
    times = rng.integers(0, 40 * 86400, n).astype(np.int64)
    times[rng.random(n) < 0.05] = -1  # unknown time: no URL period
    pool = rng.integers(0, 1 << 62, 40)  # tracking-URL templates shared across messages
    templates = [
        [int(t) for t in pool[rng.integers(0, 40, rng.integers(1, 3))]]
        if rng.random() < 0.3
        else []
        for _ in range(n)
    ]
    params = ClusterParams.from_settings({})
    fast = cluster_matrix(sig, times, templates, params)
    assert fast.tolist() == cluster_rule(sig, times, templates, params)
    assert len(set(fast.tolist())) < n - families  # the planted families did join
