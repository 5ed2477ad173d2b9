"""IP → prefix and origin AS, as of a date, over several routing snapshots (pure; no store).

A message from 2008 must be mapped with 2008 routing data: McColo's 208.66.192.0/22 was AS26780
then and belongs to other networks now. ``Routing`` holds every snapshot's memory-mapped index
(``trapline.routing.index``), picks a snapshot per address by date and answers a whole batch with
one vectorised search per snapshot. Loading it from a store is ``trapline.store.routing``'s job.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np

from trapline.errors import UsageError
from trapline.routing import index as routing_index
from trapline.routing.formats import cidr_route
from trapline.routing.snapshots import Snapshot

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


def unmapped_reason(ip: str, snapshot: str | None) -> str:
    """Why ``ip`` (a valid address) has no origin AS: a special-purpose range no one announces
    on the Internet (RFC 6890), or no route for it in ``snapshot``."""
    addr = ipaddress.ip_address(ip)
    for test, reason in (
        (addr.is_loopback, "loopback address"),
        (addr.is_link_local, "link-local address"),
        (addr.is_multicast, "multicast address"),
        (addr.is_unspecified, "unspecified address"),
        (addr.is_private, "private or special-purpose (RFC 6890)"),
        (addr.is_reserved, "reserved, never announced"),
    ):
        if test:
            return reason
    return f"not announced in {snapshot}" if snapshot else "no snapshot covers this date"


# --- lookups ------------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class LoadedSnapshot:
    info: Snapshot
    index: routing_index.Index


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
        values, ok = routing_index.parse_ipv4(ips)
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
                route[:] = routing_index.lookup_v4(self.snapshots[s].index, values)
                snap[:] = s
            else:
                route[sel] = routing_index.lookup_v4(self.snapshots[s].index, values[sel])
                snap[sel] = s
        route[~ok] = -1
        snap[~ok] = -1
        if len(v6_pos):
            hi, lo, ok6 = routing_index.parse_ipv6([str(ips[i]) for i in v6_pos.tolist()])
            ok6 &= hi >> np.uint64(61) == 1  # 2000::/3 is the global unicast space (RFC 4291 §2.4)
            v6_pos, hi, lo = v6_pos[ok6], hi[ok6], lo[ok6]
            family[v6_pos] = 6
            chosen = self.choose(days[v6_pos], 6, mode)
            for s, sel in _groups(chosen):
                route[v6_pos[sel]] = routing_index.lookup_v6(
                    self.snapshots[s].index, hi[sel], lo[sel]
                )
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
                hit = cache[key] = (asn, routing_index.route_prefix(index, f, r))
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


def day_numbers(times: Sequence[datetime | date | None]) -> np.ndarray:
    """Days since 1970 per timestamp (-1 for None), the unit ``Routing.choose`` compares."""
    out = np.full(len(times), -1, dtype=np.int64)
    for i, t in enumerate(times):
        if t is not None:
            d = t.date() if isinstance(t, datetime) else t
            out[i] = (d - EPOCH).days
    return out
