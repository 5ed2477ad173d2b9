"""The store side of routing: import tables and AS names, list snapshots, load the lookup context.

Each snapshot is a row in ``routing_snapshots``, its blocks in ``routing_prefixes`` and its index
in ``<data_dir>/routing/<snapshot>/*.npy``; the lookups themselves are ``trapline.routing``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from importlib import resources
from pathlib import Path

import duckdb
import pyarrow as pa

from trapline.errors import NotFound, UsageError
from trapline.model import utcnow
from trapline.routing import index as routing_index
from trapline.routing import snapshots
from trapline.routing.formats import (
    ParsedTable,
    date_from_name,
    guess_format,
    read_asnames_json,
    read_table,
)
from trapline.routing.lookup import LoadedSnapshot, Lookup, Routing, day_numbers
from trapline.routing.snapshots import Snapshot
from trapline.store.duckdb import Store

# --- import ------------------------------------------------------------------------------------


def index_dir(store: Store, snapshot: str) -> Path:
    """The folder of ``snapshot``'s memory-mapped index in ``store``'s data directory."""
    return snapshots.index_dir(store.data_dir, snapshot)


def import_routing(
    store: Store, path: Path, *, as_of: date | None = None, fmt: str | None = None
) -> Snapshot:
    """Import one routing table as a snapshot (replacing an earlier import of the same file+date)."""
    path = Path(path)
    as_of = as_of or date_from_name(path)
    if as_of is None:
        raise UsageError(
            f"cannot tell the date of {path.name} from its name; pass --as-of YYYY-MM-DD "
            "(the day the table describes)"
        )
    fmt = fmt or guess_format(path)
    table = read_table(path, fmt)
    snapshot = Snapshot(
        snapshot_id=snapshots.snapshot_id(path, as_of),
        as_of=as_of,
        source=str(path),
        format=fmt,
        n_v4=sum(1 for r in table.routes if r.family == 4),
        n_v6=sum(1 for r in table.routes if r.family == 6),
        n_asns=len({r.asn for r in table.routes}),
        notes=table.notes,
    )
    index = routing_index.build(table.routes)
    routing_index.save(index, index_dir(store, snapshot.snapshot_id))
    _write_snapshot(store, snapshot, table)
    if table.names:
        _write_names(store, table.names, source=str(path), as_of=as_of)
    return snapshot


def _write_snapshot(store: Store, snap: Snapshot, table: ParsedTable) -> None:
    routes = table.routes
    prefixes = pa.table(
        {
            "snapshot_id": pa.array([snap.snapshot_id] * len(routes)),
            "family": pa.array([r.family for r in routes], pa.int8()),
            "prefix": pa.array(
                [snapshots.route_text(r.family, r.start, r.end, r.length) for r in routes]
            ),
            "asn": pa.array([r.asn for r in routes], pa.int64()),
            "addresses": pa.array([float(r.end - r.start + 1) for r in routes]),
            "first4": pa.array([r.start if r.family == 4 else None for r in routes], pa.int64()),
            "last4": pa.array([r.end if r.family == 4 else None for r in routes], pa.int64()),
        }
    )
    con = store.con
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM routing_prefixes WHERE snapshot_id = ?", [snap.snapshot_id])
        con.execute("DELETE FROM routing_snapshots WHERE snapshot_id = ?", [snap.snapshot_id])
        con.register("new_prefixes", prefixes)
        con.execute("INSERT INTO routing_prefixes SELECT * FROM new_prefixes")
        con.unregister("new_prefixes")
        con.execute(
            "INSERT INTO routing_snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                snap.snapshot_id,
                snap.as_of,
                snap.source,
                snap.format,
                snap.n_v4,
                snap.n_v6,
                snap.n_asns,
                list(snap.notes),
                utcnow(),
            ],
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def import_asnames(
    store: Store, path: Path, *, as_of: date | None = None, source: str | None = None
) -> int:
    """Import an ``asnames.json``; ``as_of`` is when the names were current (default: file date)."""
    names = read_asnames_json(Path(path))
    if as_of is None:
        as_of = date_from_name(Path(path))
    _write_names(store, names, source=source or str(path), as_of=as_of)
    return len(names)


def _write_names(store: Store, names: dict[int, str], *, source: str, as_of: date | None) -> None:
    rows = pa.table(
        {
            "asn": pa.array(list(names), pa.int64()),
            "name": pa.array(list(names.values())),
            "source": pa.array([source] * len(names)),
            "as_of": pa.array([as_of] * len(names), pa.date32()),
        }
    )
    store.con.execute("DELETE FROM as_names WHERE source = ?", [source])
    store.con.register("new_names", rows)
    store.con.execute("INSERT INTO as_names SELECT * FROM new_names")
    store.con.unregister("new_names")


@dataclass(slots=True, frozen=True)
class ImportResult:
    """What `trapline routing import` did: a snapshot, or a batch of AS names."""

    snapshot: Snapshot | None = None
    names: int = 0
    source: str = ""

    def line(self) -> str:
        if self.snapshot is None:
            return f"{self.names:,} AS names from {self.source}"
        s = self.snapshot
        return (
            f"snapshot {s.snapshot_id} (as of {s.as_of}): {s.n_v4:,} IPv4 and {s.n_v6:,} IPv6 "
            f"blocks, {s.n_asns:,} origin ASes"
        )


def import_any(
    store: Store, path: Path, *, as_of: date | None = None, fmt: str | None = None
) -> ImportResult:
    """A routing table, or an AS-name file (``asnames*.json`` or ``--format asnames``)."""
    path = Path(path)
    if fmt == "asnames" or (fmt is None and "asnames" in path.name.lower()):
        return ImportResult(names=import_asnames(store, path, as_of=as_of), source=str(path))
    return ImportResult(
        snapshot=import_routing(store, path, as_of=as_of, fmt=fmt), source=str(path)
    )


def import_bundled_routing(store: Store) -> str:
    """Import the 2008-05-01 RouteViews table and AS names shipped with trapline (for the demo)."""
    folder = resources.files("trapline").joinpath("data", "routing")
    with resources.as_file(folder) as path:
        snap = import_routing(store, path / "ipasn_20080501_v12.dat.gz")
        n = import_asnames(
            store, path / "asnames.json.gz", as_of=date(2015, 6, 1), source="bundled:asnames.json"
        )
        n += import_asnames(
            store,
            path / "asnames_historical.json",
            as_of=date(2008, 5, 1),
            source="bundled:asnames_historical.json",
        )
    return f"routing {snap.snapshot_id}: {snap.n_v4:,} IPv4 prefixes, {snap.n_asns:,} ASNs; {n:,} AS names"


def list_snapshots(store: Store) -> list[Snapshot]:
    rows = store.con.execute(
        "SELECT snapshot_id, as_of, source, format, n_v4, n_v6, n_asns, notes "
        "FROM routing_snapshots ORDER BY as_of, snapshot_id"
    ).fetchall()
    return [Snapshot(r[0], r[1], r[2], r[3], r[4], r[5], r[6], tuple(r[7] or ())) for r in rows]


def load_routing(store: Store, *, include_partial: bool = False) -> Routing:
    """Load (memory-map) every snapshot's index; rebuild any index missing from the data dir.

    Partial snapshots (a truncated file: mapping with it would call covered space unrouted) are
    left out unless ``include_partial`` (setting ``routing_allow_partial``)."""
    loaded = []
    for info in list_snapshots(store):
        if info.partial and not include_partial:
            continue
        folder = index_dir(store, info.snapshot_id)
        if not routing_index.is_saved(folder):
            routing_index.save(_rebuild(store, info.snapshot_id), folder)
        loaded.append(LoadedSnapshot(info, routing_index.load(folder)))
    return Routing(tuple(loaded))


def _rebuild(store: Store, snapshot_id: str) -> routing_index.Index:
    """The index from ``routing_prefixes`` when the .npy cache was deleted or not copied."""
    rows = store.con.execute(
        "SELECT prefix, asn, first4, last4 FROM routing_prefixes WHERE snapshot_id = ?",
        [snapshot_id],
    ).fetchall()
    return routing_index.build(snapshots.routes_from_rows(rows))


# AS names every store knows without an import: (package file, the day its names were current).
BUNDLED_NAMES: tuple[tuple[str, date], ...] = (
    ("asnames_historical.json", date(2008, 5, 1)),
    ("asnames.json.gz", date(2015, 6, 1)),
    ("asnames_20260617.json.gz", date(2026, 6, 17)),
)


@cache
def bundled_names() -> dict[int, tuple[tuple[date, str], ...]]:
    """The bundled dated AS names (data/routing, ATTRIBUTION.md), read once per process."""
    out: dict[int, list[tuple[date, str]]] = {}
    folder = resources.files("trapline").joinpath("data", "routing")
    for name, day in BUNDLED_NAMES:
        with resources.as_file(folder.joinpath(name)) as path:
            for asn, text in read_asnames_json(path).items():
                out.setdefault(asn, []).append((day, text))
    return {asn: tuple(sorted(options)) for asn, options in out.items()}


def as_names(
    store: Store, asns: Sequence[int], near: Sequence[date | None]
) -> dict[tuple[int, date | None], str]:
    """Name per (asn, date): the name whose ``as_of`` is nearest that date (ASNs get reused),
    among the names imported into ``store`` and the bundled ones (``bundled_names``)."""
    return names_on(store.con, asns, near)


def names_on(
    con: duckdb.DuckDBPyConnection, asns: Sequence[int], near: Sequence[date | None]
) -> dict[tuple[int, date | None], str]:
    """``as_names`` on a bare connection (read-side queries hold one, not a Store)."""
    wanted = sorted({a for a in asns if a is not None})
    if not wanted:
        return {}
    try:
        rows = con.execute(
            "SELECT asn, name, as_of FROM as_names WHERE asn IN (SELECT unnest(?::BIGINT[])) "
            "ORDER BY asn, as_of NULLS LAST, source",
            [wanted],
        ).fetchall()
    except duckdb.CatalogException:  # a store opened read-only before its routing schema
        rows = []
    by_asn: dict[int, list[tuple[date | None, str]]] = {}
    for asn, name, as_of in rows:
        by_asn.setdefault(asn, []).append((as_of, name))
    bundled = bundled_names()
    for asn in wanted:
        # Imported names first: on a tie in distance, min() keeps the first (the user's import).
        merged = [*by_asn.get(asn, []), *bundled.get(asn, ())]
        if merged:
            by_asn[asn] = sorted(merged, key=lambda o: (o[0] is None, o[0] or date.min))
    out: dict[tuple[int, date | None], str] = {}
    for asn, day in zip(asns, near, strict=True):
        options = by_asn.get(asn)
        if options:
            out[(asn, day)] = snapshots.nearest_name(options, day)
    return out


def lookup(
    store: Store,
    ips: Sequence[str],
    at: datetime | date | None = None,
    mode: str = "nearest",
    routing: Routing | None = None,
) -> list[Lookup]:
    """Map addresses as of ``at`` (None: the newest snapshot)."""
    routing = routing or load_routing(store)
    if not routing.snapshots:
        raise NotFound("no routing snapshot imported; run `trapline routing import FILE` first")
    days = day_numbers([at] * len(ips))
    snap, route, family = routing.lookup_many(ips, days, mode)
    asns, prefixes, snaps = routing.describe(snap, route, family)
    dates = [routing.snapshots[s].info.as_of if s >= 0 else None for s in snap.tolist()]
    # The name current on the day asked for (McColo in 2008), else on the snapshot's day.
    asked = at.date() if isinstance(at, datetime) else at
    name_days = [asked or d for d in dates]
    names = as_names(
        store,
        [a for a in asns if a is not None],
        [d for a, d in zip(asns, name_days, strict=True) if a is not None],
    )
    return [
        Lookup(ip, p, a, names.get((a, n)) if a is not None else None, sid, d)
        for ip, a, p, sid, d, n in zip(ips, asns, prefixes, snaps, dates, name_days, strict=True)
    ]
