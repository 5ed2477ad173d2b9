"""An evidence report on one network, for the upstream provider who can act on it.

``build_dossier`` gathers what the store knows about one AS (announced prefixes per routing
snapshot, the score and how it was reached, an evidence timeline, campaigns and harvesters when
those areas' tables exist, sample headers with raw message ids, blocklist history);
``render_markdown`` and ``render_html`` turn it into text. The HTML is one self-contained file
(inline CSS and SVG, no external assets), so it can be mailed as it is — as the 2008 reports on
McColo were.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from trapline.analyze.networks import (
    EVIDENCE_TYPES,
    NetworkScore,
    Params,
    evidence_rows,
    network_scores,
)
from trapline.errors import UsageError
from trapline.export.redact import redact_headers, redact_path
from trapline.store.duckdb import Store
from trapline.store.labels import SPAM, label_filter
from trapline.store.raw import read_raw
from trapline.store.routing import bundled_names

MAX_PREFIXES = 200  # per snapshot; a large carrier announces thousands
HEADER_LINES = 40


@dataclass(slots=True, frozen=True)
class Dossier:
    asn: int
    names: tuple[tuple[str, str, date | None], ...]  # (name, source, as_of)
    generated_at: datetime
    since: date | None
    until: date | None
    score: NetworkScore | None
    rank: int | None
    ranked: int
    params: dict[str, Any]
    prefixes: tuple[tuple[str, date, str, int], ...]  # (snapshot, as_of, prefix, addresses)
    prefix_totals: tuple[tuple[str, date, int], ...]  # (snapshot, as_of, n prefixes)
    timeline: tuple[tuple[str, dict[str, int]], ...]  # (YYYY-MM, counts per type)
    campaigns: tuple[tuple[str, str, int, Any, Any], ...]  # (id, label, messages, first, last)
    harvesters: tuple[tuple[str, int, int, Any, Any], ...]  # (ip, visits, messages, first, last)
    samples: tuple[
        tuple[str, Any, str, str, str, str], ...
    ]  # (id, received, "sent from IP" | "links to IP", prefix, snap, headers)
    listings: tuple[
        tuple[str, str, Any, Any, int, str], ...
    ]  # (kind, indicator, first, last, n, dates)

    @property
    def title(self) -> str:
        # The name when the evidence was seen (network_scores picks it), not a later holder's.
        dated = self.score.name if self.score else None
        name = dated or (self.names[0][0] if self.names else "name unknown")
        return f"AS{self.asn} — {name}"


def _one_asn_rank(
    store: Store,
    settings: dict[str, Any],
    asn: int,
    since: date | None,
    until: date | None,
    label: str = SPAM,
) -> tuple[NetworkScore | None, int | None, int]:
    ranked = network_scores(store, settings, since=since, until=until, label=label)
    for i, s in enumerate(ranked, 1):
        if s.asn == asn:
            return s, i, len(ranked)
    return None, None, len(ranked)


def _names(store: Store, asn: int) -> tuple[tuple[str, str, date | None], ...]:
    rows = store.con.execute(
        "SELECT name, source, as_of FROM as_names WHERE asn = ? ORDER BY as_of NULLS LAST, source",
        [asn],
    ).fetchall()
    known = {(r[0], r[2]) for r in rows}
    bundled = [(n, "bundled", d) for d, n in bundled_names().get(asn, ()) if (n, d) not in known]
    return tuple(sorted([*((r[0], r[1], r[2]) for r in rows), *bundled], key=_by_date))


def _by_date(row: tuple[str, str, date | None]) -> tuple[bool, date]:
    return (row[2] is None, row[2] or date.min)


def _prefixes(
    store: Store, asn: int
) -> tuple[tuple[tuple[str, date, str, int], ...], tuple[tuple[str, date, int], ...]]:
    rows = store.con.execute(
        """SELECT p.snapshot_id, s.as_of, p.prefix, CAST(p.addresses AS HUGEINT), count(*) OVER (PARTITION BY p.snapshot_id)
           FROM routing_prefixes p JOIN routing_snapshots s USING (snapshot_id)
           WHERE p.asn = ? ORDER BY s.as_of, p.snapshot_id, p.family, coalesce(p.first4, 0), p.prefix""",
        [asn],
    ).fetchall()
    shown: list[tuple[str, date, str, int]] = []
    totals: dict[str, tuple[date, int]] = {}
    per: Counter[str] = Counter()
    for sid, as_of, prefix, addresses, total in rows:
        totals[sid] = (as_of, total)
        per[sid] += 1
        if per[sid] <= MAX_PREFIXES:
            shown.append((sid, as_of, prefix, int(addresses)))
    return tuple(shown), tuple((sid, d, n) for sid, (d, n) in totals.items())


def _campaigns(store: Store, asn: int) -> tuple[tuple[str, str, int, Any, Any], ...]:
    rows = store.con.execute(
        """SELECT m.campaign_id, any_value(m.subject), count(*), min(m.received_at), max(m.received_at)
            FROM ip_routing r JOIN messages m ON m.id = r.message_id
            WHERE r.subject = 'origin' AND r.asn = ? AND m.campaign_id IS NOT NULL
            GROUP BY m.campaign_id ORDER BY count(*) DESC, m.campaign_id LIMIT 10""",
        [asn],
    ).fetchall()
    return tuple((r[0], r[1] or "", r[2], r[3], r[4]) for r in rows)


def _harvesters(store: Store, asn: int) -> tuple[tuple[str, int, int, Any, Any], ...]:
    rows = store.con.execute(
        """SELECT r.ip, count(DISTINCT r.subject_id),
                  (SELECT count(*) FROM messages m WHERE m.trap_visit_id IN
                      (SELECT r2.subject_id FROM ip_routing r2 WHERE r2.subject = 'visit' AND r2.ip = r.ip)),
                  min(r.seen_at), max(r.seen_at)
           FROM ip_routing r WHERE r.subject = 'visit' AND r.asn = ?
           GROUP BY r.ip ORDER BY 3 DESC, 2 DESC, r.ip LIMIT 10""",
        [asn],
    ).fetchall()
    return tuple((r[0], r[1], r[2], r[3], r[4]) for r in rows)


def _header_block(raw: bytes) -> str:
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    lines = head.decode("utf-8", "replace").replace("\r", "").split("\n")
    cut = [line[:300] for line in lines[:HEADER_LINES]]
    if len(lines) > HEADER_LINES:
        cut.append(f"[... {len(lines) - HEADER_LINES} more header lines]")
    return "\n".join(cut)


def _redacted(
    store: Store, settings: dict[str, Any], samples: tuple[tuple[str, Any, str, str, str, str], ...]
) -> tuple[tuple[str, Any, str, str, str, str], ...]:
    """``samples`` with their trap addresses (each message's recipients, any address on a trap
    domain) redacted from the quoted headers."""
    out = []
    for mid, received, why, prefix, snap, headers in samples:
        rows = store.con.execute(
            "SELECT addr FROM recipients WHERE message_id = ? AND addr IS NOT NULL", [mid]
        ).fetchall()
        domains = settings.get("trap_domains") or []
        text = redact_headers(headers, [r[0] for r in rows], domains)
        out.append((mid, received, why, prefix, snap, text))
    return tuple(out)


def _samples(
    store: Store, asn: int, since: date | None, until: date | None, n: int, label: str = SPAM
) -> tuple[tuple[str, Any, str, str, str, str], ...]:
    rows = store.con.execute(
        f"""SELECT r.message_id, any_value(m.received_at),
                  -- a message sent from the network beats one that only links to it
                  arg_min(CASE r.subject WHEN 'origin' THEN 'sent from ' ELSE 'links to ' END || r.ip,
                          r.subject <> 'origin'),
                  arg_min(r.prefix, r.subject <> 'origin'), any_value(r.snapshot_id)
           FROM ip_routing r JOIN messages m ON m.id = r.message_id
           WHERE r.subject IN ('origin', 'url') AND r.asn = ? AND {label_filter(label, "m.label")}
             AND (?::DATE IS NULL OR m.received_at >= ?::DATE)
             AND (?::DATE IS NULL OR m.received_at < ?::DATE + 1)
           GROUP BY r.message_id
           ORDER BY 2 NULLS LAST, r.message_id""",
        [asn, since, since, until, until],
    ).fetchall()
    if len(rows) > n:  # spread over the period: first, last and evenly between
        step = (len(rows) - 1) / (n - 1) if n > 1 else 0
        rows = [rows[round(i * step)] for i in range(n)]
    out = []
    for mid, received, why, prefix, snap in rows:
        try:
            headers = _header_block(read_raw(store.con, mid))
        except Exception:  # a message without its raw bytes still shows its routing facts
            headers = "(raw message not available)"
        out.append((mid, received, why, prefix or "", snap or "", headers))
    return tuple(out)


def _listings(store: Store, asn: int) -> tuple[tuple[str, str, Any, Any, int, str], ...]:
    rows = store.con.execute(
        """SELECT kind, indicator, first_seen, last_seen, n_sightings, dates FROM feed_indicators
           WHERE asn = ? ORDER BY first_seen, kind, indicator""",
        [asn],
    ).fetchall()
    out = []
    for kind, indicator, first, last, n, dates in rows:
        dates = dates or []
        text = (
            ", ".join(str(d) for d in dates)
            if len(dates) <= 6
            else f"{len(dates)} dates, {dates[0]} … {dates[-1]}"
        )
        out.append((kind, indicator, first, last, n, text))
    return tuple(out)


def build_dossier(
    store: Store,
    settings: dict[str, Any],
    asn: int,
    *,
    since: date | None = None,
    until: date | None = None,
    samples: int = 5,
    label: str = SPAM,
    redact: bool = True,
) -> Dossier:
    """Everything the report shows, gathered from the store (read-only); messages count when
    they carry ``label`` (spam unless asked)."""
    score, rank, ranked = _one_asn_rank(store, settings, asn, since, until, label)
    months: dict[str, Counter[str]] = {}
    for row in evidence_rows(store, since, until, asn, label):
        when = row[5] or row[6]
        if when is not None:
            months.setdefault(when.strftime("%Y-%m"), Counter())[row[0]] += 1
    prefixes, totals = _prefixes(store, asn)
    return Dossier(
        asn=asn,
        names=tuple(
            (n, redact_path(src) if redact else src, a) for n, src, a in _names(store, asn)
        ),
        generated_at=datetime.now(UTC).replace(microsecond=0),
        since=since,
        until=until,
        score=score,
        rank=rank,
        ranked=ranked,
        params=Params.from_settings(settings).as_dict(),
        prefixes=prefixes,
        prefix_totals=totals,
        timeline=tuple((m, dict(c)) for m, c in sorted(months.items())),
        campaigns=_campaigns(store, asn),
        harvesters=_harvesters(store, asn),
        samples=_redacted(store, settings, _samples(store, asn, since, until, samples, label))
        if redact
        else _samples(store, asn, since, until, samples, label),
        listings=_listings(store, asn),
    )


# --- rendering -----------------------------------------------------------------------------------

_LABELS = {
    "spam": "spam origins",
    "harvester": "harvesters",
    "dictionary": "dictionary attackers",
    "url_host": "URL hosts",
    "cc": "C&C indicators",
    "blocklist": "blocklist listings",
}
_COLOURS = {
    "spam": "#c0392b",
    "harvester": "#8e44ad",
    "dictionary": "#d35400",
    "url_host": "#2471a3",
    "cc": "#17202a",
    "blocklist": "#7d8c1a",
}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _sections(d: Dossier) -> list[tuple[str, list[str], list[list[str]], str]]:
    """(title, column names, rows, note) per table; shared by both renderers."""
    s = d.score
    score_rows = []
    if s:
        score_rows = [
            [_LABELS[t], str(s.evidence.get(t, 0)), _fmt(d.params["weights"].get(t))]
            for t in EVIDENCE_TYPES
        ]
    return [
        (
            "Score breakdown",
            ["evidence", "count", "weight"],
            score_rows,
            (
                f"Rank {d.rank} of {d.ranked} networks with evidence. score {s.score:.4g}, baseline (BGP-Ranking style) "
                f"{s.baseline_score:.4g}; {s.announced_v4:,} IPv4 addresses announced in {s.snapshot_id}; "
                f"{s.messages} messages. " + "; ".join(s.reasons)
            )
            if s
            else "No evidence in the window.",
        ),
        (
            "Announced prefixes",
            ["snapshot", "as of", "prefix", "addresses"],
            [[a, str(b), c, f"{n:,}"] for a, b, c, n in d.prefixes],
            "; ".join(
                f"{sid}: {n} prefixes"
                + (f" (first {MAX_PREFIXES} shown)" if n > MAX_PREFIXES else "")
                for sid, _, n in d.prefix_totals
            )
            or "Not announced in any imported snapshot.",
        ),
        (
            "Evidence timeline (per month)",
            ["month", *(_LABELS[t] for t in EVIDENCE_TYPES)],
            [[m, *(str(c.get(t, 0)) for t in EVIDENCE_TYPES)] for m, c in d.timeline],
            "",
        ),
        (
            "Top campaigns",
            ["campaign", "label", "messages", "first", "last"],
            [[a, b[:80], str(c), _fmt(e), _fmt(f)] for a, b, c, e, f in d.campaigns],
            ""
            if d.campaigns
            else "No campaign data for this network (campaigns not built or none here).",
        ),
        (
            "Top harvesters",
            ["ip", "visits", "messages to issued addresses", "first", "last"],
            [[a, str(b), str(c), _fmt(e), _fmt(f)] for a, b, c, e, f in d.harvesters],
            "" if d.harvesters else "No honeypot visits from this network.",
        ),
        (
            "Blocklist and feed history",
            ["kind", "indicator", "first seen", "last seen", "sightings", "dates"],
            [[a, b, _fmt(c), _fmt(e), str(n), t] for a, b, c, e, n, t in d.listings],
            "" if d.listings else "Not listed in any imported feed.",
        ),
    ]


def _intro(d: Dossier) -> list[str]:
    window = f"{d.since or 'start'} … {d.until or 'now'}"
    names = [f"{n} (source {src}, as of {a or 'unknown'})" for n, src, a in d.names] or [
        "no AS name imported"
    ]
    return [
        f"Generated {d.generated_at:%Y-%m-%d %H:%M} UTC by trapline; evidence window {window}.",
        "Names: "
        + "; ".join(names)
        + ". ASNs are re-used over time: check the name as of the evidence dates.",
    ]


# Characters that start inline Markdown (emphasis, code, links, autolinks, raw HTML, entities,
# table cells, strikethrough); a backslash makes each literal (CommonMark §2.4).
_MD_INLINE = re.compile(r"([\\`*_\[\]<>&|~!#])")
# What starts a block at the beginning of a line: a list, a quote, a setext underline.
_MD_LINE_START = re.compile(r"^([-+=]|\d+(?=[.)]))")


def md_text(value: Any) -> str:
    """``value`` as inert Markdown text on one line: no markup, no raw HTML, no link."""
    text = " ".join(str(value).split())  # newlines would start new blocks
    text = _MD_INLINE.sub(r"\\\1", text)
    # "-" -> "\-", "1." -> "1\." (a backslash before a digit would show).
    return _MD_LINE_START.sub(
        lambda m: m.group(1) + "\\" if m.group(1).isdigit() else "\\" + m.group(1), text
    )


def md_code_block(text: str) -> list[str]:
    """``text`` as a fenced code block that nothing inside it can close (CommonMark §4.5: the
    fence is longer than any backtick run in the text)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, text, fence]


def render_markdown(d: Dossier) -> str:
    """The dossier as Markdown; every value from the store goes through ``md_text`` or
    ``md_code_block``, so a renderer shows it as text whatever it holds."""
    out = [f"# Evidence dossier: {md_text(d.title)}", "", *(f"{md_text(ln)}  " for ln in _intro(d))]
    out.append("")
    for title, cols, rows, note in _sections(d):
        out += [f"## {title}", ""]
        if note:
            out += [md_text(note), ""]
        if rows:
            out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            out += ["| " + " | ".join(md_text(v) for v in r) + " |" for r in rows]
            out.append("")
    out += ["## Sample message headers", ""]
    for mid, received, why, prefix, snap, headers in d.samples:
        out += [
            f"### {md_text(mid)}",
            "",
            md_text(f"received {_fmt(received)}; {why} ({prefix}, {snap})"),
            "",
            *md_code_block(headers),
            "",
        ]
    if not d.samples:
        out += ["No stored message was sent from or links to this network.", ""]
    out += _method_lines()
    return "\n".join(out) + "\n"


def _method_lines() -> list[str]:
    return [
        "## Method and sources",
        "",
        "Each address is mapped with the routing snapshot nearest its own date (longest-prefix match). "
        "Scores follow docs/networks.md: baseline = Σ weight × count ÷ announced /24s; "
        "score = Σ weight × count ÷ (announced /24s)^size_exponent × longevity × breadth.",
        "Routing data: University of Oregon Route Views Project (routeviews.org), CC BY 4.0. "
        "DROP lists © The Spamhaus Project.",
        "",
    ]


def _svg_timeline(d: Dossier) -> str:
    """Stacked monthly bars as inline SVG (no script, no external assets)."""
    if not d.timeline:
        return ""
    width, height, pad = 720, 160, 24
    peak = max(sum(c.values()) for _, c in d.timeline) or 1
    bar = max(2.0, (width - 2 * pad) / len(d.timeline))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 30}" role="img" aria-label="evidence per month">'
    ]
    for i, (month, counts) in enumerate(d.timeline):
        y = float(height)
        for t in EVIDENCE_TYPES:
            h = counts.get(t, 0) / peak * (height - pad)
            if h:
                y -= h
                parts.append(
                    f'<rect x="{pad + i * bar:.1f}" y="{y:.1f}" width="{bar * 0.85:.1f}" height="{h:.1f}" fill="{_COLOURS[t]}"><title>{month} {_LABELS[t]}: {counts[t]}</title></rect>'
                )
        if i == 0 or i == len(d.timeline) - 1:
            parts.append(
                f'<text x="{pad + i * bar:.1f}" y="{height + 16}" font-size="11">{month}</text>'
            )
    parts.append(f'<text x="{pad}" y="12" font-size="11">peak {peak} per month</text></svg>')
    legend = " ".join(
        f'<span style="color:{_COLOURS[t]}">■ {_LABELS[t]}</span>' for t in EVIDENCE_TYPES
    )
    return "".join(parts) + f"<p>{legend}</p>"


_CSS = """body{font:14px/1.45 system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#17202a}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}td,th{border:1px solid #ccd;padding:2px 6px;text-align:left}
th{background:#eef}pre{background:#f6f6f9;padding:.6em;overflow-x:auto;font-size:12px}h1{font-size:22px}.note{color:#445}"""


def render_html(d: Dossier) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Evidence dossier: {e(d.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Evidence dossier: {e(d.title)}</h1>",
        *(f'<p class="note">{e(line)}</p>' for line in _intro(d)),
    ]
    for title, cols, rows, note in _sections(d):
        out.append(f"<h2>{e(title)}</h2>")
        if title.startswith("Evidence timeline"):
            out.append(_svg_timeline(d))
        if note:
            out.append(f'<p class="note">{e(note)}</p>')
        if rows:
            out.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{e(v)}</td>" for v in r) + "</tr>" for r in rows]
            out.append("</table>")
    out.append("<h2>Sample message headers</h2>")
    for mid, received, why, prefix, snap, headers in d.samples:
        out.append(
            f"<h3>{e(mid)}</h3><p>received {e(_fmt(received))}; {e(why)} ({e(prefix)}, {e(snap)})</p><pre>{e(headers)}</pre>"
        )
    if not d.samples:
        out.append('<p class="note">No stored message was sent from or links to this network.</p>')
    method = _method_lines()
    out.append(
        f"<h2>{e(method[0][3:])}</h2>" + "".join(f"<p>{e(line)}</p>" for line in method[2:] if line)
    )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_dossier(
    store: Store,
    settings: dict[str, Any],
    asn: int,
    out: Path,
    *,
    since: date | None = None,
    until: date | None = None,
    label: str = SPAM,
    redact: bool = True,
) -> list[Path]:
    """Write ``out`` (.html) and its Markdown twin (.md); returns both paths. ``redact`` (the
    default) hides trap addresses and local paths, so the files can be shared."""
    html_path = out if out.suffix.lower() in (".html", ".htm") else out.with_suffix(".html")
    md_path = html_path.with_suffix(".md")
    if not html_path.parent.is_dir():
        # A mistyped folder should not become a new directory tree somewhere unexpected.
        raise UsageError(f"{html_path.parent} does not exist; create it first or fix --out")
    d = build_dossier(store, settings, asn, since=since, until=until, label=label, redact=redact)
    html_path.write_text(render_html(d), encoding="utf-8")
    md_path.write_text(render_markdown(d), encoding="utf-8")
    return [html_path, md_path]
