"""The feeds' store side: write ``Sighting`` records to ``feed_sightings`` (a repeat import adds
nothing) and merge every (kind, indicator) into one ``feed_indicators`` row with first/last seen
and every listing date; then map the indicators to networks when a routing snapshot exists."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa

from trapline.enrich.feeds import read_feed
from trapline.errors import NotConfigured
from trapline.model import utcnow
from trapline.pipeline.adapters.asn import enrich
from trapline.store.duckdb import Store


@dataclass(slots=True, frozen=True)
class FeedImport:
    files: int
    sightings: int
    new_sightings: int
    indicators: int  # distinct (kind, indicator) in the store after the import
    mapped: int = 0  # IP/CIDR indicators a routing snapshot placed in a network
    notes: tuple[str, ...] = ()

    def line(self) -> str:
        return (
            f"{self.files} files, {self.sightings:,} sightings ({self.new_sightings:,} new), "
            f"{self.indicators:,} indicators in the store, {self.mapped:,} IP/CIDR ones mapped"
        )


def import_feeds(
    store: Store,
    path: Path,
    kind: str | None = None,
    as_of: date | None = None,
    settings: dict[str, Any] | None = None,
) -> FeedImport:
    """Read ``path``, merge its sightings into the store (re-importing adds nothing) and map the
    indicators to networks when a routing snapshot exists."""
    sightings, files, notes = read_feed(path, kind, as_of)
    now = utcnow()
    table = pa.table(
        {
            "kind": [s.kind for s in sightings],
            "indicator": [s.indicator for s in sightings],
            "indicator_type": [s.indicator_type for s in sightings],
            "first_seen": pa.array([s.first_seen for s in sightings], pa.timestamp("us")),
            "last_seen": pa.array([s.last_seen for s in sightings], pa.timestamp("us")),
            "source": [s.source for s in sightings],
            "family": pa.array([s.family for s in sightings], pa.string()),
            "imported_at": pa.array([now] * len(sightings), pa.timestamp("us")),
        }
    )
    con = store.con
    before = con.execute("SELECT count(*) FROM feed_sightings").fetchall()[0][0]
    con.register("new_sightings", table)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            """INSERT INTO feed_sightings
               SELECT DISTINCT n.* EXCLUDE (imported_at), n.imported_at FROM new_sightings n
               WHERE NOT EXISTS (
                 SELECT 1 FROM feed_sightings s WHERE s.kind = n.kind AND s.indicator = n.indicator
                   AND s.first_seen = n.first_seen AND s.last_seen = n.last_seen AND s.source = n.source)"""
        )
        merge_indicators(store)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("new_sightings")
    after, indicators = con.execute(
        "SELECT (SELECT count(*) FROM feed_sightings), (SELECT count(*) FROM feed_indicators)"
    ).fetchall()[0]
    mapped = 0
    try:
        mapped = enrich(store, settings or {}, feeds_only=True).mapped
    except NotConfigured:
        notes.append(
            "no routing snapshot yet: run `trapline enrich` after `trapline routing import`"
        )
    return FeedImport(files, len(sightings), after - before, indicators, mapped, tuple(notes))


def merge_indicators(store: Store) -> None:
    """Rebuild ``feed_indicators`` from all sightings: one row per (kind, indicator)."""
    store.con.execute("DELETE FROM feed_indicators")
    store.con.execute(
        """INSERT INTO feed_indicators
           SELECT kind, indicator, any_value(indicator_type), min(first_seen), max(last_seen),
                  count(*),
                  list_sort(list_distinct(flatten(list([CAST(first_seen AS DATE), CAST(last_seen AS DATE)])))),
                  list_sort(list(DISTINCT source)), arg_max(family, last_seen),
                  CASE WHEN any_value(indicator_type) = 'asn'
                       THEN CAST(substr(indicator, 3) AS BIGINT) END,
                  NULL, NULL
           FROM feed_sightings GROUP BY kind, indicator"""
    )
