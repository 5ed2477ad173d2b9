"""Node helpers for campaign linking: index width, sorted-table look-ups, connected components.

``union_find_roots`` states plainly what ``components`` and ``merge_edges`` compute; the tests
hold the array code to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def index_dtype(n: int) -> type[np.signedinteger[Any]]:
    """Node indices as int32 while they fit: half the bytes of every pass over them, and the
    label array of a large run stays in cache."""
    return np.int32 if n < np.iinfo(np.int32).max else np.int64


def sorted_lookup(keys: np.ndarray, table: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` for ``keys`` found in sorted ``table``, else -1."""
    if len(table) == 0:
        return np.full(len(keys), -1, values.dtype)
    pos = np.minimum(np.searchsorted(table, keys), len(table) - 1)
    return np.where(table[pos] == keys, values[pos], -1).astype(values.dtype, copy=False)


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root (smallest index) of each node's connected component, for ``n`` nodes and edges."""
    idx = index_dtype(n)
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


def union_find_roots(n: int, a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Each node's component root (its smallest node) for edges ``a[k]``-``b[k]``."""
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
