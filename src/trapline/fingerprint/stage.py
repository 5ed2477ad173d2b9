"""Signatures for the store: at ingest from the parsed records, or later from stored rows.

At ingest (``fingerprint_at_ingest``, the default) the parse workers call ``signature_table`` on
the records they just parsed, so fingerprinting runs on every core and nothing is read back;
the writer gives the rows the next ``seq`` numbers (the processing order campaign clustering
follows) in the batch's own transaction. ``fingerprint_ids`` computes the same signatures from
stored rows: for messages stored without them (``analyze campaigns`` backfills), for
``refingerprint_all``, and as the post-ingest stage ``fingerprint_stage``. Both paths read the
same field values (``signature.input_of`` applies the writer's string cleaning and the query's
URL order), so they give identical signatures.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from trapline.fingerprint.signature import (
    FingerprintInput,
    Fingerprints,
    fingerprint_batch,
    input_of,
)
from trapline.model import Message

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
    con: Any, message_ids: Sequence[str], *, seqs: Sequence[int] | None = None
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
    table = _table(fps, pa.array([r[3] for r in rows], pa.timestamp("us")), seq_col)
    con.register("_new_signatures", table)
    try:
        con.execute("INSERT INTO signatures SELECT * FROM _new_signatures")
    finally:
        con.unregister("_new_signatures")
    return len(fps)


def _table(fps: Fingerprints, received_at: pa.Array, seqs: list[int] | None) -> pa.Table:
    """``signatures`` rows; without ``seqs`` the column is left out for the writer to fill."""
    now = datetime.now(UTC).replace(tzinfo=None)
    columns: dict[str, Any] = {"message_id": list(fps.message_ids)}
    if seqs is not None:
        columns["seq"] = pa.array(seqs, pa.int64())
    columns.update(
        {
            "minhash": [row.tobytes() for row in fps.matrix.astype("<u4", copy=False)],
            "n_words": pa.array(fps.n_words, pa.int32()),
            "url_templates": [list(t) for t in fps.url_templates],
            "subject_template": list(fps.subject_templates),
            "received_at": received_at,
            "campaign_seq": pa.nulls(len(fps), pa.int64()),
            "computed_at": pa.array([now] * len(fps), pa.timestamp("us")),
        }
    )
    return pa.table(columns)


def signature_table(messages: Sequence[Message]) -> pa.Table:
    """``signatures`` rows (no ``seq`` yet) for parsed messages: pure, runs in the parse workers.

    ``received_at`` is converted to naive UTC exactly as the ``messages`` column is.
    """
    fps = fingerprint_batch([input_of(m) for m in messages])
    return _table(fps, pa.array([m.received_at for m in messages], pa.timestamp("us")), None)


def refingerprint_all(con: Any, *, batch: int = 20_000) -> int:
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


def fingerprint_stage(store: Any, message_ids: Sequence[str], settings: dict[str, Any]) -> str:
    """Pipeline stage (``post_ingest_stages``): fingerprint the batch just stored."""
    n = fingerprint_ids(store.con, message_ids)
    return f"fingerprinted {n} messages"
