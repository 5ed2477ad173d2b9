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

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

import numpy as np

from trapline.enrich import asn_index
from trapline.enrich.routing_formats import Route, cidr_route
from trapline.enrich.snapshots import (
    ImportResult,
    Snapshot,
    import_any,
    import_asnames,
    import_bundled_routing,
    import_routing,
    index_dir,
    list_snapshots,
)
from trapline.errors import NotFound, RoutingDataError, UsageError
from trapline.model import Message
from trapline.store.duckdb import Store

CHOICES = ("nearest", "latest-before")
EPOCH = date(1970, 1, 1)


@dataclass(slots=True, frozen=True)
class Lookup:
    """One answer: which block announced ``ip``, by whom, according to which snapshot."""

    ip: str
    prefix: str | None
    asn: int | None
    as_name: str | None
    snapshot: str | None
    snapshot_date: date | None


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
        family[ok] = 4
        # Search every parsed value (invalid ones are just numbers) and mask afterwards: with one
        # snapshot that is one search and no gathers or scatters over the whole batch.
        for s, sel in _groups(self.choose(days, 4, mode)):
            if isinstance(sel, slice):
                route[:] = asn_index.lookup_v4(self.snapshots[s].index, values)
                snap[:] = s
            else:
                route[sel] = asn_index.lookup_v4(self.snapshots[s].index, values[sel])
                snap[sel] = s
        route[~ok] = -1
        snap[~ok] = -1
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
        # An undated name only wins when no dated one exists.
        out[(asn, day)] = min(options, key=lambda o: abs((o[0] - day).days) if o[0] else 10**7)[1]
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


def enrich_batch(
    messages: Sequence[Message], routing: Routing, mode: str = "nearest"
) -> list[Message]:
    """Pure stage (ARCHITECTURE rule 1): the messages with ``origin_asn``, ``origin_prefix`` and
    ``routing_snapshot`` filled, each as of its own ``received_at``. No I/O: ``routing`` is
    read-only context, so the same call runs in a process pool or a Spark partition."""
    pending = [i for i, m in enumerate(messages) if m.origin_ip]
    ips = [messages[i].origin_ip or "" for i in pending]
    snap, route, family = routing.lookup_many(
        ips, day_numbers([messages[i].received_at for i in pending]), mode
    )
    asns, prefixes, snaps = routing.describe(snap, route, family)
    out = list(messages)
    for k, i in enumerate(pending):
        out[i] = replace(
            messages[i], origin_asn=asns[k], origin_prefix=prefixes[k], routing_snapshot=snaps[k]
        )
    return out


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
    "ImportResult",
    "LoadedSnapshot",
    "Lookup",
    "Routing",
    "RoutingDataError",
    "Snapshot",
    "as_names",
    "day_numbers",
    "enrich_batch",
    "enrich_stage",
    "import_any",
    "import_asnames",
    "import_bundled_routing",
    "import_routing",
    "index_dir",
    "list_snapshots",
    "load_routing",
    "lookup",
    "parse_asn",
    "require_date",
]
