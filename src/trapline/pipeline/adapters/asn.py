"""The ASN stage's store side: map every stored address to its network, in batches.

Addresses come from message origins, external (untrusted) hops, URL hosts that are literal IPs,
honeypot visits, dictionary attacks and feed indicators; the mapping itself is the pure
``trapline.enrich.asn.routing_answers``. Each address is mapped as of its own time. Answers land in ``ip_routing``;
message origins are also copied onto ``messages`` (``origin_asn``, ``origin_prefix``,
``routing_snapshot``) and feed indicators onto ``feed_indicators``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from trapline.config import DEFAULTS
from trapline.enrich.asn import routing_answers
from trapline.errors import NotConfigured
from trapline.model import utcnow
from trapline.routing.lookup import Routing
from trapline.store.duckdb import Store
from trapline.store.routing import load_routing

_LITERAL_IP = r"^\[?([0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*)\]?$"
INT32_MAX = 2**31 - 1  # messages.origin_asn is INTEGER; larger (private-use) ASNs stay NULL there


@dataclass(slots=True, frozen=True)
class EnrichResult:
    rows: int  # addresses looked up
    mapped: int  # of which a snapshot announced
    by_subject: dict[str, tuple[int, int]]  # subject → (rows, mapped)
    snapshots: int

    def summary(self) -> str:
        parts = [f"{k} {m:,}/{n:,}" for k, (n, m) in sorted(self.by_subject.items())]
        return (
            f"asn: mapped {self.mapped:,} of {self.rows:,} addresses ({', '.join(parts) or 'none'})"
        )


# IP and CIDR indicators map by their (network) address; a URL whose host is a literal IP (a
# landing page on a bare address) maps by that host.
_URL_HOST = r"^[A-Za-z][A-Za-z0-9+.-]*://\[?([0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*)\]?([:/?#]|$)"
_FEED_SQL = (
    "SELECT 'feed', kind || '|' || indicator, NULL, split_part(indicator, '/', 1), first_seen "
    "FROM feed_indicators WHERE indicator_type IN ('ip', 'cidr') UNION ALL "
    "SELECT 'feed', kind || '|' || indicator, NULL, "
    f"regexp_extract(indicator, '{_URL_HOST}', 1), first_seen "
    f"FROM feed_indicators WHERE indicator_type = 'url' AND regexp_matches(indicator, '{_URL_HOST}')"
)


def _subjects(scope: str) -> str:
    """SQL yielding (subject, subject_id, message_id, ip, at) for everything in ``scope``."""
    if scope == "feeds":
        return _FEED_SQL
    scoped = scope == "messages"
    only = " AND m.id IN (SELECT id FROM enrich_ids)" if scoped else ""
    parts = [
        f"SELECT 'origin', m.id, m.id, m.origin_ip, m.received_at FROM messages m "
        f"WHERE m.origin_ip IS NOT NULL{only}",
        f"SELECT 'hop', h.message_id || ':' || h.idx, h.message_id, h.from_ip, "
        f"coalesce(h.ts, m.received_at) FROM hops h JOIN messages m ON m.id = h.message_id "
        f"WHERE h.from_ip IS NOT NULL AND NOT coalesce(h.trusted, false){only}",
        f"SELECT DISTINCT 'url', u.message_id || ':' || trim(u.host, '[]'), u.message_id, "
        f"trim(u.host, '[]'), m.received_at FROM urls u JOIN messages m ON m.id = u.message_id "
        f"WHERE regexp_matches(u.host, '{_LITERAL_IP}'){only}",
    ]
    if scoped:
        return " UNION ALL ".join(parts)
    parts.append("SELECT 'visit', id, NULL, ip, visited_at FROM visits WHERE ip IS NOT NULL")
    parts.append(
        "SELECT DISTINCT 'dictionary', sender_ip || '|' || coalesce(CAST(seen_at AS VARCHAR), ''), "
        "NULL, sender_ip, seen_at FROM dictionary_attacks WHERE sender_ip IS NOT NULL"
    )
    parts.append(_FEED_SQL)
    return " UNION ALL ".join(parts)


CHUNK = 200_000  # addresses per lookup batch: bounded memory on large stores


def enrich(
    store: Store,
    settings: dict[str, Any],
    message_ids: list[str] | None = None,
    routing: Routing | None = None,
    *,
    feeds_only: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> EnrichResult:
    """(Re)map addresses: those of ``message_ids`` only, feed indicators only, or everything.

    One transaction: old answers for the scope are removed, then new ones written in chunks of
    ``CHUNK`` addresses, so a store of millions never holds all its answers in memory at once.
    ``on_progress(done, total)`` is called with the addresses mapped so far.
    """
    allow_partial = bool(settings.get("routing_allow_partial"))
    routing = routing or load_routing(store, include_partial=allow_partial)
    if not routing.snapshots:
        raise NotConfigured(
            "no routing snapshot imported (or only partial ones: set routing_allow_partial to "
            "use them); run `trapline routing import FILE`"
        )
    con = store.con
    scope = "feeds" if feeds_only else "messages" if message_ids is not None else "all"
    scoped = scope == "messages"
    if scoped:
        con.register("enrich_ids", pa.table({"id": pa.array(message_ids, pa.string())}))
    subjects: pa.Table = con.sql(_subjects(scope)).to_arrow_table()
    mode = str(settings.get("routing_choice") or DEFAULTS["routing_choice"])
    now = utcnow()
    by_subject: dict[str, tuple[int, int]] = {}
    con.execute("BEGIN TRANSACTION")
    try:
        if scope == "messages":
            con.execute(
                "DELETE FROM ip_routing WHERE subject IN ('origin', 'hop', 'url') "
                "AND message_id IN (SELECT id FROM enrich_ids)"
            )
        else:
            con.execute(
                "DELETE FROM ip_routing" + (" WHERE subject = 'feed'" if scope == "feeds" else "")
            )
            con.execute(
                "UPDATE feed_indicators SET asn = NULL, prefix = NULL, snapshot_id = NULL "
                "WHERE indicator_type <> 'asn'"
            )
        if scope != "feeds":
            # An origin no snapshot covers any more must not keep an old answer.
            only = " WHERE id IN (SELECT id FROM enrich_ids)" if scoped else ""
            con.execute(
                "UPDATE messages SET origin_asn = NULL, origin_prefix = NULL, "
                "routing_snapshot = NULL" + only
            )
        for offset in range(0, subjects.num_rows, CHUNK):
            answers = routing_answers(routing, subjects.slice(offset, CHUNK), mode, now)
            con.register("new_answers", answers)
            try:
                con.execute("INSERT INTO ip_routing SELECT * FROM new_answers")
                con.execute(
                    f"""UPDATE messages SET
                           origin_asn = CASE WHEN a.asn <= {INT32_MAX} THEN a.asn END,
                           origin_prefix = a.prefix, routing_snapshot = a.snapshot_id
                       FROM new_answers a
                       WHERE a.subject = 'origin' AND a.subject_id = messages.id"""
                )
                if scope != "messages":
                    _update_feed_indicators(store)
            finally:
                con.unregister("new_answers")
            for sub, asn in zip(
                answers.column(0).to_pylist(), answers.column(5).to_pylist(), strict=True
            ):
                n, m = by_subject.get(sub, (0, 0))
                by_subject[sub] = (n + 1, m + (asn is not None))
            if on_progress is not None:
                on_progress(min(offset + CHUNK, subjects.num_rows), subjects.num_rows)
        if scope != "messages":
            _update_asn_indicators(store)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        if scoped:
            con.unregister("enrich_ids")
    mapped = sum(m for _, m in by_subject.values())
    return EnrichResult(subjects.num_rows, mapped, by_subject, len(routing.snapshots))


def _update_feed_indicators(store: Store) -> None:
    """Copy routing answers onto feed indicators; ASN indicators name their own network."""
    store.con.execute(
        """UPDATE feed_indicators SET asn = a.asn, prefix = a.prefix, snapshot_id = a.snapshot_id
           FROM new_answers a
           WHERE a.subject = 'feed' AND a.subject_id = feed_indicators.kind || '|' || feed_indicators.indicator"""
    )


def _update_asn_indicators(store: Store) -> None:
    store.con.execute(
        "UPDATE feed_indicators SET asn = CAST(substr(indicator, 3) AS BIGINT) "
        "WHERE indicator_type = 'asn'"
    )


def asn_stage(store: Store, message_ids: list[str], settings: dict[str, Any]) -> str:
    """Pipeline stage (settings ``post_ingest_stages``): map the new messages' addresses;
    NotConfigured without snapshots."""
    return enrich(store, settings, message_ids).summary()


def enrich_all(
    store: Store,
    settings: dict[str, Any],
    on_progress: Callable[[int, int], None] | None = None,
) -> EnrichResult:
    """`trapline enrich`: remap everything after new snapshots or feeds arrived."""
    return enrich(store, settings, None, on_progress=on_progress)


def remap_after_import(
    store: Store,
    settings: dict[str, Any],
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[EnrichResult, int]:
    """Remap everything stored (a routing import may answer for any date) and count the
    messages whose origin network (AS, prefix or snapshot) changed."""
    con = store.con
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _before_remap AS SELECT id, origin_asn, origin_prefix, "
        "routing_snapshot FROM messages WHERE origin_ip IS NOT NULL"
    )
    try:
        result = enrich_all(store, settings, on_progress)
        ((changed,),) = con.execute(
            "SELECT count(*) FROM messages m JOIN _before_remap b USING (id) "
            "WHERE m.origin_asn IS DISTINCT FROM b.origin_asn "
            "OR m.origin_prefix IS DISTINCT FROM b.origin_prefix "
            "OR m.routing_snapshot IS DISTINCT FROM b.routing_snapshot"
        ).fetchall()
    finally:
        con.execute("DROP TABLE IF EXISTS _before_remap")
    return result, int(changed)
