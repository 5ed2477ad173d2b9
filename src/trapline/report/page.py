"""One self-contained HTML page: timeline with change points, attributions, top networks and
takedown predictions. Charts are inline SVG; every chart's data sits beside it as a JSON twin
(``<script type="application/json">``) and in ``<out>.json``. Nothing is fetched when opened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

import duckdb

from trapline.analyze.changes import Params, detect
from trapline.analyze.takedown import predict
from trapline.analyze.timeline import series
from trapline.cli.common import to_json
from trapline.errors import TraplineError
from trapline.report.charts import series_chart, shares_chart


@dataclass(slots=True, frozen=True)
class Report:
    html: str
    data: dict[str, Any]


def _twin(name: str, data: Any) -> str:
    text = to_json(data).replace("</", "<\\/")
    return f'<script type="application/json" id="{escape(name)}-data">{text}</script>'


def _networks(con: duckdb.DuckDBPyConnection, top: int) -> list[dict[str, Any]]:
    """Top origin networks by spam volume (the ranking with scores is `trapline networks`)."""
    rows = con.execute(
        """SELECT m.origin_asn, coalesce(any_value(n.name), ''), count(*) FROM messages m
           LEFT JOIN as_names n ON n.asn = m.origin_asn
           WHERE m.origin_asn IS NOT NULL GROUP BY 1 ORDER BY 3 DESC, 1 LIMIT ?""",
        [top],
    ).fetchall()
    return [{"asn": int(a), "name": n, "messages": int(c)} for a, n, c in rows]


def build(
    con: duckdb.DuckDBPyConnection,
    *,
    settings: dict[str, Any],
    networks: tuple[str, ...] = (),
    takedown_at: datetime | None = None,
    freq: str = "day",
) -> Report:
    """The page and the data behind it (one dict, also the page's JSON twin)."""
    (n_botnets,) = con.execute("SELECT count(*) FROM botnets").fetchall()[0]
    (n_campaigns,) = con.execute("SELECT count(*) FROM campaigns").fetchall()[0]
    by = "botnet" if n_botnets else "campaign" if n_campaigns else "none"
    s = series(con, by=by, freq=freq)
    try:
        found = detect(s, Params.from_settings(settings))
        note = ""
    except TraplineError as exc:
        found, note = [], str(exc)
    svg, chart_data = series_chart(s, top=5, changes=found)
    top_nets = _networks(con, 10)
    nets_svg, nets_data = shares_chart(
        [(f"AS{n['asn']} {n['name']}"[:32], float(n["messages"])) for n in top_nets],
        "spam by origin network",
    )
    targets = list(networks) or [f"AS{n['asn']}" for n in top_nets[:3]]
    takedowns = []
    for net in targets:
        try:
            takedowns.append(predict(con, net, takedown_at, settings=settings).as_dict())
        except TraplineError as exc:
            takedowns.append({"network": net, "error": str(exc)})
    data = {
        "generated": datetime.now().replace(microsecond=0),
        "timeline": chart_data,
        "changes": [c.as_dict() for c in found],
        "networks": nets_data,
        "takedowns": takedowns,
    }
    return Report(_html(svg, nets_svg, data, note), data)


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.0%}"


def _html(svg: str, nets_svg: str, data: dict[str, Any], note: str) -> str:
    rows = []
    for c in data["changes"]:
        who = ", ".join(f"{escape(a['name'][:30])} {a['share']:.0%}" for a in c["attribution"])
        rel = "new" if c["relative_change"] is None else f"{c['relative_change']:+.0%}"
        rows.append(
            f"<tr><td>{escape(str(c['at']))}</td><td>{escape(c['kind'])}</td>"
            f"<td>{c['before']:.1f}</td><td>{c['after']:.1f}</td><td>{rel}</td><td>{who}</td></tr>"
        )
    takes = []
    for t in data["takedowns"]:
        if "error" in t:
            takes.append(
                f"<tr><td>{escape(t['network'])}</td><td colspan=4>{escape(t['error'])}</td></tr>"
            )
            continue
        deps = ", ".join(
            f"{escape(d['kind'])}: {escape(d['name'][:24])} ({d['messages']})"
            for d in t["dependents"][:4]
        )
        takes.append(
            f"<tr><td>{escape(t['network'])}</td><td>{escape(str(t['at']))[:16]}</td>"
            f"<td>{_pct(t['predicted_share'])}</td><td>{_pct(t['observed_share'])}</td>"
            f"<td>{deps}</td></tr>"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>trapline report</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px}}</style>
</head><body>
<h1>trapline report</h1>
<p>Generated {escape(str(data["generated"]))}. Volume by received time (never the Date: header);
grey bands are collection gaps. Every chart's data is in the JSON beside it.</p>
<h2>Timeline and change points</h2>
{svg}
{_twin("timeline", data["timeline"])}
{f"<p>{escape(note)}</p>" if note else ""}
<table><tr><th>at</th><th>kind</th><th>before</th><th>after</th><th>change</th><th>explained by</th></tr>
{"".join(rows) or "<tr><td colspan=6>no change points</td></tr>"}</table>
{_twin("changes", data["changes"])}
<h2>Top networks</h2>
{nets_svg}
{_twin("networks", data["networks"])}
<h2>Takedown predictions</h2>
<table><tr><th>network</th><th>at</th><th>predicted</th><th>observed</th><th>depends</th></tr>
{"".join(takes)}</table>
{_twin("takedowns", data["takedowns"])}
</body></html>
"""


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(json.loads(to_json(data)), indent=1)
