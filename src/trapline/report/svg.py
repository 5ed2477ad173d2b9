"""Small self-contained SVG charts (no scripts, no fonts or styles fetched from anywhere).

A chart is built from plain data (the same dict a JSON twin holds), so the page and its twin
can never disagree. Gaps (``None``) break the line instead of dropping it to zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")


def _path(xs: Sequence[float], ys: Sequence[float | None]) -> str:
    parts, pen_down = [], False
    for x, y in zip(xs, ys, strict=True):
        if y is None:
            pen_down = False
            continue
        parts.append(f"{'L' if pen_down else 'M'}{x:.1f},{y:.1f}")
        pen_down = True
    return " ".join(parts)


def line_chart(
    periods: Sequence[datetime],
    lines: Sequence[tuple[str, Sequence[int | float | None]]],
    *,
    title: str,
    marks: Sequence[tuple[datetime, str]] = (),
    gaps: Sequence[datetime] = (),
    width: int = 900,
    height: int = 320,
) -> str:
    """One SVG with a line per (name, values); ``marks`` are labelled vertical lines."""
    left, right, top, bottom = 60, 160, 30, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(1, len(periods) - 1)
    peak = max((v for _, vals in lines for v in vals if v is not None), default=1) or 1
    t0 = periods[0] if periods else datetime(1970, 1, 1)
    span = max(1.0, ((periods[-1] - t0).total_seconds()) if periods else 1.0)

    def x_of(t: datetime) -> float:
        return left + plot_w * (t - t0).total_seconds() / span

    xs = [left + plot_w * i / n for i in range(len(periods))]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="18" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
    ]
    for gap in gaps:
        gx = x_of(gap)
        out.append(
            f'<rect x="{gx:.1f}" y="{top}" width="{max(1.0, plot_w / n):.1f}" height="{plot_h}" '
            'fill="#eee"><title>collection gap</title></rect>'
        )
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - frac)
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{peak * frac:.0f}</text>'
        )
    if periods:
        for i in sorted({0, len(periods) // 2, len(periods) - 1}):
            out.append(
                f'<text x="{xs[i]:.1f}" y="{height - 18}" text-anchor="middle">'
                f"{periods[i]:%Y-%m-%d}</text>"
            )
    for i, (name, vals) in enumerate(lines):
        color = PALETTE[i % len(PALETTE)]
        ys = [None if v is None else top + plot_h * (1 - float(v) / peak) for v in vals]
        out.append(
            f'<path d="{_path(xs, ys)}" fill="none" stroke="{color}" stroke-width="1.5">'
            f"<title>{escape(name)}</title></path>"
        )
        out.append(
            f'<text x="{width - right + 8}" y="{top + 14 * (i + 1)}" fill="{color}">'
            f"{escape(name[:24])}</text>"
        )
    for at, text in marks:
        mx = x_of(at)
        out.append(
            f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{top}" y2="{top + plot_h}" stroke="#000" '
            f'stroke-dasharray="4 3"><title>{escape(text)}</title></line>'
        )
        out.append(
            f'<text x="{mx + 3:.1f}" y="{top + 12}" font-size="10">{escape(text[:30])}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(items: Sequence[tuple[str, float]], *, title: str, width: int = 600) -> str:
    """Horizontal bars, one per (label, value), for shares and scores."""
    row = 20
    height = 40 + row * len(items)
    peak = max((v for _, v in items), default=1.0) or 1.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<text x="4" y="18" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(items):
        y = 30 + i * row
        w = (width - 260) * value / peak
        out.append(f'<text x="4" y="{y + 13}">{escape(label[:32])}</text>')
        out.append(f'<rect x="200" y="{y}" width="{w:.1f}" height="{row - 4}" fill="#1f77b4"/>')
        out.append(f'<text x="{204 + w:.1f}" y="{y + 13}">{value:.3g}</text>')
    out.append("</svg>")
    return "\n".join(out)
