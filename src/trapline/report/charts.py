"""Charts of trapline's own records: each returns (svg text, the data it drew as a dict)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from trapline.analyze.changes import ChangePoint
from trapline.analyze.timeline import Series
from trapline.report.svg import bar_chart, line_chart


def series_chart(
    s: Series, *, top: int = 5, changes: Sequence[ChangePoint] = (), title: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Total plus the ``top`` largest groups, change points marked, gaps shaded."""
    data = s.as_dict(top=top)
    order: list[int] = (
        [int(g) for g in np.argsort(-s.counts.sum(axis=1), kind="stable")[:top]]
        if s.by != "none"
        else []
    )
    lines: list[tuple[str, Sequence[int | None]]] = [("total", s.values())]
    lines += [(s.groups[g].name, s.values(s.counts[g])) for g in order]
    marks = [
        (c.at, c.kind + ("" if c.relative_change is None else f" {c.relative_change:+.0%}"))
        for c in changes
    ]
    svg = line_chart(
        s.periods, lines, title=title or f"messages per {s.freq}" + (
            f" by {s.by}" if s.by != "none" else ""),
        marks=marks, gaps=data["gaps"],
    )  # fmt: skip
    data["changes"] = [c.as_dict() for c in changes]
    return svg, data


def shares_chart(items: Sequence[tuple[str, float]], title: str) -> tuple[str, dict[str, Any]]:
    return bar_chart(items, title=title), {"title": title, "items": [list(i) for i in items]}
