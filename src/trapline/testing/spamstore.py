"""Write generated messages into a real store (messages, urls, recipients), in Arrow batches.

Used by tests and the benchmark to get ground-truth mail into DuckDB without rendering and
re-parsing MIME: the campaign code reads exactly these columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from trapline.model import utcnow
from trapline.testing.spamgen import GenMessage


def store_generated(con: Any, msgs: Sequence[GenMessage], *, source: str = "spamgen") -> None:
    """Insert ``msgs`` as stored messages (ingested now, in the given order)."""
    now = utcnow()
    messages = pa.table(
        {
            "id": [m.id for m in msgs],
            "source": [source] * len(msgs),
            "size": [len(m.text) for m in msgs],
            "received_at": pa.array([m.received_at for m in msgs], pa.timestamp("us")),
            "subject": [m.subject for m in msgs],
            "origin_ip": [m.origin_ip for m in msgs],
            "body_text": [m.text for m in msgs],
            "n_urls": [len(m.urls) for m in msgs],
            "ingested_at": pa.array([now] * len(msgs), pa.timestamp("us")),
        }
    )
    urls = pa.table(
        {
            "message_id": [m.id for m in msgs for _ in m.urls],
            "url": [u for m in msgs for u in m.urls],
            "host": [u.split("/")[2] for m in msgs for u in m.urls],
            "registered_domain": [
                ".".join(u.split("/")[2].split(".")[-2:]) for m in msgs for u in m.urls
            ],
        }
    )
    recipients = pa.table(
        {
            "message_id": [m.id for m in msgs],
            "kind": ["to"] * len(msgs),
            "name": [m.to_name for m in msgs],
            "addr": [m.to_addr for m in msgs],
            "domain": [m.to_addr.rsplit("@", 1)[-1] for m in msgs],
        }
    )
    for name, table in (("_g_m", messages), ("_g_u", urls), ("_g_r", recipients)):
        con.register(name, table)
    try:
        cols = ", ".join(messages.column_names)
        con.execute(f"INSERT INTO messages ({cols}) SELECT {cols} FROM _g_m")
        con.execute(
            "INSERT INTO urls (message_id, url, host, registered_domain) SELECT * FROM _g_u"
        )
        con.execute(
            "INSERT INTO recipients (message_id, kind, name, addr, domain) SELECT * FROM _g_r"
        )
    finally:
        for name in ("_g_m", "_g_u", "_g_r"):
            con.unregister(name)
