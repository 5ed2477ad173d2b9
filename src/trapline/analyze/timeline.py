"""Volume over time, overall and per group, from the time mail was received.

The clock is the receiving hop's (or the trap's) time, never the sender's ``Date:`` header,
which spam forges freely; messages with no received time are counted aside, not plotted. A
period in which no mail at all (any label, any source) arrived is a collection gap: its value
is ``None``, not zero, so an outage never looks like a takedown. Counting is one SQL GROUP BY;
Python only lays the counts on the period grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from trapline.errors import NotFound, UsageError

BY = ("none", "botnet", "campaign", "asn", "harvester-asn")
FREQ = ("hour", "day", "week")
STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7)}
RECEIVED = "received_at IS NOT NULL AND received_at_source IN ('received', 'trap')"
NO_GROUP = "-"  # group id of messages that have none (no campaign, no botnet, unmapped origin)


@dataclass(slots=True, frozen=True)
class Group:
    kind: str  # botnet | campaign | asn | harvester-asn | all
    id: str
    name: str


@dataclass(slots=True, frozen=True)
class SourceCoverage:
    """What one source (a file, the SMTP trap) contributed: its first and last received time."""

    source: str
    first: datetime
    last: datetime
    messages: int


@dataclass(slots=True, frozen=True, eq=False)
class Series:
    """Counts on a regular grid of periods; ``counts[g, i]`` is group ``g`` in period ``i``."""

    by: str
    freq: str
    label: str
    periods: tuple[datetime, ...]  # period starts, UTC, first to last covered period
    covered: np.ndarray  # bool per period: False = collection gap
    total: np.ndarray  # int64 per period (0 in gaps; read ``covered``)
    groups: tuple[Group, ...]
    counts: np.ndarray  # int64 (groups, periods)
    no_received_time: int  # messages left out: only a Date: header to go by
    coverage: tuple[SourceCoverage, ...] = field(default=())

    def values(self, row: np.ndarray | None = None) -> list[int | None]:
        """A row (default: the total) with ``None`` in the gaps."""
        data = self.total if row is None else row
        return [int(v) if ok else None for v, ok in zip(data, self.covered, strict=True)]

    def as_dict(self, top: int | None = None) -> dict[str, Any]:
        order = np.argsort(-self.counts.sum(axis=1), kind="stable")[: top or len(self.groups)]
        return {
            "by": self.by,
            "freq": self.freq,
            "label": self.label,
            "periods": list(self.periods),
            "gaps": [p for p, ok in zip(self.periods, self.covered, strict=True) if not ok],
            "total": self.values(),
            "groups": [
                {
                    "kind": self.groups[g].kind,
                    "id": self.groups[g].id,
                    "name": self.groups[g].name,
                    "messages": int(self.counts[g].sum()),
                    "values": self.values(self.counts[g]),
                }
                for g in order
            ],
            "no_received_time": self.no_received_time,
            "coverage": [
                {"source": c.source, "first": c.first, "last": c.last, "messages": c.messages}
                for c in self.coverage
            ],
        }


def has_column(con: Any, table: str, column: str) -> bool:
    rows = con.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_name = ? AND column_name = ?",
        [table, column],
    ).fetchall()
    return bool(rows)


def label_filter(con: Any, label: str, alias: str = "") -> str:
    """SQL condition for ``--label`` (spam by default; 'all' = every message)."""
    if label == "all" or not has_column(con, "messages", "label"):
        return "TRUE"
    safe = label.replace("'", "''")
    return f"{alias}label = '{safe}'"


def _group_sql(con: Any, by: str) -> tuple[str, str, str]:
    """(join, group id expression, name query) for one grouping."""
    if by == "none":
        return "", "'all'", ""
    if by == "campaign":
        return "", "m.campaign_id", "SELECT id, coalesce(subjects[1], id) FROM campaigns"
    if by == "botnet":
        join = "LEFT JOIN botnet_campaigns bc ON bc.campaign_id = m.campaign_id"
        names = (
            "SELECT id, CASE WHEN len(families) > 0 THEN array_to_string(families, '+') "
            "ELSE id END FROM botnets"
        )
        return join, "bc.botnet_id", names
    names = "SELECT asn::VARCHAR, arg_max(name, as_of) FROM as_names GROUP BY asn"
    if by == "asn":
        return "", "m.origin_asn::VARCHAR", names
    if by == "harvester-asn":
        join = (
            "LEFT JOIN (SELECT subject_id, any_value(asn) AS asn FROM ip_routing "
            "WHERE subject = 'visit' GROUP BY 1) hv ON hv.subject_id = m.trap_visit_id"
        )
        return join, "hv.asn::VARCHAR", names
    raise UsageError(f"--by {by!r} unknown; use one of {', '.join(BY)}")


def _check_by(con: Any, by: str) -> None:
    """Clear messages when a grouping has nothing to group by yet."""
    if by in ("asn", "harvester-asn"):
        (n,) = con.execute("SELECT count(*) FROM routing_snapshots").fetchone()
        if not n:
            raise NotFound(
                "no routing data in the store: run `trapline routing import TABLE` and "
                "`trapline enrich` first, or use --by botnet|campaign|none"
            )
    if by in ("campaign", "botnet"):
        (n,) = con.execute("SELECT count(*) FROM campaigns").fetchone()
        if not n:
            raise NotFound(
                "no campaigns yet: run `trapline analyze campaigns` (and `analyze botnets` "
                "for --by botnet) first, or use --by none"
            )


def series(
    con: Any,
    *,
    by: str = "none",
    freq: str = "day",
    label: str = "spam",
    since: datetime | None = None,
    until: datetime | None = None,
) -> Series:
    """Message counts per period (and per group), with collection gaps marked."""
    if freq not in FREQ:
        raise UsageError(f"--freq {freq!r} unknown; use one of {', '.join(FREQ)}")
    join, gexpr, names_sql = _group_sql(con, by)
    _check_by(con, by)
    window = ""
    params: list[Any] = []
    if since is not None:
        window += " AND m.received_at >= ?"
        params.append(since)
    if until is not None:
        window += " AND m.received_at < ?"
        params.append(until)
    received = RECEIVED.replace("received_at", "m.received_at")
    # Coverage: every message of any label counts as evidence the collection was running.
    cover = con.execute(
        f"SELECT date_trunc('{freq}', m.received_at) AS t, count(*) FROM messages m "
        f"WHERE {received}{window} GROUP BY 1 ORDER BY 1",
        params,
    ).fetchall()
    if not cover:
        raise NotFound(
            "no mail with a received time in the store"
            + (" in that window" if window else "")
            + ": run `trapline ingest PATH` first"
        )
    cond = f"{received} AND {label_filter(con, label, 'm.')}{window}"
    rows = con.execute(
        f"SELECT date_trunc('{freq}', m.received_at) AS t, coalesce({gexpr}, '{NO_GROUP}') AS g, "
        f"count(*) FROM messages m {join} WHERE {cond} GROUP BY 1, 2",
        params,
    ).fetchall()
    (no_time,) = con.execute(
        f"SELECT count(*) FROM messages m WHERE NOT ({received}) AND "
        f"{label_filter(con, label, 'm.')}"
    ).fetchone()
    first, last = cover[0][0], cover[-1][0]
    step = STEP[freq]
    n = int((last - first) / step) + 1
    periods = tuple(first + i * step for i in range(n))
    covered = np.zeros(n, bool)
    covered[[int((t - first) / step) for t, _ in cover]] = True
    ids = sorted({g for _, g, _ in rows}, key=lambda g: (g == NO_GROUP, g))
    index = {g: i for i, g in enumerate(ids)}
    counts = np.zeros((len(ids), n), np.int64)
    for t, g, c in rows:
        counts[index[g], int((t - first) / step)] += c
    names = dict(con.execute(names_sql).fetchall()) if names_sql else {}
    kind = "all" if by == "none" else by
    groups = tuple(
        Group(kind, g, "(none)" if g == NO_GROUP else str(names.get(g) or g)) for g in ids
    )
    return Series(
        by, freq, label, periods, covered, counts.sum(axis=0), groups, counts, int(no_time),
        _coverage(con, received + window, params),
    )  # fmt: skip


def _coverage(con: Any, cond: str, params: list[Any]) -> tuple[SourceCoverage, ...]:
    rows = con.execute(
        f"SELECT split_part(coalesce(m.source, '?'), '#', 1) AS s, min(m.received_at), "
        f"max(m.received_at), count(*) FROM messages m WHERE {cond} GROUP BY 1 ORDER BY 2, 1",
        params,
    ).fetchall()
    return tuple(SourceCoverage(s, a, b, int(n)) for s, a, b, n in rows)
