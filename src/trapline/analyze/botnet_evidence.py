"""Campaign links from the sending software and from shared landing infrastructure.

Each campaign gets, per trait (analyze/sender_traits.py), the value most of its messages carry
(at least half of them; a campaign sent by many different programs has no value for that
trait). Two campaigns active within ``botnet_window_days`` of each other score the weight of
every trait they agree on, plus the landing weight when they share a registered domain in their
URLs (domains seen in more than ``botnet_max_domain_campaigns`` campaigns are common
infrastructure, not evidence). A trait value carried by 5+ campaigns that all came from fewer
than ``botnet_relay_hosts_per_campaign`` sending hosts per campaign is a provider's outbound
relay (webmail, an email service provider), not bot software, and is ignored. A pair links
when its score reaches ``botnet_link_score``. The weights (``botnet_trait_weights``) are set
so that no single trait links on its own and a full software fingerprint does:
docs/campaigns.md gives the reasons for each number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import duckdb

from trapline.analyze.sender_traits import fill_traits
from trapline.config import SettingsView

TRAITS = ("msgid_shape", "boundary_shape", "header_order", "mailer", "helo_shape")


@dataclass(slots=True, frozen=True)
class EvidenceParams(SettingsView):
    """The ``botnet_*`` settings of the software and landing evidence (docs/campaigns.md)."""

    prefix: ClassVar[str] = "botnet_"
    trait_weights: dict[str, float]
    link_score: float
    max_domain_campaigns: int
    window_days: float
    relay_hosts_per_campaign: float


def evidence_pairs(con: duckdb.DuckDBPyConnection, p: EvidenceParams) -> list[tuple[str, str]]:
    """Campaign pairs whose software traits and landing domains add up to a link."""
    weights, threshold = p.trait_weights, p.link_score
    max_domain, window_days, relay_ratio = (
        p.max_domain_campaigns,
        p.window_days,
        p.relay_hosts_per_campaign,
    )
    if threshold <= 0 or not any(weights.values()):
        return []
    fill_traits(con)
    per_trait = " UNION ALL ".join(
        f"SELECT m.campaign_id AS c, '{t}' AS trait, st.{t} AS v FROM messages m "
        f"JOIN sender_traits st ON st.message_id = m.id "
        f"WHERE m.campaign_id IS NOT NULL AND st.{t} IS NOT NULL"
        for t in TRAITS
        if weights.get(t, 0) > 0
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _ct AS
        WITH n AS (SELECT campaign_id AS c, count(*) AS n, min(received_at) AS t0,
                          max(received_at) AS t1
                   FROM messages WHERE campaign_id IS NOT NULL GROUP BY 1),
        cnt AS (SELECT c, trait, v, count(*) AS k FROM ({per_trait}) GROUP BY ALL),
        top AS (SELECT c, trait, arg_max(v, k) AS v, max(k) AS k FROM cnt GROUP BY c, trait),
        dom AS (SELECT c.id AS c, 'landing' AS trait, unnest(c.domains) AS v FROM campaigns c),
        common AS (SELECT v FROM dom GROUP BY v HAVING count(DISTINCT c) > {max_domain}),
        held AS (SELECT top.* FROM top JOIN n USING (c) WHERE top.k >= 0.5 * n.n),
        hosts AS (SELECT campaign_id AS c, origin_ip FROM messages
                  WHERE campaign_id IS NOT NULL AND origin_ip IS NOT NULL),
        -- a program seen in many campaigns from a handful of machines is a provider's
        -- outbound relay (webmail, an ESP), not bots: its traits say nothing about botnets
        relay AS (SELECT h.trait, h.v FROM held h LEFT JOIN hosts USING (c)
                  GROUP BY h.trait, h.v
                  HAVING count(DISTINCT h.c) >= 5
                     AND count(DISTINCT hosts.origin_ip) < {relay_ratio} * count(DISTINCT h.c))
        SELECT held.c, held.trait, held.v, n.t0, n.t1 FROM held JOIN n USING (c)
        WHERE (held.trait, held.v) NOT IN (SELECT (trait, v) FROM relay)
        UNION ALL
        SELECT dom.c, dom.trait, dom.v, n.t0, n.t1 FROM dom JOIN n USING (c)
        WHERE dom.v IS NOT NULL AND dom.v NOT IN (SELECT v FROM common)
        """
    )
    values = ", ".join(f"('{k}', {float(w)})" for k, w in weights.items())
    secs = int(window_days * 86400)
    rows = con.execute(
        f"""
        WITH w(trait, weight) AS (VALUES {values}),
        agree AS (
            SELECT a.c AS c1, b.c AS c2, a.trait, max(w.weight) AS weight
            FROM _ct a JOIN _ct b ON a.trait = b.trait AND a.v = b.v AND a.c < b.c
            JOIN w ON w.trait = a.trait
            WHERE a.t0 <= b.t1 + to_seconds({secs}) AND b.t0 <= a.t1 + to_seconds({secs})
            GROUP BY 1, 2, 3
        )
        SELECT c1, c2 FROM agree GROUP BY 1, 2 HAVING sum(weight) >= ? - 1e-9 ORDER BY 1, 2
        """,
        [threshold],
    ).fetchall()
    return [(str(a), str(b)) for a, b in rows]
