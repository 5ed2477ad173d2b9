"""Origin network as of the message's date: the pure ASN stage over records or Arrow rows.

Both functions take the routing snapshots as read-only context (``trapline.routing.lookup``), so
the same call runs in-process, in a process pool or in a Spark partition; the store side (which
rows to map, where the answers go) is the stage's adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import pyarrow as pa

from trapline.model import Message
from trapline.routing.lookup import Routing, day_numbers


def enrich_batch(
    messages: Sequence[Message], routing: Routing, mode: str = "nearest"
) -> list[Message]:
    """Pure stage (ARCHITECTURE rule 1): the messages with ``origin_asn``, ``origin_prefix`` and
    ``routing_snapshot`` filled, each as of its own ``received_at``. No I/O: ``routing`` is
    read-only context, so the same call runs in a process pool or a Spark partition."""
    pending = [i for i, m in enumerate(messages) if m.origin_ip]
    ips = [messages[i].origin_ip or "" for i in pending]
    snap, route, family = routing.lookup_many(
        ips, day_numbers([messages[i].received_at for i in pending]), mode
    )
    asns, prefixes, snaps = routing.describe(snap, route, family)
    out = list(messages)
    for k, i in enumerate(pending):
        out[i] = replace(
            messages[i], origin_asn=asns[k], origin_prefix=prefixes[k], routing_snapshot=snaps[k]
        )
    return out


def routing_answers(routing: Routing, part: pa.Table, mode: str, now: datetime) -> pa.Table:
    """Routing answers for one slice of (subject, subject_id, message_id, ip, seen_at) rows."""
    ips = [str(x) for x in part.column(3).to_pylist()]
    times = part.column(4).to_pylist()
    snap, route, family = routing.lookup_many(ips, day_numbers(times), mode)
    asns, prefixes, snaps = routing.describe(snap, route, family)
    return pa.table(
        {
            "subject": part.column(0).cast(pa.string()),
            "subject_id": part.column(1).cast(pa.string()),
            "message_id": part.column(2).cast(pa.string()),
            "ip": pa.array(ips, pa.string()),
            "seen_at": pa.array(times, pa.timestamp("us")),
            "asn": pa.array(asns, pa.int64()),
            "prefix": pa.array(prefixes, pa.string()),
            "snapshot_id": pa.array(snaps, pa.string()),
            "enriched_at": pa.array([now] * len(ips), pa.timestamp("us")),
        }
    )
