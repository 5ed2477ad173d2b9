"""The link rule's array code equals its plain-Python definition (docs/campaigns.md, Link rule).

``text_candidates`` and ``url_candidates`` are vectorised for speed (packed sorts, int32 nodes,
labels gathered in bucket order); these tests run them against a dict-based statement of the
rule on random buckets, with and without stored state, and check the graph helpers against a
union-find.
"""

from __future__ import annotations

import numpy as np
import pytest

from trapline.analyze.lsh import (
    EMPTY_TEXT,
    EMPTY_URL,
    TextPrior,
    UrlPrior,
    _grouped,
    components,
    merge_edges,
    text_candidates,
    url_candidates,
)
from trapline.fingerprint.minhash import KEY_FREE_BITS

_MIX_INVERSE = pow(0x9E3779B97F4A7C15, -1, 1 << 64)


def _pairs(a: np.ndarray, b: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(a.tolist(), b.tolist(), strict=True))


def _text_rule(
    nodes: list[int], keys: list[int], first: dict[int, int], last: dict[int, int]
) -> set[tuple[int, int]]:
    """Each member meets its bucket's first member and the member just before it."""
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


def _url_rule(nodes: list[int], keys: list[int], anchors: dict[int, int]) -> set[tuple[int, int]]:
    """Each key's anchor is its first member ever; members meet the anchors of key-1, key, key+1
    that came before them."""
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


def _union_find_roots(n: int, a: list[int], b: list[int]) -> list[int]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a, b, strict=True):
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    return [find(x) for x in range(n)]


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
    assert _pairs(a, b) == _text_rule(nodes.tolist(), keys.tolist(), {}, {})
    # Stored buckets: a third of the keys were seen before, with first/last among old nodes.
    stored = np.unique(keys)[::3]
    first = rng.integers(0, n_old // 2, len(stored))
    last = first + rng.integers(0, n_old // 2, len(stored))
    prior = TextPrior(stored, first.astype(np.int32), last.astype(np.int32))
    a, b, state = text_candidates(nodes, keys, prior)
    expected = _text_rule(
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
def test_url_candidates_follow_the_rule(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    n = 600
    nodes = np.sort(rng.integers(50, 400, n)).astype(np.int32)  # a message can have two keys
    templates = rng.integers(-(1 << 62), 1 << 62, 30) & ~np.int64((1 << 20) - 1)
    keys = templates[rng.integers(0, 30, n)] | rng.integers(100, 104, n)  # period in low bits
    a, b, state = url_candidates(nodes, keys, EMPTY_URL)
    assert _pairs(a, b) == _url_rule(nodes.tolist(), keys.tolist(), {})
    assert np.all(np.diff(state.keys) > 0)
    stored = np.unique(keys)[::4]
    anchors = rng.integers(0, 50, len(stored)).astype(np.int32)
    a, b, _ = url_candidates(nodes, keys, UrlPrior(stored, anchors))
    expected = _url_rule(
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
def test_components_and_merges_give_union_find_roots(seed: int) -> None:
    rng = np.random.default_rng(300 + seed)
    n = 300
    a = rng.integers(0, n, 220)
    b = rng.integers(0, n, 220)
    want = _union_find_roots(n, a.tolist(), b.tolist())
    assert components(n, a, b).tolist() == want
    # The same edges in three instalments, merged into the running labels.
    label = np.arange(n, dtype=np.int32)
    for part in np.array_split(np.arange(len(a)), 3):
        label = merge_edges(label, a[part], b[part])
    assert label.tolist() == want
