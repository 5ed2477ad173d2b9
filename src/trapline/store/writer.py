"""Turn parsed records into Arrow tables and write them in one transaction per batch.

ARCHITECTURE rule 3: never row by row. ``tables_for`` is pure (it runs inside the parse workers,
so the main process only ships finished columns to DuckDB); ``write_batch`` is the single writer.
Arrow needs valid UTF-8, and real spam carries lone surrogates and NULs, so strings are cleaned
here once rather than trusted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from trapline.model import Address, Message, Quarantined, SourceProblem, clean_text, utcnow
from trapline.store.duckdb import is_transient
from trapline.store.raw import rollback

_S = pa.string()
_TS = pa.timestamp("us")
_LS = pa.list_(pa.string())

SCHEMAS: dict[str, pa.Schema] = {
    "messages": pa.schema(
        [
            ("id", _S),
            ("source", _S),
            ("size", pa.int64()),
            ("received_at", _TS),
            ("received_at_source", _S),
            ("date", _TS),
            ("date_flags", _LS),
            ("message_id", _S),
            ("subject", _S),
            ("from_name", _S),
            ("from_addr", _S),
            ("from_domain", _S),
            ("origin_ip", _S),
            ("origin_hop", pa.int32()),
            ("body_text", _S),
            ("n_hops", pa.int32()),
            ("n_urls", pa.int32()),
            ("n_attachments", pa.int32()),
            ("defects", _LS),
            ("origin_asn", pa.int32()),
            ("origin_prefix", _S),
            ("routing_snapshot", _S),
            ("campaign_id", _S),
            ("trap_visit_id", _S),
            ("ingested_at", _TS),
        ]
    ),
    "recipients": pa.schema(
        [
            ("message_id", _S),
            ("kind", _S),
            ("name", _S),
            ("addr", _S),
            ("domain", _S),
            ("trap_visit_id", _S),
        ]
    ),
    "hops": pa.schema(
        [
            ("message_id", _S),
            ("idx", pa.int32()),
            ("from_helo", _S),
            ("from_rdns", _S),
            ("from_ip", _S),
            ("by_host", _S),
            ("protocol", _S),
            ("smtp_id", _S),
            ("for_addr", _S),
            ("ts", _TS),
            ("trusted", pa.bool_()),
            ("raw", _S),
        ]
    ),
    "urls": pa.schema(
        [
            ("message_id", _S),
            ("url", _S),
            ("host", _S),
            ("registered_domain", _S),
            ("source", _S),
            ("obfuscated", pa.bool_()),
            ("part", _S),
        ]
    ),
    "attachments": pa.schema(
        [
            ("message_id", _S),
            ("filename", _S),
            ("content_type", _S),
            ("size", pa.int64()),
            ("sha256", _S),
        ]
    ),
    "quarantine": pa.schema(
        [
            ("id", _S),
            ("source", _S),
            ("reason", _S),
            ("detail", _S),
            ("size", pa.int64()),
            ("logged_at", _TS),
        ]
    ),
}

# Insert order: child tables first is irrelevant without foreign keys, but messages last makes a
# half-visible batch impossible even for readers that ignore transactions.
TABLE_ORDER = (
    "recipients", "hops", "urls", "attachments", "quarantine", "signatures", "messages"
)  # fmt: skip


@dataclass(slots=True)
class Batch:
    """Arrow tables for one write transaction, plus the ids they cover."""

    tables: dict[str, pa.Table]
    message_ids: list[str] = field(default_factory=list)
    quarantined_ids: list[str] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        return len(self.message_ids) + len(self.quarantined_ids)

    def __reduce__(self) -> tuple[Any, ...]:
        # Workers send batches back pickled: one Arrow IPC stream per table is cheaper than
        # pickling the tables column by column.
        streams = {name: _ipc_bytes(table) for name, table in self.tables.items()}
        return (_batch_from_ipc, (streams, self.message_ids, self.quarantined_ids))


def _ipc_bytes(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)
    return sink.getvalue()


def _batch_from_ipc(
    streams: dict[str, pa.Buffer], message_ids: list[str], quarantined_ids: list[str]
) -> Batch:
    tables = {name: pa.ipc.open_stream(data).read_all() for name, data in streams.items()}
    return Batch(tables, message_ids, quarantined_ids)


def _has_nul(arr: pa.Array) -> bool:
    """Whether a freshly built string array holds a NUL anywhere in its character data.

    One memchr over a copy of the data buffer: ``pc.match_substring`` costs ~40x more on a
    column of message bodies. A false positive (padding) would only cost the slow path below.
    """
    data = arr.buffers()[2]
    return data is not None and b"\x00" in data.to_pybytes()


def _strings(values: list[Any]) -> pa.Array:
    try:
        arr = pa.array(values, _S)
    except (UnicodeEncodeError, pa.ArrowException):
        return pa.array([None if v is None else clean_text(str(v)) for v in values], _S)
    # NUL bytes survive Arrow but break DuckDB string functions and terminals; drop them.
    if not isinstance(arr, pa.StringArray) or arr.offset or _has_nul(arr):
        return pa.array([None if v is None else v.replace("\x00", "") for v in values], _S)
    return arr


def _string_lists(values: list[tuple[str, ...]]) -> pa.Array:
    flat = [s for v in values for s in v]
    offsets = [0]
    for v in values:
        offsets.append(offsets[-1] + len(v))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), _strings(flat))


def _table(name: str, columns: dict[str, list[Any]]) -> pa.Table:
    schema = SCHEMAS[name]
    arrays = []
    for fld in schema:
        values = columns[fld.name]
        if fld.type == _S:
            arrays.append(_strings(values))
        elif fld.type == _LS:
            arrays.append(_string_lists(values))
        else:
            # Timestamps too: pyarrow converts an aware datetime to UTC (via its utcoffset) for a
            # zone-less timestamp type and keeps a naive one as is, in C, one call per column.
            arrays.append(pa.array(values, fld.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _attrs(objs: list[Any], names: Sequence[str]) -> dict[str, list[Any]]:
    """Column lists of the attributes ``names`` of ``objs`` (one C-level map per column)."""
    return {n: list(map(attrgetter(n), objs)) for n in names}


_HOP_FIELDS = {
    "idx": "index", "from_helo": "from_helo", "from_rdns": "from_rdns", "from_ip": "from_ip",
    "by_host": "by_host", "protocol": "protocol", "smtp_id": "smtp_id", "for_addr": "for_addr",
    "ts": "timestamp", "trusted": "trusted", "raw": "raw",
}  # fmt: skip
_URL_FIELDS = {n: n for n in ("url", "host", "registered_domain", "source", "obfuscated", "part")}
_ATT_FIELDS = {n: n for n in ("filename", "content_type", "size", "sha256")}


def _message_columns(msgs: list[Message], when: datetime) -> dict[str, list[Any]]:
    cols = _attrs(
        msgs,
        ("id", "source", "size", "received_at", "received_at_source", "date", "date_flags",
         "message_id", "subject", "origin_ip", "origin_hop", "defects", "origin_asn",
         "origin_prefix", "routing_snapshot"),
    )  # fmt: skip
    cols["body_text"] = list(map(attrgetter("text"), msgs))
    senders = [m.from_ for m in msgs]
    cols["from_name"] = list(map(attrgetter("name"), senders))
    cols["from_addr"] = list(map(attrgetter("addr"), senders))
    cols["from_domain"] = list(map(attrgetter("domain"), senders))
    cols["n_hops"] = [len(m.hops) for m in msgs]
    cols["n_urls"] = [len(m.urls) for m in msgs]
    cols["n_attachments"] = [len(m.attachments) for m in msgs]
    # campaign_id and trap_visit_id are later stages'.
    cols["campaign_id"] = cols["trap_visit_id"] = [None] * len(msgs)
    cols["ingested_at"] = [when] * len(msgs)
    return cols


def _recipient_columns(msgs: list[Message]) -> dict[str, list[Any]]:
    mids: list[str] = []
    kinds: list[str] = []
    addrs: list[Address] = []
    for m in msgs:
        for kind, group in (("to", m.to), ("cc", m.cc)):
            if group:
                mids.extend([m.id] * len(group))
                kinds.extend([kind] * len(group))
                addrs.extend(group)
        if m.envelope is not None:
            for addr in m.envelope.rcpt_to:
                mids.append(m.id)
                kinds.append("rcpt")
                addrs.append(Address(None, addr, addr.rpartition("@")[2].lower() or None))
    cols = _attrs(addrs, ("name", "addr", "domain"))
    cols["message_id"], cols["kind"] = mids, kinds
    cols["trap_visit_id"] = [None] * len(mids)
    return cols


def _child_columns(msgs: list[Message], part: str, fields: dict[str, str]) -> dict[str, list[Any]]:
    """Columns of one child table (hops, urls, attachments): ``fields`` maps column to attribute."""
    mids: list[str] = []
    items: list[Any] = []
    for m in msgs:
        group = getattr(m, part)
        if group:
            mids.extend([m.id] * len(group))
            items.extend(group)
    cols = {col: list(map(attrgetter(attr), items)) for col, attr in fields.items()}
    cols["message_id"] = mids
    return cols


def tables_for(records: Iterable[Message | Quarantined], now: datetime | None = None) -> Batch:
    """Arrow tables for parsed ``records`` (pure; runs in the parse workers).

    Columns are read straight off the records (no row tuples to transpose), in record order.
    """
    when = now or utcnow()
    msgs: list[Message] = []
    quar: list[Quarantined] = []
    for rec in records:
        if isinstance(rec, Quarantined):
            quar.append(rec)
        else:
            msgs.append(rec)
    qcols = _attrs(quar, ("id", "source", "reason", "detail", "size"))
    qcols["logged_at"] = [when] * len(quar)
    tables = {
        "messages": _table("messages", _message_columns(msgs, when)),
        "recipients": _table("recipients", _recipient_columns(msgs)),
        "hops": _table("hops", _child_columns(msgs, "hops", _HOP_FIELDS)),
        "urls": _table("urls", _child_columns(msgs, "urls", _URL_FIELDS)),
        "attachments": _table("attachments", _child_columns(msgs, "attachments", _ATT_FIELDS)),
        "quarantine": _table("quarantine", qcols),
    }
    return Batch(tables, [m.id for m in msgs], qcols["id"])


def problem_table(problems: Sequence[SourceProblem], now: datetime | None = None) -> pa.Table:
    """Quarantine rows (id NULL) for sources that yielded no bytes."""
    when = now or utcnow()
    return _table(
        "quarantine",
        {
            "id": [None] * len(problems),
            "source": [p.source for p in problems],
            "reason": [p.reason for p in problems],
            "detail": [p.detail for p in problems],
            "size": [None] * len(problems),
            "logged_at": [when] * len(problems),
        },
    )


def merge(batches: Sequence[Batch]) -> Batch:
    """One batch from several (worker results gathered into one write transaction)."""
    if len(batches) == 1:
        return batches[0]
    names = dict.fromkeys(name for b in batches for name in b.tables)
    tables = {
        # Promotion: a batch whose list columns are all empty may carry list<null>.
        name: pa.concat_tables(
            [b.tables[name] for b in batches if name in b.tables], promote_options="default"
        )
        for name in names
    }
    return Batch(
        tables,
        [i for b in batches for i in b.message_ids],
        [i for b in batches for i in b.quarantined_ids],
    )


def _insert_all(con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table]) -> None:
    con.execute("BEGIN TRANSACTION")
    try:
        for name in TABLE_ORDER:
            table = tables.get(name)
            if table is None or table.num_rows == 0:
                continue
            if name == "signatures" and "seq" not in table.column_names:
                table = _with_seqs(con, table)
            view = f"_batch_{name}"
            con.register(view, table)
            try:
                # Column names spelled out: later schema files may add columns to core tables.
                cols = ", ".join(f'"{c}"' for c in table.column_names)
                con.execute(f"INSERT INTO {name} ({cols}) SELECT {cols} FROM {view}")
            finally:
                con.unregister(view)
        con.execute("COMMIT")
    except BaseException:
        rollback(con)
        raise


def _with_seqs(con: duckdb.DuckDBPyConnection, table: pa.Table) -> pa.Table:
    """Signatures computed at parse time get the next ``seq`` numbers here, inside the write
    transaction: seq is the processing order campaign clustering follows (the one writer makes
    them contiguous and in batch order, as fingerprinting stored rows does)."""
    ((start,),) = con.execute("SELECT coalesce(max(seq), -1) + 1 FROM signatures").fetchall()
    seqs = pa.array(range(start, start + table.num_rows), pa.int64())
    return table.add_column(1, "seq", seqs)


def subset(batch: Batch, ids: list[str]) -> Batch:
    """The part of ``batch`` that belongs to the message (or quarantine) ``ids``."""
    keep = pa.array(ids, _S)
    tables = {}
    for name, table in batch.tables.items():
        key = "id" if name in ("messages", "quarantine") else "message_id"
        tables[name] = table.filter(pc.is_in(table[key], value_set=keep))
    wanted = set(ids)
    return Batch(
        tables,
        [i for i in batch.message_ids if i in wanted],
        [i for i in batch.quarantined_ids if i in wanted],
    )


def write_batch(con: duckdb.DuckDBPyConnection, batch: Batch) -> list[Quarantined]:
    """Write ``batch`` in one transaction.

    If DuckDB rejects the batch (a value no parser test foresaw), bisect to find the messages it
    rejects and quarantine just those with reason ``store-error``: one bad message must not cost
    the other 1,999 their rows. Returns the messages so quarantined.
    """
    try:
        _insert_all(con, batch.tables)
        return []
    except duckdb.InterruptException:
        raise
    except duckdb.Error as exc:
        if is_transient(exc):  # disk full: not the messages' fault; the caller retries
            raise
        ids = batch.message_ids + batch.quarantined_ids
        if len(ids) > 1:
            half = len(ids) // 2
            return write_batch(con, subset(batch, ids[:half])) + write_batch(
                con, subset(batch, ids[half:])
            )
        if not ids:
            raise
        table = batch.tables["messages"] if batch.message_ids else batch.tables["quarantine"]
        size = table["size"][0].as_py() if table.num_rows else None
        source = table["source"][0].as_py() if table.num_rows else ""
        bad = Quarantined(ids[0], size or 0, source or "", "store-error", str(exc)[:500])
        _insert_all(con, {**_empty_tables(), "quarantine": tables_for([bad]).tables["quarantine"]})
        return [bad]


def _empty_tables() -> dict[str, pa.Table]:
    return {name: schema.empty_table() for name, schema in SCHEMAS.items()}


def write_problems(con: duckdb.DuckDBPyConnection, problems: Sequence[SourceProblem]) -> int:
    """Record source problems not already recorded (same source and reason); returns how many."""
    if not problems:
        return 0
    unique = list({(p.source, p.reason): p for p in problems}.values())
    table = problem_table(unique)
    con.register("_problems", table)
    try:
        known = con.execute(
            "SELECT p.source, p.reason FROM _problems p SEMI JOIN quarantine q "
            "ON q.id IS NULL AND q.source = p.source AND q.reason = p.reason"
        ).fetchall()
    finally:
        con.unregister("_problems")
    seen = {(s, r) for s, r in known}
    fresh = [p for p in unique if (clean_text(p.source), p.reason) not in seen]
    if fresh:
        _insert_all(con, {**_empty_tables(), "quarantine": problem_table(fresh)})
    return len(fresh)
