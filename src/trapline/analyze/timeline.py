"""Volume over time, overall and per group, from the time mail was received.

The clock is the receiving hop's (or the trap's) time, never the sender's ``Date:`` header,
which spam forges freely; messages with no received time are counted aside, not plotted. A
period in which no mail at all (any label, any source) arrived is a collection gap: its value
is ``None``, not zero, so an outage never looks like a takedown. Counting is one SQL GROUP BY;
Python only lays the counts on the period grid.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from trapline.errors import NotFound, UsageError
from trapline.store.labels import label_filter

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
    step = STEP[freq]
    secs = int(step.total_seconds())
    # Integer buckets (weeks start on Monday: the epoch was a Thursday).
    shift = 4 * 86400 if freq == "week" else 0
    bucket = f"((epoch_us(m.received_at) - {shift * 10**6}) // {secs * 10**6})"
    cond = label_filter(label, "m.label")
    # One scan: per period and group, the counted messages and all messages (any label), the
    # latter being the evidence that collection was running.
    # unique names: cursors of one connection (web requests) share the temp catalog
    cells, keys = f"_tl_cells_{uuid.uuid4().hex}", f"_tl_keys_{uuid.uuid4().hex}"
    con.execute(
        f"CREATE TEMP TABLE {cells} AS "
        f"SELECT {bucket} AS t, coalesce({gexpr}, '{NO_GROUP}') AS g, "
        f"count(*) FILTER (WHERE {cond}) AS n, count(*) AS seen "
        f"FROM messages m {join} WHERE {received}{window} GROUP BY 1, 2",
        params,
    )
    try:
        # Group names once, then the cells as integers only: turning millions of group
        # strings into Python objects would cost more than the aggregation.
        ids = sorted(
            (str(r[0]) for r in con.execute(f"SELECT DISTINCT g FROM {cells}").fetchall()),
            key=lambda g: (g == NO_GROUP, g),
        )
        if not ids:
            raise NotFound(
                "no mail with a received time in the store"
                + (" in that window" if window else "")
                + ": run `trapline ingest PATH` first"
            )
        con.register(keys, pa.table({"g": ids, "gi": pa.array(range(len(ids)), pa.int64())}))
        try:
            got = con.execute(
                f"SELECT c.t, k.gi, c.n FROM {cells} c JOIN {keys} k USING (g)"
            ).fetchnumpy()
        finally:
            con.unregister(keys)
    finally:
        con.execute(f"DROP TABLE IF EXISTS {cells}")
    coverage, no_time = _coverage(con, received, window, params, cond)
    tcol = np.asarray(got["t"], np.int64)
    t0 = int(tcol.min())
    col = tcol - t0
    n = int(col.max()) + 1
    first = datetime(1970, 1, 1) + timedelta(seconds=t0 * secs + shift)
    periods = tuple(first + i * step for i in range(n))
    covered = np.bincount(col, minlength=n) > 0  # a cell exists only where mail arrived
    flat = np.asarray(got["gi"], np.int64) * n + col
    weights = np.asarray(got["n"], np.float64)
    counts = np.rint(np.bincount(flat, weights, minlength=len(ids) * n)).astype(np.int64)
    counts = counts.reshape(len(ids), n)
    names = dict(con.execute(names_sql).fetchall()) if names_sql else {}
    kind = "all" if by == "none" else by
    groups = tuple(
        Group(kind, g, "(none)" if g == NO_GROUP else str(names.get(g) or g)) for g in ids
    )
    return Series(
        by, freq, label, periods, covered, counts.sum(axis=0), groups, counts, no_time, coverage
    )  # fmt: skip


def _coverage(
    con: Any, received: str, window: str, params: list[Any], cond: str
) -> tuple[tuple[SourceCoverage, ...], int]:
    """Per source (file or trap): first and last received time; and the counted messages that
    have no received time at all. One scan."""
    rows = con.execute(
        f"SELECT split_part(coalesce(m.source, '?'), '#', 1) AS s, "
        f"min(m.received_at) FILTER (WHERE {received}), max(m.received_at) FILTER (WHERE {received}), "
        f"count(*) FILTER (WHERE {received}), count(*) FILTER (WHERE NOT ({received}) AND {cond}) "
        f"FROM messages m WHERE TRUE{window} OR NOT ({received}) GROUP BY 1 ORDER BY 2 NULLS LAST, 1",
        params,
    ).fetchall()
    cover = tuple(SourceCoverage(s, a, b, int(n)) for s, a, b, n, _ in rows if n)
    return cover, int(sum(r[4] for r in rows))
