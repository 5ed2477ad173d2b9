"""Routing snapshots: one table with the date it describes, its id, its index folder, AS names.

Each snapshot is stored as a row in ``routing_snapshots``, its blocks in ``routing_prefixes`` and
its lookup index in ``<data_dir>/routing/<snapshot>/*.npy``; this module holds what those share
without touching a store (``trapline.store.routing`` reads and writes them).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from trapline.routing.formats import Route, cidr_route

# An undated AS name is this many days from every date, so any dated name wins over it.
UNDATED_DISTANCE = 10**7


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

    @property
    def partial(self) -> bool:
        """An incomplete table (see ``formats.PARTIAL``): not used unless allowed."""
        return any(note.startswith("partial: ") for note in self.notes)


def _stem(path: Path) -> str:
    name = Path(path).name
    for suffix in (".gz", ".bz2", ".xz", ".dat", ".csv", ".json", ".mrt", ".txt"):
        name = name.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "table"


def snapshot_id(path: Path, as_of: date) -> str:
    """``'<file stem>@<as_of>'``, e.g. ``'ipasn_20080501_v12@2008-05-01'``."""
    return f"{_stem(path)}@{as_of.isoformat()}"


def index_dir(data_dir: Path, snapshot: str) -> Path:
    """The folder of a snapshot's memory-mapped index inside a data directory."""
    return Path(data_dir) / "routing" / re.sub(r"[^A-Za-z0-9_.-]+", "_", snapshot)


def route_text(family: int, start: int, end: int, length: int) -> str:
    """CIDR text of a block, or ``'first-last'`` for a range that is not one CIDR."""
    addr = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    if length >= 0:
        return f"{addr(start)}/{length}"
    return f"{addr(start)}-{addr(end)}"


def routes_from_rows(rows: Iterable[tuple[str, int, int | None, int | None]]) -> list[Route]:
    """Routes from stored ``(prefix, asn, first4, last4)`` rows (to rebuild a lost index)."""
    routes = []
    for prefix, asn, first4, last4 in rows:
        if "/" in prefix:
            routes.append(cidr_route(prefix, asn))
        else:
            routes.append(Route(4, first4 or 0, last4 or 0, -1, asn))
    return routes


def nearest_name(options: list[tuple[date | None, str]], day: date | None) -> str:
    """The AS name current nearest ``day`` (ASNs get reused); ``options`` sorted by date, undated
    last. Without a day the last option wins."""
    if day is None:
        return options[-1][1]
    return min(options, key=lambda o: abs((o[0] - day).days) if o[0] else UNDATED_DISTANCE)[1]
