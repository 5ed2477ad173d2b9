"""Change-point search on count series: the cost, the penalty and two exact searches.

Cost: counts are Poisson-like, so each series is first put through the Anscombe transform
``2 * sqrt(x + 3/8)``, which makes a Poisson count's variance about 1 whatever its level; the
squared-error (``l2``) cost on the transformed series is then the Gaussian likelihood a count
model needs, and a step from 40 to 13 a day weighs the same as one from 4,000 to 1,300 only in
proportion to its evidence. Real trap mail is burstier than Poisson, so the noise scale
``sigma`` is estimated from the series itself (median absolute deviation of first differences,
robust to the steps we look for) and never taken below the Poisson value 1.

Penalty: ``beta * sigma**2 * log(n)`` per change point, a BIC-style penalty on the noise the
data shows; ``beta`` (``changes_penalty_beta``) was chosen on data, see docs/timeline.md.

Searches: ``pelt`` is PELT (Killick et al. 2012) with O(1) segment costs from cumulative
sums; it returns what ``ruptures.Pelt(model="l2", jump=1)`` returns (tests hold it to that),
but in milliseconds instead of a minute for 2,000 hourly points. ``binseg_many`` is binary
segmentation run on many series at once in numpy, equal to ``ruptures.Binseg(model="l2")``
per series (tested); it serves per-group detection over thousands of groups.
"""

from __future__ import annotations

import numpy as np


def anscombe(counts: np.ndarray) -> np.ndarray:
    """Variance-stabilised counts: Poisson noise becomes roughly unit-variance Gaussian."""
    return 2.0 * np.sqrt(np.asarray(counts, np.float64) + 0.375)


def noise_sigma(z: np.ndarray) -> np.ndarray:
    """Robust noise scale of each row (or of a 1-d series), at least 1 (the Poisson value)."""
    z2 = np.atleast_2d(z)
    if z2.shape[1] < 3:
        return np.ones(z2.shape[0])
    diffs = np.diff(z2, axis=1)
    mad = np.median(np.abs(diffs - np.median(diffs, axis=1, keepdims=True)), axis=1)
    return np.maximum(1.0, mad / (0.6745 * np.sqrt(2.0)))


def penalty(z: np.ndarray, beta: float) -> np.ndarray:
    """``beta * sigma**2 * log(n)`` per row."""
    z2 = np.atleast_2d(z)
    return beta * noise_sigma(z2) ** 2 * np.log(max(2, z2.shape[1]))


def _sums(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s1 = np.concatenate(([0.0], np.cumsum(z)))
    s2 = np.concatenate(([0.0], np.cumsum(z * z)))
    return s1, s2


def pelt(z: np.ndarray, pen: float, min_size: int = 1) -> list[int]:
    """Breakpoints (segment ends, the last is ``len(z)``) minimising l2 cost + pen per segment."""
    z = np.asarray(z, np.float64)
    n = len(z)
    if n == 0:
        return []
    s1, s2 = _sums(z)
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    last = np.zeros(n + 1, np.int64)
    cands = np.array([0], np.int64)
    for t in range(min_size, n + 1):
        ok = cands[t - cands >= min_size]
        if ok.size == 0:
            cands = np.append(cands, t)
            continue
        length = t - ok
        seg = (s2[t] - s2[ok]) - (s1[t] - s1[ok]) ** 2 / length
        total = best[ok] + seg + pen
        j = int(np.argmin(total))
        best[t], last[t] = total[j], ok[j]
        waiting = cands[t - cands < min_size]
        # PELT pruning: a start that cannot beat best[t] + pen now never will.
        cands = np.concatenate((ok[total <= best[t] + pen], waiting, [t]))
    out = [n]
    while out[-1] > 0:
        out.append(int(last[out[-1]]))
    return sorted(out[:-1])


def binseg_many(z: np.ndarray, pen: np.ndarray, min_size: int = 1) -> list[list[int]]:
    """Binary segmentation of every row of ``z`` at once; breakpoints per row (last = n)."""
    z = np.atleast_2d(np.asarray(z, np.float64))
    rows, n = z.shape
    s1 = np.zeros((rows, n + 1))
    s2 = np.zeros((rows, n + 1))
    np.cumsum(z, axis=1, out=s1[:, 1:])
    np.cumsum(z * z, axis=1, out=s2[:, 1:])
    out: list[list[int]] = [[n] for _ in range(rows)]
    gs = np.arange(rows)
    starts = np.zeros(rows, np.int64)
    ends = np.full(rows, n, np.int64)
    pens = np.broadcast_to(np.asarray(pen, np.float64), (rows,))

    def cost(g: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (s2[g, b] - s2[g, a]) - (s1[g, b] - s1[g, a]) ** 2 / (b - a)

    while gs.size:
        m = np.maximum(0, ends - starts - 2 * min_size + 1)
        live = m > 0
        gs, starts, ends, m = gs[live], starts[live], ends[live], m[live]
        if not gs.size:
            break
        first = np.concatenate(([0], np.cumsum(m)[:-1]))
        rep = np.repeat(np.arange(gs.size), m)
        k = starts[rep] + min_size + (np.arange(rep.size) - first[rep])
        g, a, b = gs[rep], starts[rep], ends[rep]
        gain = cost(g, a, b) - cost(g, a, k) - cost(g, k, b)
        top = np.maximum.reduceat(gain, first)
        # first position reaching each segment's best gain (ruptures takes the first maximum)
        hit = np.flatnonzero(gain >= top[rep])
        seg_of_hit, pos = np.unique(rep[hit], return_index=True)
        best_k = np.empty(gs.size, np.int64)
        best_k[seg_of_hit] = k[hit[pos]]
        split = top > pens[gs]
        for gi, kk in zip(gs[split], best_k[split], strict=True):
            out[int(gi)].append(int(kk))
        gs2, a2, b2, k2 = gs[split], starts[split], ends[split], best_k[split]
        gs = np.concatenate((gs2, gs2))
        starts = np.concatenate((a2, k2))
        ends = np.concatenate((k2, b2))
    return [sorted(bk) for bk in out]
