"""``signatures`` rows as Arrow: pure, so the parse workers build them from parsed records.

The writer gives rows without ``seq`` the next numbers (the processing order campaign
clustering follows) in the batch's own transaction; the store adapter
(``trapline.pipeline.adapters.fingerprint``) builds the same rows from stored fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from trapline.fingerprint.signature import Fingerprints, fingerprint_batch, input_of
from trapline.model import Message, utcnow


def signature_rows(fps: Fingerprints, received_at: pa.Array, seqs: list[int] | None) -> pa.Table:
    """``signatures`` rows; without ``seqs`` the column is left out for the writer to fill."""
    now = utcnow()
    columns: dict[str, Any] = {"message_id": list(fps.message_ids)}
    if seqs is not None:
        columns["seq"] = pa.array(seqs, pa.int64())
    columns.update(
        {
            "minhash": [row.tobytes() for row in fps.matrix.astype("<u4", copy=False)],
            "n_words": pa.array(fps.n_words, pa.int32()),
            "url_templates": pa.array([list(t) for t in fps.url_templates], pa.list_(pa.string())),
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
    return signature_rows(
        fps, pa.array([m.received_at for m in messages], pa.timestamp("us")), None
    )
