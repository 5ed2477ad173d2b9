"""Read-side queries behind ``stats``, ``show`` and ``query``: SQL in, plain JSON-ready dicts out.

Timestamps come back as ISO-8601 UTC strings ending in ``Z`` so the CLI, the API and scripts all
see the same text. Everything here is a read: callers open the store read-only.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import duckdb

from trapline.errors import QueryError
from trapline.store.damage import is_damage
from trapline.store.labels import ALL, SPAM, label_filter
from trapline.store.raw import resolve_id
from trapline.store.routing import names_on
from trapline.store.sandbox import read_statement, sandbox


def iso(value: datetime | None) -> str | None:
    """ISO-8601 UTC with ``Z`` (the store keeps naive UTC timestamps)."""
    if value is None:
        return None
    if value.tzinfo is not None:  # TIMESTAMPTZ results (e.g. now()) come back zone-aware
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat() + "Z"


def plain_value(value: Any) -> Any:
    """``value`` with store types JSON can hold: UTC times with ``Z``, dates, floats, hex."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, list | tuple):
        return [plain_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    return value


def _rows(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None
) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description or []]
    return [{n: plain_value(v) for n, v in zip(names, row, strict=True)} for row in cur.fetchall()]


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    row = con.execute(sql).fetchone()
    return row[0] if row else None


# Network of a message's origin: its ASN once the routing stage filled it, else the /24 (IPv4)
# or /48 (IPv6) around the origin IP, the granularity at which spam operations rent space.
NETWORK_SQL = """
CASE
  WHEN origin_asn IS NOT NULL THEN 'AS' || origin_asn::VARCHAR
  WHEN origin_ip LIKE '%.%' THEN regexp_extract(origin_ip, '^(\\d+\\.\\d+\\.\\d+)\\.', 1) || '.0/24'
  WHEN origin_ip LIKE '%:%' THEN array_to_string(string_split(origin_ip, ':')[1:3], ':') || '::/48'
END
"""


def _top_networks(
    con: duckdb.DuckDBPyConnection, top: int, where: str = "TRUE"
) -> list[dict[str, Any]]:
    rows = _rows(
        con,
        f"SELECT {NETWORK_SQL} AS network, any_value(origin_asn) AS asn, count(*) AS messages, "
        "count(DISTINCT origin_ip) AS ips, max(received_at)::DATE AS last_day FROM messages "
        f"WHERE origin_ip IS NOT NULL AND {where} GROUP BY 1 ORDER BY 3 DESC, 1 LIMIT ?",
        [top],
    )
    # The name the AS had when it sent the mail (AS26780 is McColo in 2008, not its later holder).
    days = [date.fromisoformat(r["last_day"]) if r["last_day"] else None for r in rows]
    names = names_on(con, [r["asn"] for r in rows if r["asn"] is not None], [
        d for r, d in zip(rows, days, strict=True) if r["asn"] is not None
    ])  # fmt: skip
    for r, day in zip(rows, days, strict=True):
        r["name"] = names.get((r["asn"], day)) if r["asn"] is not None else None
        del r["last_day"]
    return rows


def stats(con: duckdb.DuckDBPyConnection, *, top: int = 10, label: str = SPAM) -> dict[str, Any]:
    """Counts, date range, top origin networks, subjects and parse problems.

    ``seen`` = archived messages + source problems = ``messages`` + ``quarantined`` (every
    label); ``labels`` counts messages per label, and the date range, networks, subjects and
    defects count ``label`` only (``all`` for every message).
    """
    where = label_filter(label)
    raw_rows = int(_scalar(con, "SELECT count(*) FROM raw"))
    problems = int(_scalar(con, "SELECT count(*) FROM quarantine WHERE id IS NULL"))
    quarantined_msgs = int(
        _scalar(con, "SELECT count(DISTINCT id) FROM quarantine WHERE id IS NOT NULL")
    )
    messages = int(_scalar(con, "SELECT count(*) FROM messages"))
    labels = dict(
        con.execute(
            "SELECT coalesce(label, 'spam'), count(*) FROM messages GROUP BY 1 ORDER BY 2 DESC, 1"
        ).fetchall()
    )
    first, last = con.execute(
        f"SELECT min(received_at), max(received_at) FROM messages WHERE {where}"
    ).fetchone() or (
        None,
        None,
    )
    return {
        "seen": raw_rows + problems,
        "messages": messages,
        "label": label,
        "labels": labels,
        "counted": messages if label == ALL else labels.get(label, 0),
        "quarantined": quarantined_msgs + problems,
        "quarantined_messages": quarantined_msgs,
        "source_problems": problems,
        "pending": raw_rows - messages - quarantined_msgs,
        "raw_bytes": int(_scalar(con, "SELECT coalesce(sum(size), 0) FROM raw")),
        "stored_bytes": int(_scalar(con, "SELECT coalesce(sum(octet_length(data)), 0) FROM raw")),
        "first_received": iso(first),
        "last_received": iso(last),
        "with_origin_ip": int(_scalar(con, f"SELECT count(origin_ip) FROM messages WHERE {where}")),
        "top_origin_networks": _top_networks(con, top, where),
        "top_subjects": _rows(
            con,
            "SELECT subject, count(*) AS messages FROM messages WHERE subject IS NOT NULL "
            f"AND subject <> '' AND {where} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?",
            [top],
        ),
        "quarantine_reasons": _rows(
            con,
            "SELECT reason, count(*) AS count FROM quarantine GROUP BY 1 ORDER BY 2 DESC, 1",
        ),
        # Defect codes are a small vocabulary (plus per-charset variants): show most of them.
        "top_defects": _rows(
            con,
            "SELECT defect, count(*) AS count FROM (SELECT unnest(defects) AS defect FROM messages "
            f"WHERE {where}) GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?",
            [max(top, 50)],
        ),
        "received_at_source": _rows(
            con,
            "SELECT received_at_source AS source, count(*) AS count FROM messages "
            f"WHERE {where} GROUP BY 1 ORDER BY 2 DESC, 1",
        ),
    }


def show(con: duckdb.DuckDBPyConnection, id_or_prefix: str) -> dict[str, Any]:
    """Everything stored about one message (a unique id prefix is enough)."""
    mid = resolve_id(con, id_or_prefix)
    found = _rows(con, "SELECT * FROM messages WHERE id = ?", [mid])
    if not found:
        quarantine = _rows(
            con, "SELECT reason, detail, source, size FROM quarantine WHERE id = ?", [mid]
        )
        raw = _rows(con, "SELECT size, source, ingested_at FROM raw WHERE id = ?", [mid])[0]
        return {
            "id": mid,
            "status": "quarantined" if quarantine else "pending",
            "source": raw["source"],
            "size": raw["size"],
            "ingested_at": raw["ingested_at"],
            "quarantine": quarantine[0] if quarantine else None,
        }
    m = found[0]
    recipients = _rows(
        con, "SELECT kind, name, addr, domain FROM recipients WHERE message_id = ?", [mid]
    )
    hops = _rows(
        con,
        "SELECT idx AS index, from_helo, from_rdns, from_ip, by_host, protocol, smtp_id, "
        "for_addr, ts AS timestamp, trusted, raw FROM hops WHERE message_id = ? ORDER BY idx",
        [mid],
    )
    for hop in hops:
        hop["origin"] = hop["index"] == m["origin_hop"]
    urls = _rows(
        con,
        "SELECT url, host, registered_domain, source, obfuscated FROM urls WHERE message_id = ?",
        [mid],
    )
    attachments = _rows(
        con,
        "SELECT filename, content_type, size, sha256 FROM attachments WHERE message_id = ?",
        [mid],
    )

    def _people(kind: str) -> list[dict[str, Any]]:
        return [
            {k: r[k] for k in ("name", "addr", "domain")} for r in recipients if r["kind"] == kind
        ]

    return {
        "id": mid,
        "status": "parsed",
        "source": m["source"],
        "size": m["size"],
        "received_at": m["received_at"],
        "received_at_source": m["received_at_source"],
        "date": m["date"],
        "date_flags": m["date_flags"] or [],
        "message_id": m["message_id"],
        "subject": m["subject"],
        "label": m.get("label") or "spam",
        "from": {"name": m["from_name"], "addr": m["from_addr"], "domain": m["from_domain"]},
        "to": _people("to"),
        "cc": _people("cc"),
        "rcpt": _people("rcpt"),
        "origin_ip": m["origin_ip"],
        "origin_hop": m["origin_hop"],
        "origin_asn": m["origin_asn"],
        "origin_as_name": _name_then(con, m["origin_asn"], m["received_at"] or m["date"]),
        "origin_prefix": m["origin_prefix"],
        "routing_snapshot": m["routing_snapshot"],
        "hops": hops,
        "urls": urls,
        "attachments": attachments,
        "defects": m["defects"] or [],
        "text": m["body_text"],
        "ingested_at": m["ingested_at"],
    }


def _name_then(con: duckdb.DuckDBPyConnection, asn: int | None, when: str | None) -> str | None:
    """The AS's name on the message's day (``when`` is ISO text from ``plain_value``)."""
    if asn is None:
        return None
    day = date.fromisoformat(when[:10]) if when else None
    return names_on(con, [asn], [day]).get((asn, day))


def query(con: duckdb.DuckDBPyConnection, sql: str, limit: int | None = None) -> dict[str, Any]:
    """Run one read statement in the sandbox (``store/sandbox.py``); ``{"columns": [...],
    "rows": [[...], ...], "total": n}`` with JSON-ready values: at most ``limit`` rows converted
    (None: all), ``total`` counts them all. ``con`` must be opened for this alone."""
    statement = read_statement(sandbox(con), sql)
    try:
        cur = con.execute(statement)
        names = [d[0] for d in cur.description or []]
        if not names:
            return {"columns": [], "rows": [], "total": 0}
        if limit is None:
            rows = [[plain_value(v) for v in row] for row in cur.fetchall()]
            return {"columns": names, "rows": rows, "total": len(rows)}
        rows = [[plain_value(v) for v in row] for row in cur.fetchmany(limit)]
        total = len(rows)
        # The rest is only counted, in chunks, so a huge result costs no memory.
        while chunk := cur.fetchmany(10_000):
            total += len(chunk)
    except duckdb.Error as exc:
        if is_damage(exc):
            raise  # not the SQL's fault: the CLI reports the damaged file and the way back
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QueryError(f"{first}; check the SQL against docs/schema.md") from exc
    return {"columns": names, "rows": rows, "total": total}
