"""Routing snapshots in the store: import tables and AS names, list them, find their index.

Each snapshot is one table with the date it describes: a row in ``routing_snapshots``, its blocks
in ``routing_prefixes`` and its lookup index in ``<data_dir>/routing/<snapshot>/*.npy``. Lookups
over them live in ``trapline.enrich.asn``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path

import pyarrow as pa

from trapline.enrich import asn_index
from trapline.enrich.routing_formats import (
    ParsedTable,
    date_from_name,
    guess_format,
    read_asnames_json,
    read_table,
)
from trapline.errors import UsageError
from trapline.store.duckdb import Store


@dataclass(slots=True, frozen=True)
class Snapshot:
    snapshot_id: str
    as_of: date
    source: str
    format: str
    n_v4: int
    n_v6: int
    n_asns: int
    notes: tuple[str, ...] = ()


# --- import ------------------------------------------------------------------------------------


def _stem(path: Path) -> str:
    name = Path(path).name
    for suffix in (".gz", ".bz2", ".xz", ".dat", ".csv", ".json", ".mrt", ".txt"):
        name = name.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "table"


def index_dir(store: Store, snapshot_id: str) -> Path:
    return store.data_dir / "routing" / re.sub(r"[^A-Za-z0-9_.-]+", "_", snapshot_id)


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
        snapshot_id=f"{_stem(path)}@{as_of.isoformat()}",
        as_of=as_of,
        source=str(path),
        format=fmt,
        n_v4=sum(1 for r in table.routes if r.family == 4),
        n_v6=sum(1 for r in table.routes if r.family == 6),
        n_asns=len({r.asn for r in table.routes}),
        notes=table.notes,
    )
    index = asn_index.build(table.routes)
    asn_index.save(index, index_dir(store, snapshot.snapshot_id))
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
            "prefix": pa.array([_route_text(r.family, r.start, r.end, r.length) for r in routes]),
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
                datetime.now(UTC).replace(tzinfo=None),
            ],
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def _route_text(family: int, start: int, end: int, length: int) -> str:
    addr = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    if length >= 0:
        return f"{addr(start)}/{length}"
    return f"{addr(start)}-{addr(end)}"


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
