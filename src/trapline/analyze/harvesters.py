"""Harvesters: visitors ranked by the spam their harvested addresses drew, and visit lookups.

SQL over ``visits`` and the messages the harvest stage linked to them; the CLI entry points open
the store read-only (``serve`` may hold the write lock).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from trapline.errors import NotFound, StoreError, StoreLocked
from trapline.store.duckdb import Store, open_store
from trapline.store.routing import load_routing, lookup
from trapline.store.trap_domains import known as known_trap_domains
from trapline.traps import addresses


@dataclass(slots=True, frozen=True)
class Harvester:
    """One visitor IP ranked by the spam its harvested addresses drew."""

    ip: str
    visits: int  # all honeypot visits from this IP
    addresses: int  # addresses issued to it that later received mail
    messages: int  # messages to those addresses
    first_spam_delay_s: float | None  # shortest harvest-to-first-spam delay
    first_visit: datetime | None
    last_spam: datetime | None
    user_agents: tuple[str, ...]
    ignored_robots: bool
    asn: int | None = None
    as_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_HARVESTERS_SQL = """
WITH linked AS (
    SELECT message_id, trap_visit_id AS visit_id FROM recipients WHERE trap_visit_id IS NOT NULL
    UNION
    SELECT id, trap_visit_id FROM messages WHERE trap_visit_id IS NOT NULL
),
spam AS (
    SELECT v.ip, v.id AS visit_id, v.address, v.visited_at, l.message_id,
           coalesce(m.received_at, m.ingested_at) AS got_at
    FROM linked l JOIN visits v ON v.id = l.visit_id JOIN messages m ON m.id = l.message_id
),
per_ip AS (
    SELECT ip, count(DISTINCT address) AS addresses, count(DISTINCT message_id) AS messages,
           min(epoch(got_at) - epoch(visited_at)) AS first_spam_delay_s, max(got_at) AS last_spam
    FROM spam GROUP BY ip
)
SELECT p.ip, count(DISTINCT v.id) AS visits, p.addresses, p.messages, p.first_spam_delay_s,
       min(v.visited_at) AS first_visit, p.last_spam,
       list(DISTINCT v.user_agent) FILTER (WHERE v.user_agent IS NOT NULL) AS agents,
       bool_or(coalesce(v.ignored_robots, false)) AS ignored_robots
FROM per_ip p JOIN visits v ON v.ip = p.ip
GROUP BY p.ip, p.addresses, p.messages, p.first_spam_delay_s, p.last_spam
ORDER BY p.messages DESC, p.addresses DESC, p.ip
LIMIT ?
"""


def harvesters(store: Store, limit: int = 100) -> list[Harvester]:
    """Harvesters ranked by the spam their addresses drew, with AS data when routing exists."""
    rows = store.con.execute(_HARVESTERS_SQL, [limit]).fetchall()
    asns = _asn_of(store, [r[0] for r in rows], [r[5] for r in rows])
    return [
        Harvester(
            ip=r[0],
            visits=int(r[1]),
            addresses=int(r[2]),
            messages=int(r[3]),
            first_spam_delay_s=float(r[4]) if r[4] is not None else None,
            first_visit=r[5],
            last_spam=r[6],
            user_agents=tuple(sorted(r[7] or ())),
            ignored_robots=bool(r[8]),
            asn=asns.get(r[0], (None, None))[0],
            as_name=asns.get(r[0], (None, None))[1],
        )
        for r in rows
    ]


def _asn_of(
    store: Store, ips: list[str], when: list[datetime | None]
) -> dict[str, tuple[int | None, str | None]]:
    """Harvester IP → (ASN, AS name) as of its first visit (ARCHITECTURE rule 5: routing of
    that day, not today's); empty when no routing snapshot is imported."""
    if not ips:
        return {}
    out: dict[str, tuple[int | None, str | None]] = {}
    try:
        routing = load_routing(store)
        if not routing.snapshots:
            return {}
        for ip, at in zip(ips, when, strict=True):
            found = lookup(store, [ip], at, routing=routing)
            out[ip] = (found[0].asn, found[0].as_name)
    except (NotFound, StoreError, duckdb.Error):
        return {}
    return out


_VISIT_COLUMNS = (
    "id, seq, address, visited_at, ip, user_agent, method, host, path, referer, headers, "
    "sensor_id, ignored_robots, read_robots"
)


def visit_details(store: Store, visit_id: str) -> dict[str, Any] | None:
    """One visit as a dict (headers parsed), or None if the store has no such visit."""
    row = store.con.execute(
        f"SELECT {_VISIT_COLUMNS} FROM visits WHERE id = ?", [visit_id]
    ).fetchone()
    if row is None:
        return None
    names = [c.strip() for c in _VISIT_COLUMNS.split(",")]
    out = dict(zip(names, row, strict=True))
    out["headers"] = json.loads(out["headers"]) if out["headers"] else {}
    out["messages"] = int(
        store.con.execute(
            "SELECT count(*) FROM (SELECT id FROM messages WHERE trap_visit_id = ? UNION "
            "SELECT message_id FROM recipients WHERE trap_visit_id = ?)",
            [visit_id, visit_id],
        ).fetchone()[0]  # type: ignore[index]
    )
    return out


def recent_visits(
    store: Store, limit: int = 50, sensor_id: str | None = None
) -> list[dict[str, Any]]:
    """The newest visits (optionally one sensor's only), newest first."""
    where, args = ("WHERE sensor_id = ?", [sensor_id]) if sensor_id else ("", [])
    cur = store.con.execute(
        f"SELECT {_VISIT_COLUMNS} FROM visits {where} ORDER BY visited_at DESC, seq DESC LIMIT ?",
        [*args, limit],
    )
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    for r in rows:
        r["headers"] = json.loads(r["headers"]) if r["headers"] else {}
    return rows


# --- entry points for the CLI (open the store read-only: `serve` may hold the write lock) ----


def _read_store(settings: dict[str, Any]) -> Store:
    return open_store(Path(str(settings["data_dir"])), read_only=True)


def harvesters_report(settings: dict[str, Any], limit: int = 100) -> list[Harvester]:
    """``harvesters`` on the configured store. Raises ``StoreLocked`` while `serve` runs."""
    with _read_store(settings) as store:
        try:
            return harvesters(store, limit)
        except duckdb.CatalogException:  # store written before the traps schema existed
            return []


def visits_report(settings: dict[str, Any], limit: int = 50) -> list[dict[str, Any]]:
    """The newest visits on the configured store."""
    with _read_store(settings) as store:
        try:
            return recent_visits(store, limit)
        except duckdb.CatalogException:
            return []


def decode_report(settings: dict[str, Any], address: str) -> dict[str, Any]:
    """Decode ``address`` offline, then add the visit's details from the store when readable.

    Always has ``valid``, ``visit_id``, ``visited_at``, ``ip``, ``user_agent``; ``store`` says
    whether the details could be read (``ok``, ``locked``, ``missing``, ``no-such-visit``).
    """
    secret = addresses.site_secret(settings, create=False)
    try:  # the domains this store's traps issued addresses on count, configured or not
        with _read_store(settings) as store:
            domains = known_trap_domains(settings.get("trap_domains") or [], store.con)
    except StoreError:
        domains = known_trap_domains(settings.get("trap_domains") or [], None)
    decoded = addresses.decode(address, secret, domains)
    out: dict[str, Any] = {
        "address": decoded.address,
        "valid": decoded.valid,
        "reason": decoded.reason or None,
        "visit_id": decoded.visit_id,
        "visit": decoded.visit,
        "style": decoded.style,
        "domain": decoded.domain,
        "visited_at": None,
        "ip": None,
        "user_agent": None,
        "path": None,
        "sensor_id": None,
        "messages": None,
        "store": None,
    }
    if not decoded.valid or decoded.visit_id is None:
        return out
    try:
        with _read_store(settings) as store:
            details = visit_details(store, decoded.visit_id)
    except StoreLocked:
        out["store"] = "locked"  # `serve` is running: the codec still answered offline
        return out
    except (StoreError, duckdb.CatalogException):
        out["store"] = "missing"
        return out
    if details is None:
        out["store"] = "no-such-visit"
        return out
    out["store"] = "ok"
    for key in ("visited_at", "ip", "user_agent", "path", "sensor_id", "messages"):
        out[key] = details[key]
    out["referer"], out["ignored_robots"] = details["referer"], details["ignored_robots"]
    return out
