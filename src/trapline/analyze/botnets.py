"""Botnets: campaigns that share sending hosts within a time window, as connected components.

A host is an origin IP, or ``smtp:<fingerprint>`` for the SMTP-session shape the trap recorded
(bot software talks SMTP the same way from every infected machine). Two campaigns link when they
share at least ``botnet_min_shared_hosts`` hosts, used by both within ``botnet_window_days`` of
each other, AND those hosts are at least ``botnet_min_overlap`` of the smaller campaign's hosts.
The count rule is what stops one open relay (or one NAT gateway) from merging unrelated botnets;
hosts used by more than ``botnet_max_host_campaigns`` campaigns are shared infrastructure and are
ignored outright. The whole graph is rebuilt on each run: it is small (campaigns x hosts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import duckdb
import numpy as np
import pyarrow as pa

from trapline.analyze.botnet_evidence import EvidenceParams, evidence_pairs
from trapline.analyze.graph import components
from trapline.config import SettingsView
from trapline.store.duckdb import Store


@dataclass(slots=True, frozen=True)
class BotnetParams(SettingsView):
    """The ``botnet_*`` settings (docs/campaigns.md explains each)."""

    prefix: ClassVar[str] = "botnet_"
    window_days: float
    min_shared_hosts: int
    min_overlap: float
    max_host_campaigns: int


@dataclass(slots=True, frozen=True)
class BotnetRun:
    botnets: int
    campaigns: int
    hosts: int
    links: int


# (campaign_id, host, kind, ts) for every clustered message: origin IPs, plus the session
# shapes of trap mail, which keeps its SMTP envelope (with the session fingerprint) in raw.
_HOSTS_SQL = (
    "SELECT campaign_id, origin_ip AS host, 'ip' AS kind, received_at AS ts FROM messages "
    "WHERE campaign_id IS NOT NULL AND origin_ip IS NOT NULL "
    "UNION ALL "
    "SELECT m.campaign_id, 'smtp:' || json_extract_string(r.envelope, "
    "'$.session_fingerprint'), 'session', m.received_at FROM messages m "
    "JOIN raw r ON r.id = m.id WHERE m.campaign_id IS NOT NULL AND r.envelope IS NOT NULL "
    "AND json_extract_string(r.envelope, '$.session_fingerprint') IS NOT NULL"
)


_LINKS_SQL = """
CREATE OR REPLACE TEMP TABLE _ch AS
WITH obs AS ({hosts}),
ch AS (SELECT campaign_id, host, any_value(kind) AS kind, min(ts) AS t0, max(ts) AS t1,
              count(*) AS n FROM obs GROUP BY campaign_id, host),
busy AS (SELECT host FROM ch GROUP BY host HAVING count(*) > {max_campaigns})
SELECT * FROM ch WHERE host NOT IN (SELECT host FROM busy);
"""

_PAIRS_SQL = """
WITH hc AS (SELECT campaign_id, count(*) AS k FROM _ch GROUP BY campaign_id),
pairs AS (
    SELECT a.campaign_id AS c1, b.campaign_id AS c2, count(*) AS shared
    FROM _ch a JOIN _ch b ON a.host = b.host AND a.campaign_id < b.campaign_id
    WHERE a.t0 <= b.t1 + to_seconds({secs}) AND b.t0 <= a.t1 + to_seconds({secs})
    GROUP BY 1, 2
)
SELECT p.c1, p.c2 FROM pairs p JOIN hc h1 ON h1.campaign_id = p.c1
JOIN hc h2 ON h2.campaign_id = p.c2
WHERE p.shared >= {min_shared} AND p.shared >= {overlap} * least(h1.k, h2.k)
"""


def analyze_botnets(store: Store, settings: dict[str, Any]) -> BotnetRun:
    """Rebuild the botnet tables from campaigns and their sending hosts."""
    con = store.con
    p = BotnetParams.from_settings(settings)
    con.execute(_LINKS_SQL.format(hosts=_HOSTS_SQL, max_campaigns=int(p.max_host_campaigns)))
    pairs = con.execute(
        _PAIRS_SQL.format(
            secs=int(p.window_days * 86400),
            min_shared=int(p.min_shared_hosts),
            overlap=float(p.min_overlap),
        )
    ).fetchall()
    # Sending-software fingerprints and shared landing domains link campaigns whose bots the
    # trap saw too rarely to share hosts (analyze/botnet_evidence.py).
    pairs = sorted(set(pairs) | set(evidence_pairs(con, EvidenceParams.from_settings(settings))))
    # Candidate campaigns: those with enough hosts to be a bot set on their own.
    camps = [
        r[0]
        for r in con.execute(
            "SELECT campaign_id FROM _ch GROUP BY 1 HAVING count(*) >= ? ORDER BY 1",
            [p.min_shared_hosts],
        ).fetchall()
    ]
    camps = sorted(set(camps) | {c for pair in pairs for c in pair})
    index = {c: i for i, c in enumerate(camps)}
    a = np.fromiter((index[x] for x, _ in pairs), np.int64, len(pairs))
    b = np.fromiter((index[y] for _, y in pairs), np.int64, len(pairs))
    root = components(len(camps), a, b) if camps else np.zeros(0, np.int64)
    con.register(
        "_bc",
        pa.table({"campaign_id": camps, "root": pa.array(root, pa.int64())}),
    )
    try:
        _write(con)
    finally:
        con.unregister("_bc")
    (n_botnets, n_hosts), = con.execute(
        "SELECT count(*), (SELECT count(DISTINCT host) FROM botnet_hosts) FROM botnets"
    ).fetchall()  # fmt: skip
    return BotnetRun(int(n_botnets), len(camps), int(n_hosts), len(pairs))


def _write(con: duckdb.DuckDBPyConnection) -> None:
    """Botnet rows: id from the oldest campaign (smallest root seq), hosts, families."""
    for table in ("botnets", "botnet_campaigns", "botnet_hosts"):
        con.execute(f"DELETE FROM {table}")
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _bm AS
        SELECT 'b' || substr(arg_min(bc.campaign_id, c.root_seq) OVER (PARTITION BY bc.root), 2)
                   AS botnet_id, bc.campaign_id
        FROM _bc bc JOIN campaigns c ON c.id = bc.campaign_id
        """
    )
    con.execute("INSERT INTO botnet_campaigns SELECT botnet_id, campaign_id FROM _bm")
    con.execute(
        """
        INSERT INTO botnet_hosts
        SELECT bm.botnet_id, ch.host, any_value(ch.kind), sum(ch.n)
        FROM _bm bm JOIN _ch ch USING (campaign_id) GROUP BY 1, 2
        """
    )
    con.execute(
        f"""
        INSERT INTO botnets
        WITH fam AS ({_FAMILIES_SQL})
        SELECT bm.botnet_id, count(DISTINCT bm.campaign_id), any_value(h.n_hosts),
               sum(c.size), min(c.first_seen), max(c.last_seen),
               any_value(n.asns), coalesce(any_value(f.families), []), now()::TIMESTAMP
        FROM _bm bm JOIN campaigns c ON c.id = bm.campaign_id
        JOIN (SELECT botnet_id, count(*) AS n_hosts FROM botnet_hosts GROUP BY 1) h
             USING (botnet_id)
        LEFT JOIN (SELECT bm2.botnet_id, list(DISTINCT m.origin_asn ORDER BY m.origin_asn)
                          FILTER (WHERE m.origin_asn IS NOT NULL) AS asns
                   FROM _bm bm2 JOIN messages m ON m.campaign_id = bm2.campaign_id
                   GROUP BY 1) n USING (botnet_id)
        LEFT JOIN (SELECT botnet_id, list(DISTINCT family ORDER BY family) AS families
                   FROM fam GROUP BY 1) f USING (botnet_id)
        GROUP BY bm.botnet_id
        """
    )


# (botnet_id, family) from explicit mappings and from feed indicators: feeds name the family
# of C&C hosts and domains, so a botnet whose bots or landing domains appear there inherits it.
_FAMILIES_SQL = " UNION ".join(
    (
        "SELECT bh.botnet_id, fm.family FROM botnet_hosts bh JOIN botnet_family_map fm "
        "ON fm.match_kind = 'host' AND fm.value = bh.host",
        "SELECT bm.botnet_id, fm.family FROM _bm bm JOIN botnet_family_map fm "
        "ON fm.match_kind = 'campaign' AND fm.value = bm.campaign_id",
        "SELECT bm.botnet_id, fm.family FROM _bm bm JOIN campaigns c ON c.id = bm.campaign_id "
        "JOIN botnet_family_map fm ON fm.match_kind = 'domain' "
        "AND list_contains(c.domains, fm.value)",
        "SELECT bh.botnet_id, fi.family FROM botnet_hosts bh JOIN feed_indicators fi "
        "ON fi.indicator = bh.host WHERE fi.family IS NOT NULL",
        "SELECT bm.botnet_id, fi.family FROM _bm bm JOIN campaigns c ON c.id = bm.campaign_id "
        "JOIN feed_indicators fi ON fi.indicator_type = 'domain' "
        "AND list_contains(c.domains, fi.indicator) WHERE fi.family IS NOT NULL",
    )
)


def list_botnets(
    con: duckdb.DuckDBPyConnection, *, top: int = 50, max_hosts: int = 1000
) -> list[dict[str, Any]]:
    """Botnets by volume: campaigns, hosts (up to ``max_hosts``), networks, daily volume share.

    ``share_by_day`` is the botnet's messages over all stored messages that day, the series a
    takedown or a botnet's rise shows up in. ``cc_indicators`` are the feeds' C&C entries of
    the botnet's families.
    """
    rows = con.execute(
        "SELECT id, n_campaigns, n_hosts, messages, first_seen, last_seen, asns, families "
        "FROM botnets ORDER BY messages DESC, id LIMIT ?",
        [top],
    ).fetchall()
    out = []
    for bid, n_c, n_h, msgs, first, last, asns, fams in rows:
        campaigns = [r[0] for r in con.execute(
            "SELECT campaign_id FROM botnet_campaigns WHERE botnet_id = ? ORDER BY 1", [bid]
        ).fetchall()]  # fmt: skip
        hosts = [r[0] for r in con.execute(
            "SELECT host FROM botnet_hosts WHERE botnet_id = ? ORDER BY messages DESC, host "
            "LIMIT ?", [bid, max_hosts]).fetchall()]  # fmt: skip
        share = con.execute(
            """
            WITH b AS (SELECT m.received_at::DATE AS day, count(*) AS n FROM messages m
                       JOIN botnet_campaigns bc ON bc.campaign_id = m.campaign_id
                       WHERE bc.botnet_id = ? GROUP BY 1),
                 t AS (SELECT received_at::DATE AS day, count(*) AS n FROM messages
                       WHERE received_at::DATE IN (SELECT day FROM b) GROUP BY 1)
            SELECT b.day, b.n, round(b.n / t.n, 4) FROM b JOIN t USING (day) ORDER BY 1
            """,
            [bid],
        ).fetchall()
        cc = (
            [
                {"indicator": i, "type": t, "family": f, "first_seen": a, "last_seen": b}
                for i, t, f, a, b in con.execute(
                    "SELECT indicator, indicator_type, family, first_seen, last_seen "
                    "FROM feed_indicators WHERE kind = 'cc' AND list_contains(?, family) "
                    "ORDER BY family, indicator",
                    [list(fams or [])],
                ).fetchall()
            ]
            if fams
            else []
        )
        out.append(
            {
                "id": bid, "campaigns": campaigns, "hosts": hosts, "messages": int(msgs),
                "n_campaigns": int(n_c), "n_hosts": int(n_h), "first_seen": first,
                "last_seen": last, "asns": list(asns or []), "families": list(fams or []),
                "share_by_day": [{"day": d, "messages": n, "share": s} for d, n, s in share],
                "cc_indicators": cc,
            }
        )  # fmt: skip
    return out
