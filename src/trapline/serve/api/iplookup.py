"""Everything known about one IP: as a spam origin, relay hop, harvester, feed listing, botnet host.

The big tables (messages, hops) are summarised per IP once per store version into an in-memory
index, so a lookup is dictionary reads plus a few queries on small tables; feed CIDRs are kept
as sorted integer ranges.
"""

from __future__ import annotations

import bisect
import ipaddress
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb

from trapline.serve.api.access import StoreAccess
from trapline.store.queries import plain_value

Row = tuple[Any, ...]


@dataclass(slots=True)
class IpIndex:
    """Per-IP summaries of the large tables, built in one pass each."""

    origin: dict[str, Row] = field(default_factory=dict)  # count, first, last, asn, prefix, last id
    hops: dict[str, Row] = field(default_factory=dict)  # messages, first, last, helo, rdns
    routing: dict[str, Row] = field(default_factory=dict)  # asn, prefix, snapshot
    campaigns: dict[str, list[str]] = field(default_factory=dict)
    small: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # area → ip → row
    feeds_exact: dict[str, list[Row]] = field(default_factory=dict)
    feed_ranges: list[tuple[int, int, Row]] = field(default_factory=list)  # sorted by start
    feed_starts: list[int] = field(default_factory=list)
    widest: int = 0  # largest range size, bounds the bisect walk
    dnsbl: Any = None  # the DNSBL's own ZoneIndex: what it would answer for each address
    dnsbl_zones: list[str] = field(default_factory=list)


# Traps-area summaries per IP (one row each), keyed by the column aliased ``ip``.
_SMALL = {
    "harvester": "SELECT ip, count(*) AS visits, min(visited_at) AS first_seen, "
    "max(visited_at) AS last_seen, list(DISTINCT user_agent) FILTER (WHERE user_agent IS NOT "
    "NULL) AS user_agents, count(DISTINCT address) AS addresses, "
    "bool_or(coalesce(ignored_robots, false)) AS ignored_robots, "
    "list(DISTINCT sensor_id) FILTER (WHERE sensor_id IS NOT NULL) AS sensors "
    "FROM visits WHERE ip IS NOT NULL GROUP BY ip",
    "smtp": "SELECT peer_ip AS ip, count(*) AS sessions, sum(messages) AS messages, "
    "min(started_at) AS first_seen, max(started_at) AS last_seen, list(DISTINCT helo) AS helos, "
    "list(DISTINCT fingerprint) AS fingerprints FROM smtp_sessions WHERE peer_ip IS NOT NULL "
    "GROUP BY peer_ip",
    "dictionary_attacks": "SELECT sender_ip AS ip, count(*) AS attempts, min(seen_at) AS "
    "first_seen, max(seen_at) AS last_seen FROM dictionary_attacks WHERE sender_ip IS NOT NULL "
    "GROUP BY sender_ip",
    "botnets": "SELECT host AS ip, list({'botnet_id': botnet_id, 'messages': messages} "
    "ORDER BY messages DESC) AS botnets FROM botnet_hosts GROUP BY host",
}

_FEED_COLS = "kind, indicator, indicator_type, first_seen, last_seen, n_sightings, sources, family"


def _dnsbl_index(access: StoreAccess, settings: dict[str, Any]) -> Any:
    """The DNSBL's listing index, built by its own functions (None if this build has no DNSBL)."""
    try:
        from trapline.serve.dnsbl.listings import load_listings
        from trapline.serve.dnsbl.zones import build_index as build_zones
    except ImportError:
        return None
    from trapline.serve.api.views import as_store

    return build_zones(load_listings(as_store(access), settings))


def dnsbl_listings(idx: IpIndex, ip: str, now: float) -> list[dict[str, Any]]:
    """What the DNSBL answers for ``ip`` now: one entry per list (and the networks zone)."""
    if idx.dnsbl is None:
        return []
    from trapline.serve.dnsbl.zones import LIST_CODES, LIST_LABELS, reverse_key

    zones: Any = idx.dnsbl
    key = reverse_key(ip)
    apex = idx.dnsbl_zones[0] if idx.dnsbl_zones else None
    out = []
    for name, lst in zones.lists.items():
        row = lst.find(key, now)
        if row >= 0 and not lst.is_test_point(row):
            out.append({"list": name, "code": LIST_CODES[name], "meaning": LIST_LABELS[name],
                        "hits": int(lst.hits[row]), "last_seen": _epoch(int(lst.last_seen[row])),
                        "query": f"{_reversed(ip)}.{name}.{apex}" if apex else None})  # fmt: skip
    row = zones.networks.find(ipaddress.ip_address(ip), now)
    if row >= 0:
        nets = zones.networks.data
        out.append({"list": "networks", "code": LIST_CODES["networks"],
                    "meaning": LIST_LABELS["networks"], "prefix": nets.prefixes[row],
                    "asn": nets.asns[row], "hits": nets.hits[row],
                    "last_seen": _epoch(nets.last_seen[row])})  # fmt: skip
    return out


def _epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


def _reversed(ip: str) -> str:
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        return ".".join(reversed(ip.split(".")))
    return ".".join(reversed(addr.exploded.replace(":", "")))


def build_index(access: StoreAccess, settings: dict[str, Any] | None = None) -> IpIndex:
    cur = access.cursor()
    idx = IpIndex()
    if settings is not None and settings.get("dnsbl_zones") is not None:
        idx.dnsbl = _dnsbl_index(access, settings)
        idx.dnsbl_zones = [str(z) for z in settings.get("dnsbl_zones") or []]
    for r in cur.execute(
        "SELECT origin_ip, count(*), min(received_at), max(received_at), "
        "arg_max(origin_asn, received_at), arg_max(origin_prefix, received_at), "
        "arg_max(id, received_at) FROM messages "
        f"WHERE origin_ip IS NOT NULL AND {access.spam_only()} GROUP BY 1"
    ).fetchall():
        idx.origin[r[0]] = r[1:]
    for r in cur.execute(
        "SELECT from_ip, count(DISTINCT message_id), min(ts), max(ts), any_value(from_helo), "
        "any_value(from_rdns) FROM hops WHERE from_ip IS NOT NULL AND NOT coalesce(trusted, false) "
        "GROUP BY 1"
    ).fetchall():
        idx.hops[r[0]] = r[1:]
    for r in cur.execute(
        "SELECT ip, arg_max(asn, enriched_at), arg_max(prefix, enriched_at), "
        "arg_max(snapshot_id, enriched_at) FROM ip_routing WHERE asn IS NOT NULL GROUP BY 1"
    ).fetchall():
        idx.routing[r[0]] = r[1:]
    for ip, cid in cur.execute("SELECT DISTINCT unnest(origin_ips), id FROM campaigns").fetchall():
        idx.campaigns.setdefault(ip, []).append(cid)
    for area, sql in _SMALL.items():
        idx.small[area] = {row.pop("ip"): row for row in _small(cur, sql)}
    ranges: list[tuple[int, int, Row]] = []
    for r in cur.execute(
        f"SELECT {_FEED_COLS} FROM feed_indicators WHERE indicator_type IN ('ip', 'cidr')"
    ).fetchall():
        if r[2] == "ip":
            idx.feeds_exact.setdefault(r[1], []).append(r)
            continue
        try:
            net = ipaddress.ip_network(r[1], strict=False)
        except ValueError:
            continue
        ranges.append((int(net.network_address), int(net.broadcast_address), r))
    ranges.sort(key=lambda t: (t[0], t[1]))
    idx.feed_ranges = ranges
    idx.feed_starts = [t[0] for t in ranges]
    idx.widest = max((hi - lo for lo, hi, _ in ranges), default=0)
    return idx


def _feeds_for(idx: IpIndex, ip: str) -> list[Row]:
    found = list(idx.feeds_exact.get(ip, []))
    value = int(ipaddress.ip_address(ip))
    # Ranges starting within `widest` below the address are the only ones that can hold it.
    i = bisect.bisect_right(idx.feed_starts, value)
    lo = bisect.bisect_left(idx.feed_starts, value - idx.widest)
    for start, end, row in idx.feed_ranges[lo:i]:
        if start <= value <= end:
            found.append(row)
    return found


def _small(
    cur: duckdb.DuckDBPyConnection, sql: str, args: list[Any] | None = None
) -> list[dict[str, Any]]:
    try:
        c = cur.execute(sql, args or [])
    except duckdb.CatalogException:  # an area's tables are absent from an older store
        return []
    names = [d[0] for d in c.description or []]
    return [dict(zip(names, r, strict=True)) for r in c.fetchall()]


def lookup(idx: IpIndex, ip: str, now: float | None = None) -> dict[str, Any]:
    """The IP's record; ``known`` is False when nothing at all mentions it."""
    origin = idx.origin.get(ip)
    hop = idx.hops.get(ip)
    routing = idx.routing.get(ip)
    feeds = _feeds_for(idx, ip)
    visits = idx.small.get("harvester", {}).get(ip)
    sessions = idx.small.get("smtp", {}).get(ip)
    dictionary = idx.small.get("dictionary_attacks", {}).get(ip)
    botnets = idx.small.get("botnets", {}).get(ip)
    seen: list[datetime] = []
    for rec in (origin, hop):
        if rec:
            seen += [t for t in rec[1:3] if t is not None]
    out: dict[str, Any] = {
        "ip": ip,
        "origin": None
        if origin is None
        else {
            "messages": int(origin[0]),
            "first_seen": origin[1],
            "last_seen": origin[2],
            "asn": origin[3],
            "prefix": origin[4],
            "latest_message": origin[5],
        },
        "relay": None
        if hop is None
        else {
            "messages": int(hop[0]),
            "first_seen": hop[1],
            "last_seen": hop[2],
            "helo": hop[3],
            "rdns": hop[4],
        },
        "routing": None
        if routing is None
        else {"asn": routing[0], "prefix": routing[1], "snapshot": routing[2]},
        "campaigns": sorted(idx.campaigns.get(ip, [])),
        "botnets": botnets["botnets"] if botnets else [],
        "harvester": visits,
        "smtp": sessions,
        "dictionary_attacks": dictionary,
        "dnsbl": dnsbl_listings(idx, ip, time.time() if now is None else now),
        "listings": [
            {
                "kind": r[0],
                "indicator": r[1],
                "type": r[2],
                "first_seen": r[3],
                "last_seen": r[4],
                "sightings": int(r[5]),
                "sources": list(r[6] or []),
                "family": r[7],
            }
            for r in feeds
        ],
    }
    for found in (visits, sessions, dictionary):
        if found:
            seen += [t for t in (found["first_seen"], found["last_seen"]) if t is not None]
    out["first_seen"] = min(seen, default=None)
    out["last_seen"] = max(seen, default=None)
    out["known"] = any(
        out[k] for k in ("origin", "relay", "campaigns", "botnets", "harvester", "smtp",
                         "dictionary_attacks", "listings", "dnsbl")
    )  # fmt: skip
    return plain_value(out)
