"""Campaign summaries (SQL over the store) and the read side: list and detail.

Summaries are materialised in ``campaigns`` only for campaigns a run touched, so a refresh costs
in proportion to the day's mail; listing is one query over that table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from trapline.errors import Ambiguous, NotFound

TOP = 5

_REFRESH_SQL = """
WITH mem AS (
    SELECT s.campaign_seq AS root, s.seq, s.message_id, s.url_templates, m.received_at,
           m.subject, m.origin_ip, m.origin_asn
    FROM signatures s JOIN messages m ON m.id = s.message_id
    WHERE s.campaign_seq IN ({touched})
),
subj AS (
    SELECT root, list(subject ORDER BY n DESC, subject)[1:{top}] AS v
    FROM (SELECT root, subject, count(*) AS n FROM mem WHERE subject IS NOT NULL GROUP BY ALL)
    GROUP BY root
),
tmpl AS (
    SELECT root, list(t ORDER BY n DESC, t)[1:{top}] AS v
    FROM (SELECT root, t, count(*) AS n FROM (SELECT root, unnest(url_templates) AS t FROM mem)
          GROUP BY ALL)
    GROUP BY root
),
dom AS (
    SELECT root, list(d ORDER BY n DESC, d)[1:{top}] AS v
    FROM (SELECT mem.root, u.registered_domain AS d, count(DISTINCT u.message_id) AS n
          FROM mem JOIN urls u ON u.message_id = mem.message_id
          WHERE u.registered_domain IS NOT NULL GROUP BY ALL)
    GROUP BY root
),
ips AS (
    SELECT root, list(ip ORDER BY n DESC, ip)[1:10] AS v, count(*) AS k
    FROM (SELECT root, origin_ip AS ip, count(*) AS n FROM mem WHERE origin_ip IS NOT NULL
          GROUP BY ALL)
    GROUP BY root
),
base AS (
    SELECT root, count(*) AS size, min(received_at) AS first_seen, max(received_at) AS last_seen,
           arg_min(message_id, seq) AS representative,
           list(DISTINCT origin_asn ORDER BY origin_asn) FILTER (WHERE origin_asn IS NOT NULL)
               AS asns
    FROM mem GROUP BY root
)
SELECT 'c' || left(b.representative, 16), b.root, b.size, b.first_seen, b.last_seen,
       b.representative, coalesce(subj.v, []), coalesce(tmpl.v, []), coalesce(dom.v, []),
       coalesce(ips.v, []), coalesce(ips.k, 0), coalesce(b.asns, []), now()::TIMESTAMP
FROM base b LEFT JOIN subj USING (root) LEFT JOIN tmpl USING (root) LEFT JOIN dom USING (root)
LEFT JOIN ips USING (root)
"""

_COLUMNS = (
    "id", "root_seq", "size", "first_seen", "last_seen", "representative", "subjects",
    "url_templates", "domains", "origin_ips", "n_origin_ips", "asns", "updated_at",
)  # fmt: skip


def refresh_campaigns(con: Any, touched_sql: str) -> int:
    """Recompute summary rows for campaigns whose root seq is selected by ``touched_sql``."""
    con.execute(f"DELETE FROM campaigns WHERE root_seq IN ({touched_sql})")
    con.execute("INSERT INTO campaigns " + _REFRESH_SQL.format(touched=touched_sql, top=TOP))
    ((n,),) = con.execute(f"SELECT count(*) FROM ({touched_sql})").fetchall()
    return int(n)


def _rows(cur: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def list_campaigns(
    con: Any,
    *,
    top: int = 20,
    since: datetime | None = None,
    until: datetime | None = None,
    min_size: int = 1,
) -> list[dict[str, Any]]:
    """Largest campaigns first; ``since``/``until`` keep those active in that window."""
    where = ["size >= ?"]
    args: list[Any] = [min_size]
    if since:
        where.append("last_seen >= ?")
        args.append(since)
    if until:
        where.append("first_seen < ?")
        args.append(until)
    cols = ", ".join(c for c in _COLUMNS if c not in ("root_seq", "updated_at"))
    sql = (
        f"SELECT {cols} FROM campaigns WHERE {' AND '.join(where)} "
        "ORDER BY size DESC, first_seen, id LIMIT ?"
    )
    return _rows(con.execute(sql, [*args, top]))


def resolve_campaign(con: Any, ident: str) -> str:
    """The full campaign id for an id, a unique prefix or a merged-away id."""
    ident = ident.strip().lower()
    hits = [r[0] for r in con.execute(
        "SELECT id FROM campaigns WHERE starts_with(id, ?) LIMIT 2", [ident]
    ).fetchall()]  # fmt: skip
    if not hits:
        merged = con.execute(
            "SELECT new_id FROM campaign_merges WHERE old_id = ? ORDER BY merged_at DESC LIMIT 1",
            [ident],
        ).fetchall()
        if merged:
            return resolve_campaign(con, merged[0][0])
        raise NotFound(f"no campaign {ident!r}; list them with `trapline campaigns`")
    if len(hits) > 1:
        raise Ambiguous(f"{ident!r} matches several campaigns; give more characters")
    return str(hits[0])


def campaign_detail(con: Any, ident: str) -> dict[str, Any]:
    """One campaign: summary, members per day, senders and networks, sample members."""
    cid = resolve_campaign(con, ident)
    cur = con.execute(
        f"SELECT {', '.join(c for c in _COLUMNS if c != 'root_seq')} FROM campaigns WHERE id = ?",
        [cid],
    )
    detail = _rows(cur)[0]
    detail["per_day"] = _rows(con.execute(
        "SELECT received_at::DATE AS day, count(*) AS messages FROM messages "
        "WHERE campaign_id = ? GROUP BY 1 ORDER BY 1", [cid]))  # fmt: skip
    detail["networks"] = _rows(con.execute(
        "SELECT origin_asn AS asn, count(*) AS messages, count(DISTINCT origin_ip) AS hosts "
        "FROM messages WHERE campaign_id = ? GROUP BY 1 ORDER BY 2 DESC LIMIT 10", [cid]))  # fmt: skip
    detail["members"] = _rows(con.execute(
        "SELECT id, received_at, origin_ip, subject FROM messages WHERE campaign_id = ? "
        "ORDER BY received_at NULLS LAST, id LIMIT 20", [cid]))  # fmt: skip
    detail["merged_from"] = [r[0] for r in con.execute(
        "SELECT DISTINCT old_id FROM campaign_merges WHERE new_id = ? ORDER BY 1", [cid]
    ).fetchall()]  # fmt: skip
    return detail
