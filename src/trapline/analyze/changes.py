"""Change points in volume, with the groups that explain each one.

``detect`` segments the overall series (gaps removed, see analyze/segment.py for cost and
penalty), then for every change point measures the level before and after over at most
``level_periods`` periods on each side inside the neighbouring segments, so a slow drift far
away does not blur the size of a step. Attribution splits the change of the total among the
groups of the series: each group's own change of level over the same periods, as a share of
the summed changes that point the same way as the total (groups moving against it are left
out); the largest shares are listed, the rest is one ``other`` entry, and the shares add up
to 1. ``detect_groups`` finds change points inside every group's own series at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from trapline.analyze.segment import anscombe, binseg_many, pelt, penalty
from trapline.analyze.timeline import Group, Series
from trapline.config import DEFAULTS
from trapline.errors import ConfigError, UsageError

LEVEL_DAYS = 7.0  # how far on each side a level is measured (capped by the segment)
MIN_PERIODS = 5


@dataclass(slots=True, frozen=True)
class Params:
    beta: float
    min_relative_change: float
    top: int
    min_share: float

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None = None) -> Params:
        """The ``changes_*`` settings (config.py holds the defaults)."""
        s = {**DEFAULTS, **(settings or {})}
        try:
            return cls(
                float(s["changes_penalty_beta"]),
                float(s["changes_min_relative_change"]),
                int(s["changes_attribution_top"]),
                float(s["changes_attribution_min_share"]),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"changes settings: {exc}; use numbers in trapline.toml") from exc


@dataclass(slots=True, frozen=True)
class Attribution:
    kind: str
    id: str
    name: str
    share: float


@dataclass(slots=True, frozen=True)
class ChangePoint:
    at: datetime
    before: float  # mean count per period before
    after: float
    relative_change: float | None  # (after - before) / before; None when before is 0
    kind: str  # drop | rise | burst | burst-end | recovery | start
    attribution: tuple[Attribution, ...]
    group: Group | None = None  # None: the overall series

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "at": self.at,
            "before": round(self.before, 3),
            "after": round(self.after, 3),
            "relative_change": (
                None if self.relative_change is None else round(self.relative_change, 4)
            ),
            "kind": self.kind,
            "attribution": [
                {"kind": a.kind, "id": a.id, "name": a.name, "share": a.share}
                for a in self.attribution
            ],
        }
        if self.group is not None:
            out["group"] = {"kind": self.group.kind, "id": self.group.id, "name": self.group.name}
        return out


def _level_periods(s: Series) -> int:
    return max(1, int(LEVEL_DAYS * 86400 / {"hour": 3600, "day": 86400, "week": 604800}[s.freq]))


def _windows(bkps: list[int], i: int, width: int) -> tuple[slice, slice]:
    start = bkps[i - 1] if i else 0
    b, end = bkps[i], bkps[i + 1]
    return slice(max(start, b - width), b), slice(b, min(end, b + width))


def _require(s: Series) -> np.ndarray:
    idx = np.flatnonzero(s.covered)
    if idx.size < MIN_PERIODS:
        span = f"{s.periods[0]:%Y-%m-%d %H:%M}" + (
            f" .. {s.periods[-1]:%Y-%m-%d %H:%M}" if len(s.periods) > 1 else ""
        )
        raise UsageError(
            f"the store has mail in {idx.size} {s.freq}(s) only ({span}); change points need "
            f"at least {MIN_PERIODS}: use a finer --freq or ingest more mail"
        )
    return idx


def attribute(
    s: Series, counts: np.ndarray, before: slice, after: slice, p: Params
) -> tuple[Attribution, ...]:
    """Shares of the groups whose level moved with the total (see the module docstring)."""
    delta = counts[:, after].mean(axis=1) - counts[:, before].mean(axis=1)
    total = float(delta.sum())
    if total == 0 or len(s.groups) == 0:
        return ()
    same = np.flatnonzero(np.sign(delta) == np.sign(total))
    weight = float(delta[same].sum())
    order = same[np.argsort(-np.abs(delta[same]), kind="stable")]
    out: list[Attribution] = []
    listed = 0.0
    for g in order[: p.top]:
        share = round(float(delta[g]) / weight, 4)
        if share < p.min_share:
            break
        grp = s.groups[g]
        out.append(Attribution(grp.kind, grp.id, grp.name, share))
        listed += share
    rest = round(1.0 - listed, 4)
    if rest > 0:
        out.append(Attribution("other", "other", "other", rest))
    return tuple(out)


def _level_change(lo: float, hi: float) -> float | None:
    return (hi - lo) / lo if lo else None


def _significant(rel: float | None, hi: float, p: Params) -> bool:
    return hi > 0 if rel is None else abs(rel) >= p.min_relative_change


def _kinds(rel: list[float | None], at: list[datetime], freq: str) -> list[str]:
    """drop / rise (start: from nothing), a rise undone within a day = burst (+ burst-end),
    rises after a drop = recovery until the level is back."""
    num = [float("inf") if r is None else r for r in rel]
    out = ["start" if r is None else "rise" if r > 0 else "drop" for r in rel]
    day = 86400
    for i in range(len(num) - 1):
        gap = (at[i + 1] - at[i]).total_seconds()
        if num[i] > 0 > num[i + 1] and gap <= day + 1 and freq != "week":
            out[i], out[i + 1] = "burst", "burst-end"
    deficit = 1.0
    for i, r in enumerate(num):
        if out[i] == "drop":
            deficit *= 1 + r
        elif out[i] == "rise" and deficit < 0.95:
            out[i] = "recovery"
            deficit = min(1.0, deficit * (1 + r))
    return out


def detect(series: Series, params: Params | None = None) -> list[ChangePoint]:
    """Change points of the overall series, each attributed to the series' groups."""
    p = params or Params.from_settings()
    idx = _require(series)
    y = series.total[idx]
    z = anscombe(y)
    bkps = pelt(z, float(penalty(z, p.beta)[0]))
    counts = series.counts[:, idx]
    width = _level_periods(series)
    found: list[tuple[datetime, float, float, float | None, tuple[Attribution, ...]]] = []
    for i in range(len(bkps) - 1):
        before, after = _windows(bkps, i, width)
        lo, hi = float(y[before].mean()), float(y[after].mean())
        rel = _level_change(lo, hi)
        if not _significant(rel, hi, p):
            continue
        found.append(
            (series.periods[idx[bkps[i]]], lo, hi, rel, attribute(series, counts, before, after, p))
        )
    kinds = _kinds([f[3] for f in found], [f[0] for f in found], series.freq)
    return [
        ChangePoint(at, lo, hi, rel, kind, attr)
        for (at, lo, hi, rel, attr), kind in zip(found, kinds, strict=True)
    ]


def detect_groups(
    series: Series, params: Params | None = None, *, min_messages: int = 1
) -> list[ChangePoint]:
    """Change points inside each group's own series (binary segmentation, all groups at once)."""
    p = params or Params.from_settings()
    idx = _require(series)
    keep = np.flatnonzero(series.counts.sum(axis=1) >= min_messages)
    counts = series.counts[np.ix_(keep, idx)]
    z = anscombe(counts)
    width = _level_periods(series)
    out: list[ChangePoint] = []
    for row, bkps in zip(keep, binseg_many(z, penalty(z, p.beta)), strict=True):
        y = series.counts[row, idx]
        grp = series.groups[row]
        found = []
        for i in range(len(bkps) - 1):
            before, after = _windows(bkps, i, width)
            lo, hi = float(y[before].mean()), float(y[after].mean())
            rel = _level_change(lo, hi)
            if _significant(rel, hi, p):
                found.append((series.periods[idx[bkps[i]]], lo, hi, rel))
        kinds = _kinds([f[3] for f in found], [f[0] for f in found], series.freq)
        for (at, lo, hi, rel), kind in zip(found, kinds, strict=True):
            self_attr = (Attribution(grp.kind, grp.id, grp.name, 1.0),)
            out.append(ChangePoint(at, lo, hi, rel, kind, self_attr, grp))
    out.sort(key=lambda c: (c.at, c.group.id if c.group else ""))
    return out
