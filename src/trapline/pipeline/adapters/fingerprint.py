"""The fingerprint stage's store side: signatures from stored rows.

At ingest (``fingerprint_at_ingest``, the default) the parse workers call
``trapline.fingerprint.rows.signature_table`` on the records they just parsed, so fingerprinting
runs on every core and nothing is read back. ``fingerprint_ids`` computes the same signatures from
stored rows: for messages stored without them (``analyze campaigns`` backfills), for
``refingerprint_all``, and as the post-ingest stage ``fingerprint_stage``. Both paths read the
same field values (``signature.input_of`` applies the writer's string cleaning and the query's
URL order), so they give identical signatures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from trapline.fingerprint.rows import signature_rows
from trapline.fingerprint.signature import FingerprintInput, fingerprint_batch
from trapline.store.duckdb import Store

_FIELDS_SQL = """
WITH ids AS (SELECT unnest($ids::VARCHAR[]) AS id, generate_subscripts($ids::VARCHAR[], 1) AS pos),
u AS (SELECT message_id, list(url ORDER BY url) AS urls,
             list(registered_domain ORDER BY url) AS doms
      FROM urls WHERE message_id IN (SELECT id FROM ids) GROUP BY message_id),
r AS (SELECT message_id, list(name) FILTER (WHERE name IS NOT NULL) AS names,
             list(addr) FILTER (WHERE addr IS NOT NULL) AS addrs
      FROM recipients WHERE message_id IN (SELECT id FROM ids) GROUP BY message_id)
SELECT m.id, m.body_text, m.subject, m.received_at, u.urls, u.doms, r.names, r.addrs
FROM ids JOIN messages m ON m.id = ids.id
LEFT JOIN u ON u.message_id = m.id LEFT JOIN r ON r.message_id = m.id
WHERE m.id NOT IN (SELECT message_id FROM signatures)
ORDER BY ids.pos
"""


def fingerprint_ids(
    con: duckdb.DuckDBPyConnection, message_ids: Sequence[str], *, seqs: Sequence[int] | None = None
) -> int:
    """Fingerprint ``message_ids`` (in that order) that have no signature yet; returns count.

    New signatures get the next ``seq`` numbers, or ``seqs`` (one per id) when re-computing.
    """
    rows = con.execute(_FIELDS_SQL, {"ids": list(message_ids)}).fetchall()
    if not rows:
        return 0
    items = [
        FingerprintInput(
            mid,
            text or "",
            subject,
            tuple(zip(urls or (), doms or (), strict=False)),
            tuple([*(names or ()), *(addrs or ())]),
        )
        for mid, text, subject, _, urls, doms, names, addrs in rows
    ]
    fps = fingerprint_batch(items)
    if seqs is not None:
        by_id = dict(zip(message_ids, seqs, strict=True))
        seq_col = [by_id[mid] for mid in fps.message_ids]
    else:
        ((start,),) = con.execute("SELECT coalesce(max(seq), -1) + 1 FROM signatures").fetchall()
        seq_col = list(range(start, start + len(fps)))
    table = signature_rows(fps, pa.array([r[3] for r in rows], pa.timestamp("us")), seq_col)
    con.register("_new_signatures", table)
    try:
        con.execute("INSERT INTO signatures SELECT * FROM _new_signatures")
    finally:
        con.unregister("_new_signatures")
    return len(fps)


def refingerprint_all(con: duckdb.DuckDBPyConnection, *, batch: int = 20_000) -> int:
    """Recompute every stored signature in place, keeping each message's ``seq``.

    For after an upgrade that changes normalisation or templates; campaigns must then be
    rebuilt (``analyze campaigns --refingerprint`` does both). Keeping ``seq`` keeps the
    processing order, so campaign ids survive wherever membership does.
    """
    done = 0
    last = -1
    while True:
        rows = con.execute(
            "SELECT message_id, seq FROM signatures WHERE seq > ? ORDER BY seq LIMIT ?",
            [last, batch],
        ).fetchall()
        if not rows:
            return done
        ids = [r[0] for r in rows]
        last = rows[-1][1]
        con.execute(
            "DELETE FROM signatures WHERE seq IN (SELECT unnest(?::BIGINT[]))",
            [[r[1] for r in rows]],
        )
        done += fingerprint_ids(con, ids, seqs=[r[1] for r in rows])


def fingerprint_stage(store: Store, message_ids: Sequence[str], settings: dict[str, Any]) -> str:
    """Pipeline stage (``post_ingest_stages``): fingerprint the batch just stored."""
    n = fingerprint_ids(store.con, message_ids)
    return f"fingerprinted {n} messages"
