"""Clustering quality against ground truth: pairwise precision/recall/F1 and adjusted Rand index.

All from the contingency table (counts of messages per (true, predicted) label pair), so a
million messages cost one ``np.unique``, not a trillion pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(slots=True, frozen=True)
class Scores:
    precision: float  # of predicted same-campaign pairs, the share that truly are
    recall: float  # of true same-campaign pairs, the share found
    f1: float
    ari: float  # adjusted Rand index (Hubert & Arabie 1985): 1 = identical partitions
    n: int

    def as_dict(self) -> dict[str, float]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1,
                "ari": self.ari, "n": self.n}  # fmt: skip


def _pairs(counts: np.ndarray) -> float:
    c = counts.astype(np.float64)
    return float((c * (c - 1) / 2).sum())


def _codes(labels: Sequence[Any] | np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(labels), return_inverse=True)[1].ravel()


def score(truth: Sequence[Any] | np.ndarray, predicted: Sequence[Any] | np.ndarray) -> Scores:
    """Pairwise precision, recall, F1 and ARI of ``predicted`` labels against ``truth``."""
    t, p = _codes(truth), _codes(predicted)
    n = len(t)
    if n != len(p):
        raise ValueError("truth and predicted differ in length")
    joint = np.unique(t.astype(np.int64) * (p.max(initial=0) + 1) + p, return_counts=True)[1]
    both = _pairs(joint)
    same_t = _pairs(np.bincount(t))
    same_p = _pairs(np.bincount(p))
    precision = both / same_p if same_p else 1.0
    recall = both / same_t if same_t else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    total = n * (n - 1) / 2
    expected = same_t * same_p / total if total else 0.0
    top = (same_t + same_p) / 2 - expected
    ari = (both - expected) / top if top else 1.0
    return Scores(precision, recall, f1, ari, n)
