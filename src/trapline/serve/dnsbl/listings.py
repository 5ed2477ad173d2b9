"""Read what the DNSBL lists from the store (SQL first), as plain ``ListingData``.

A listing's age counts from the evidence time: a sender from the received time of its latest
spam (the time it reached the store when the message carries none), a dictionary attacker from
its latest attack, a harvester from the latest spam its addresses drew. ``max_age_s`` 0 lists
everything ever seen (archives).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from array import array
from typing import Any

import duckdb

from trapline.serve.dnsbl.settings import DnsblSettings
from trapline.serve.dnsbl.zones import HttpblList, IpList, ListingData, NetList, reverse_key
from trapline.store.duckdb import Store

log = logging.getLogger("trapline.dnsbl")


# Spam only: ham in the store must never list its sender.
_SENDERS_SQL = """
    SELECT origin_ip, epoch(max(coalesce(received_at, ingested_at)))::BIGINT AS last, count(*)
    FROM messages WHERE origin_ip IS NOT NULL AND label = 'spam'
    GROUP BY origin_ip"""

_DICTIONARY_SQL = """
    SELECT sender_ip, epoch(max(seen_at))::BIGINT AS last, count(*) FROM dictionary_attacks
    WHERE sender_ip IS NOT NULL AND seen_at IS NOT NULL GROUP BY sender_ip"""

# ARCHITECTURE: a harvester is the visitor whose issued address later received spam.
_HARVESTERS_SQL = """
    WITH linked AS (
        SELECT id AS message_id, trap_visit_id AS v FROM messages WHERE trap_visit_id IS NOT NULL
        UNION
        SELECT message_id, trap_visit_id FROM recipients WHERE trap_visit_id IS NOT NULL
    )
    SELECT vi.ip, epoch(max(coalesce(m.received_at, m.ingested_at)))::BIGINT AS last,
           count(DISTINCT l.message_id)
    FROM linked l JOIN visits vi ON vi.id = l.v JOIN messages m ON m.id = l.message_id
    WHERE vi.ip IS NOT NULL AND m.label = 'spam'
    GROUP BY vi.ip"""


# A canonical dotted quad (no leading zeros): its key is computed by the store, in SQL.
_V4 = r"((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_V4_KEY = (
    "encode(array_to_string(list_transform(list_reverse(string_split(ip, '.')), "
    "lambda o: chr(length(o)::INTEGER) || o), ''))"
)


def _rows(store: Store, sql: str, cutoff: int) -> list[tuple[str, int, int]]:
    """(canonical address, last, hits) of every row of ``sql`` within the age ``cutoff``."""
    rows = store.con.execute(
        f"SELECT * FROM ({sql}) t(ip, last, hits) WHERE ? = 0 OR last >= ?", [cutoff, cutoff]
    ).fetchall()
    out = []
    for ip, last, hits in rows:
        try:
            canonical = str(ipaddress.ip_address(str(ip).strip()))
        except ValueError:
            continue  # an origin that is not an address (a host name): nothing to list
        out.append((canonical, int(last), int(hits)))
    return out


def _ip_list(store: Store, name: str, sql: str, cutoff: int) -> IpList:
    """One list straight into keys: IPv4 keys made by the store, the rest through ``_rows``."""
    merged = f"""
        SELECT trim(ip) AS ip, max(last) AS last, sum(hits)::BIGINT AS hits
        FROM ({sql}) t(ip, last, hits) WHERE {int(cutoff)} = 0 OR last >= {int(cutoff)}
        GROUP BY trim(ip)"""
    # Arrow, not Python tuples: a million rows arrive as three columns.
    table = store.con.sql(
        f"SELECT {_V4_KEY} AS k, last, hits FROM ({merged}) WHERE regexp_full_match(ip, '{_V4}') "
        "ORDER BY k"
    ).to_arrow_table()
    keys: list[bytes] = table.column("k").to_pylist()
    last = array("q", table.column("last").to_numpy().astype("int64").tobytes())
    hits = array("q", table.column("hits").to_numpy().astype("int64").tobytes())
    del table
    # IPv6 (and oddly written IPv4) rows: few; canonicalised one by one.
    other = f"SELECT ip, last, hits FROM ({merged}) WHERE NOT regexp_full_match(ip, '{_V4}')"
    extra: dict[bytes, tuple[int, int]] = {}
    for ip, t, n in _rows(store, other, 0):
        key = reverse_key(ip)
        old = extra.get(key)
        extra[key] = (max(t, old[0]), n + old[1]) if old else (t, n)
    seen = set(keys) if extra else set()
    for key, (t, n) in sorted(extra.items()):
        if key not in seen:  # "010.1.2.3" read as 10.1.2.3 beside a canonical row: keep one
            keys.append(key)
            last.append(t)
            hits.append(n)
    return IpList(name, keys, last, hits)


def _httpbl(store: Store, harvesters: list[tuple[str, int, int]], cutoff: int) -> HttpblList:
    from trapline.serve.dnsbl.zones import (
        HTTPBL_COMMENT_SPAMMER,
        HTTPBL_HARVESTER,
        HTTPBL_SUSPICIOUS,
    )

    found: dict[str, list[int]] = {}  # ip -> [types, last, hits]

    def add(ip: str, bit: int, last: int, hits: int) -> None:
        entry = found.setdefault(ip, [0, 0, 0])
        entry[0] |= bit
        entry[1] = max(entry[1], last)
        entry[2] += hits

    for ip, last, hits in harvesters:
        add(ip, HTTPBL_HARVESTER, last, hits)
    sql = """SELECT ip, epoch(max(posted_at))::BIGINT, count(*) FROM comment_spam
             WHERE ip IS NOT NULL AND posted_at IS NOT NULL GROUP BY ip"""
    for ip, last, hits in _rows(store, sql, cutoff):
        add(ip, HTTPBL_COMMENT_SPAMMER, last, hits)
    # A robot that fetched what robots.txt forbids: suspicious, as http:BL's type 1.
    sql = """SELECT ip, epoch(max(visited_at))::BIGINT, count(*) FROM visits
             WHERE ip IS NOT NULL AND ignored_robots GROUP BY ip"""
    for ip, last, hits in _rows(store, sql, cutoff):
        add(ip, HTTPBL_SUSPICIOUS, last, hits)
    ips = sorted(ip for ip in found if ":" not in ip)  # http:BL answers IPv4 only
    return HttpblList(
        ips,
        [found[ip][0] for ip in ips],
        [found[ip][1] for ip in ips],
        [found[ip][2] for ip in ips],
    )


def _networks(store: Store, settings: dict[str, Any], cutoff: int) -> NetList:
    top = DnsblSettings.from_settings(settings).networks_top
    if top <= 0:
        return NetList()
    from trapline.analyze.networks import network_scores

    try:
        ranked = network_scores(store, settings, by="asn", top=top)
    except (duckdb.Error, ValueError) as exc:  # no routing data yet, or a half-built store
        log.warning("dnsbl: network ranking unavailable (%s); the networks zone is empty", exc)
        return NetList()
    out = NetList()
    for net in ranked:
        if net.score <= 0 or net.snapshot_id is None:
            continue
        last = int(net.last_seen.timestamp()) if net.last_seen else 0
        if cutoff and last < cutoff:
            continue
        hits = sum(net.evidence.values())
        rows = store.con.execute(
            "SELECT prefix FROM routing_prefixes WHERE snapshot_id = ? AND asn = ? AND prefix LIKE '%/%'",
            [net.snapshot_id, net.asn],
        ).fetchall()
        for (prefix,) in rows:
            out.prefixes.append(str(prefix))
            out.asns.append(int(net.asn))
            out.last_seen.append(last)
            out.hits.append(hits)
    return out


def load_listings(store: Store, settings: dict[str, Any], now: float | None = None) -> ListingData:
    """Everything listed at ``now`` (default: the current time) per ``dnsbl_max_age_days``."""
    now = time.time() if now is None else now
    # A server's reads print nothing: DuckDB's progress bar would write into whatever the
    # process's stderr is (a pipe nobody reads fills up and blocks the read).
    store.con.execute("SET enable_progress_bar = false")
    max_age_s = DnsblSettings.from_settings(settings).max_age_s
    cutoff = int(now) - max_age_s if max_age_s else 0
    harvesters = _rows(store, _HARVESTERS_SQL, cutoff)
    return ListingData(
        built_at=int(now),
        max_age_s=max_age_s,
        lists={
            "senders": _ip_list(store, "senders", _SENDERS_SQL, cutoff),
            "dictionary": _ip_list(store, "dictionary", _DICTIONARY_SQL, cutoff),
            "harvesters": _ip_list(store, "harvesters", _HARVESTERS_SQL, cutoff),
        },
        networks=_networks(store, settings, cutoff),
        httpbl=_httpbl(store, harvesters, cutoff),
    )
