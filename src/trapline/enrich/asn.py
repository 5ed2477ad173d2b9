"""IP → prefix, origin AS and AS name, as of a date, over several routing snapshots.

A message from 2008 must be mapped with 2008 routing data (ARCHITECTURE rule 5): McColo's
208.66.192.0/22 was AS26780 then and belongs to other networks now. Each snapshot is imported
once into the store (``routing_snapshots``, ``routing_prefixes``) plus a memory-mapped index in
``<data_dir>/routing/<snapshot>/``; ``Routing`` picks a snapshot per address by date and answers
a whole batch with one vectorised search per snapshot.

Enrichment of stored rows lives in ``trapline.enrich.asn_enrich``; its pipeline stage is
re-exported here as ``enrich_stage`` (the settings name ``trapline.enrich.asn:enrich_stage``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from trapline.enrich import asn_index
from trapline.enrich.routing_formats import (
    ParsedTable,
    cidr_route,
    date_from_name,
    guess_format,
    read_asnames_json,
    read_table,
)
from trapline.errors import NotFound, RoutingDataError, UsageError
from trapline.store.duckdb import Store

CHOICES = ("nearest", "latest-before")
EPOCH = date(1970, 1, 1)


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


@dataclass(slots=True, frozen=True)
class Lookup:
    """One answer: which block announced ``ip``, by whom, according to which snapshot."""

    ip: str
    prefix: str | None
    asn: int | None
    as_name: str | None
    snapshot: str | None
    snapshot_date: date | None


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
    import ipaddress

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


# --- lookups ------------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class LoadedSnapshot:
    info: Snapshot
    index: asn_index.Index


@dataclass(slots=True, frozen=True)
class Routing:
    """Read-only lookup context: every snapshot's index, memory-mapped, sorted by date."""

    snapshots: tuple[LoadedSnapshot, ...]

    def choose(self, days: np.ndarray, family: int, mode: str = "nearest") -> np.ndarray:
        """Snapshot number per day count (days since 1970; -1 = unknown) for one address family.

        Unknown dates use the newest snapshot. On equal dates the fuller table wins, so a
        truncated sample never shadows the complete table of the same day.
        """
        if mode not in CHOICES:
            raise UsageError(f"routing choice {mode!r} unknown; use one of {', '.join(CHOICES)}")
        usable = [
            i
            for i, s in enumerate(self.snapshots)
            if (s.info.n_v4 if family == 4 else s.info.n_v6) > 0
        ]
        out = np.full(len(days), -1, dtype=np.int64)
        if not usable:
            return out
        by_day: dict[int, int] = {}
        for i in usable:  # best snapshot per distinct date
            s = self.snapshots[i].info
            d = (s.as_of - EPOCH).days
            size = s.n_v4 if family == 4 else s.n_v6
            j = by_day.get(d)
            if j is None or size > (
                self.snapshots[j].info.n_v4 if family == 4 else self.snapshots[j].info.n_v6
            ):
                by_day[d] = i
        snap_days = np.array(sorted(by_day), dtype=np.int64)
        snap_ids = np.array([by_day[d] for d in snap_days], dtype=np.int64)
        if len(snap_days) == 1 and mode == "nearest":
            return np.full(len(days), snap_ids[0], dtype=np.int64)  # one table answers all
        known = days >= 0
        right = np.searchsorted(snap_days, days, side="right")  # first snapshot after the day
        before = right - 1
        if mode == "latest-before":
            pick = np.where(before >= 0, before, -1)
        else:
            after = np.minimum(right, len(snap_days) - 1)
            gap_before = np.where(
                before >= 0, days - snap_days[np.maximum(before, 0)], np.iinfo(np.int64).max
            )
            gap_after = np.abs(snap_days[after] - days)
            pick = np.where(gap_after < gap_before, after, np.maximum(before, 0))
        pick = np.where(known, pick, len(snap_days) - 1)
        out = np.where(pick >= 0, snap_ids[np.maximum(pick, 0)], -1)
        return out

    def lookup_many(
        self, ips: Sequence[str], days: np.ndarray | None = None, mode: str = "nearest"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(snapshot number, route number, family) per address; -1 where nothing answers.

        IPv4 is parsed and searched vectorised; IPv6 goes through ``ipaddress`` then the 128-bit
        search. Non-global addresses (RFC 1918, loopback, ...) are left unmapped on purpose.
        """
        n = len(ips)
        if days is None:
            days = np.full(n, -1, dtype=np.int64)
        snap = np.full(n, -1, dtype=np.int64)
        route = np.full(n, -1, dtype=np.int64)
        family = np.zeros(n, dtype=np.int8)
        values, ok = asn_index.parse_ipv4(ips)
        # Whatever is not a dotted quad may be IPv6; only those few go through ipaddress.
        v6_pos = np.array(
            [i for i in np.nonzero(~ok)[0].tolist() if ":" in str(ips[i])], dtype=np.int64
        )
        ok &= ~_special_v4(values)
        v4_pos = np.nonzero(ok)[0]
        values = values[ok]
        family[v4_pos] = 4
        chosen = self.choose(days[v4_pos], 4, mode)
        for s, sel in _groups(chosen):
            route[v4_pos[sel]] = asn_index.lookup_v4(self.snapshots[s].index, values[sel])
            snap[v4_pos[sel]] = s
        if len(v6_pos):
            hi, lo, ok6 = asn_index.parse_ipv6([str(ips[i]) for i in v6_pos.tolist()])
            ok6 &= hi >> np.uint64(61) == 1  # 2000::/3 is the global unicast space (RFC 4291 §2.4)
            v6_pos, hi, lo = v6_pos[ok6], hi[ok6], lo[ok6]
            family[v6_pos] = 6
            chosen = self.choose(days[v6_pos], 6, mode)
            for s, sel in _groups(chosen):
                route[v6_pos[sel]] = asn_index.lookup_v6(self.snapshots[s].index, hi[sel], lo[sel])
                snap[v6_pos[sel]] = s
        return snap, route, family

    def describe(
        self, snap: np.ndarray, route: np.ndarray, family: np.ndarray
    ) -> tuple[list[int | None], list[str | None], list[str | None]]:
        """ASN, prefix text and snapshot id per answer (prefix text built once per distinct route)."""
        asns: list[int | None] = []
        prefixes: list[str | None] = []
        snaps: list[str | None] = []
        cache: dict[tuple[int, int, int], tuple[int, str]] = {}
        for s, r, f in zip(snap.tolist(), route.tolist(), family.tolist(), strict=True):
            snaps.append(self.snapshots[s].info.snapshot_id if s >= 0 else None)
            if r < 0 or s < 0:
                asns.append(None)
                prefixes.append(None)
                continue
            key = (s, r, f)
            hit = cache.get(key)
            if hit is None:
                index = self.snapshots[s].index
                asn = int(index.v4_asn[r] if f == 4 else index.v6_asn[r])
                hit = cache[key] = (asn, asn_index.route_prefix(index, f, r))
            asns.append(hit[0])
            prefixes.append(hit[1])
        return asns, prefixes, snaps


def _groups(chosen: np.ndarray) -> list[tuple[int, np.ndarray | slice]]:
    """(snapshot, selector) per chosen snapshot; one snapshot for everything needs no mask."""
    if len(chosen) == 0:
        return []
    lo, hi = int(chosen.min()), int(chosen.max())
    if lo == hi:
        return [(lo, slice(None))] if lo >= 0 else []
    return [(int(s), chosen == s) for s in np.unique(chosen[chosen >= 0])]


_SPECIAL_V4 = [  # RFC 6890 special-purpose blocks that never name an origin network
    ("0.0.0.0", 8),
    ("10.0.0.0", 8),
    ("100.64.0.0", 10),
    ("127.0.0.0", 8),
    ("169.254.0.0", 16),
    ("172.16.0.0", 12),
    ("192.0.0.0", 24),
    ("192.0.2.0", 24),
    ("192.168.0.0", 16),
    ("198.18.0.0", 15),
    ("198.51.100.0", 24),
    ("203.0.113.0", 24),
    ("224.0.0.0", 3),
]


def _special_table() -> tuple[np.ndarray, np.ndarray]:
    blocks = sorted(
        (cidr_route(f"{net}/{length}", 0) for net, length in _SPECIAL_V4), key=lambda r: r.start
    )
    return (
        np.array([r.start for r in blocks], dtype=np.uint32),
        np.array([r.end for r in blocks], dtype=np.uint32),
    )


_SPECIAL_STARTS, _SPECIAL_ENDS = _special_table()


def _special_v4(values: np.ndarray) -> np.ndarray:
    """True where an address lies in an RFC 6890 block (they are disjoint: one search)."""
    pos = np.searchsorted(_SPECIAL_STARTS, values, side="right") - 1
    return (pos >= 0) & (values <= _SPECIAL_ENDS[np.maximum(pos, 0)])


def load_routing(store: Store) -> Routing:
    """Load (memory-map) every snapshot's index; rebuild any index missing from the data dir."""
    loaded = []
    for info in list_snapshots(store):
        folder = index_dir(store, info.snapshot_id)
        if not asn_index.is_saved(folder):
            asn_index.save(_rebuild(store, info.snapshot_id), folder)
        loaded.append(LoadedSnapshot(info, asn_index.load(folder)))
    return Routing(tuple(loaded))


def _rebuild(store: Store, snapshot_id: str) -> asn_index.Index:
    """The index from ``routing_prefixes`` when the .npy cache was deleted or not copied."""
    rows = store.con.execute(
        "SELECT prefix, asn, first4, last4 FROM routing_prefixes WHERE snapshot_id = ?",
        [snapshot_id],
    ).fetchall()
    routes = []
    for prefix, asn, first4, last4 in rows:
        if "/" in prefix:
            routes.append(cidr_route(prefix, asn))
        else:
            from trapline.enrich.routing_formats import Route

            routes.append(Route(4, first4, last4, -1, asn))
    return asn_index.build(routes)


def day_numbers(times: Sequence[datetime | date | None]) -> np.ndarray:
    """Days since 1970 per timestamp (-1 for None), the unit ``Routing.choose`` compares."""
    out = np.full(len(times), -1, dtype=np.int64)
    for i, t in enumerate(times):
        if t is not None:
            d = t.date() if isinstance(t, datetime) else t
            out[i] = (d - EPOCH).days
    return out


def as_names(
    store: Store, asns: Sequence[int], near: Sequence[date | None]
) -> dict[tuple[int, date | None], str]:
    """Name per (asn, date): the name whose ``as_of`` is nearest that date (ASNs get reused)."""
    wanted = sorted({a for a in asns if a is not None})
    if not wanted:
        return {}
    rows = store.con.execute(
        "SELECT asn, name, as_of FROM as_names WHERE asn IN (SELECT unnest(?::BIGINT[])) "
        "ORDER BY asn, as_of NULLS LAST, source",
        [wanted],
    ).fetchall()
    by_asn: dict[int, list[tuple[date | None, str]]] = {}
    for asn, name, as_of in rows:
        by_asn.setdefault(asn, []).append((as_of, name))
    out: dict[tuple[int, date | None], str] = {}
    for asn, day in zip(asns, near, strict=True):
        options = by_asn.get(asn)
        if not options:
            continue
        if day is None:
            out[(asn, day)] = options[-1][1]
            continue
        out[(asn, day)] = min(options, key=lambda o: abs(((o[0] or day) - day).days))[1]
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
    names = as_names(
        store,
        [a for a in asns if a is not None],
        [d for a, d in zip(asns, dates, strict=True) if a is not None],
    )
    return [
        Lookup(ip, p, a, names.get((a, d)) if a is not None else None, sid, d)
        for ip, a, p, sid, d in zip(ips, asns, prefixes, snaps, dates, strict=True)
    ]


def parse_asn(text: str) -> int:
    """'AS26780', 'as26780' or '26780' → 26780."""
    body = text.strip().upper().removeprefix("AS")
    if not body.isdigit():
        raise UsageError(f"{text!r} is not an AS number; write it as AS26780 or 26780")
    return int(body)


def enrich_stage(store: Store, message_ids: list[str], settings: dict[str, Any]) -> str:
    """Pipeline stage (settings ``post_ingest_stages``): map the new messages' addresses."""
    from trapline.enrich.asn_enrich import enrich_messages

    return enrich_messages(store, message_ids, settings)


def require_date(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"{text!r} is not a date; write YYYY-MM-DD") from exc


__all__ = [
    "CHOICES",
    "Lookup",
    "Routing",
    "RoutingDataError",
    "Snapshot",
    "enrich_stage",
    "import_asnames",
    "import_bundled_routing",
    "import_routing",
    "list_snapshots",
    "load_routing",
    "lookup",
]
