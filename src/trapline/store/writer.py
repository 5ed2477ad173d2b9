"""Turn parsed records into Arrow tables and write them in one transaction per batch.

ARCHITECTURE rule 3: never row by row. ``tables_for`` is pure (it runs inside the parse workers,
so the main process only ships finished columns to DuckDB); ``write_batch`` is the single writer.
Arrow needs valid UTF-8, and real spam carries lone surrogates and NULs, so strings are cleaned
here once rather than trusted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from trapline.model import Message, Quarantined, SourceProblem
from trapline.store.raw import rollback, utcnow

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
TABLE_ORDER = ("recipients", "hops", "urls", "attachments", "quarantine", "messages")


@dataclass(slots=True)
class Batch:
    """Arrow tables for one write transaction, plus the ids they cover."""

    tables: dict[str, pa.Table]
    message_ids: list[str] = field(default_factory=list)
    quarantined_ids: list[str] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        return len(self.message_ids) + len(self.quarantined_ids)


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(value: str) -> str:
    """Valid UTF-8 text: lone surrogates become U+FFFD; NULs (legal in mail, fatal to tools) go."""
    return _SURROGATE.sub("\ufffd", value).replace("\x00", "")


def _strings(values: list[Any]) -> pa.Array:
    try:
        arr = pa.array(values, _S)
    except (UnicodeEncodeError, pa.ArrowException):
        return pa.array([None if v is None else clean_text(str(v)) for v in values], _S)
    # NUL bytes survive Arrow but break DuckDB string functions and terminals; drop them.
    if pc.any(pc.match_substring(arr, "\x00")).as_py():
        return pa.array([None if v is None else v.replace("\x00", "") for v in values], _S)
    return arr


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


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
        elif fld.type == _TS:
            arrays.append(pa.array([_utc(v) for v in values], _TS))
        else:
            arrays.append(pa.array(values, fld.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _columns(name: str, rows: list[tuple[Any, ...]]) -> dict[str, list[Any]]:
    """Row tuples (in schema order) to column lists: one transpose instead of an append per cell."""
    names = SCHEMAS[name].names
    if not rows:
        return {n: [] for n in names}
    return {n: list(col) for n, col in zip(names, zip(*rows, strict=True), strict=True)}


def tables_for(records: Iterable[Message | Quarantined], now: datetime | None = None) -> Batch:
    """Arrow tables for parsed ``records`` (pure; runs in the parse workers)."""
    when = now or utcnow()
    msgs: list[tuple[Any, ...]] = []
    rcpts: list[tuple[Any, ...]] = []
    hops: list[tuple[Any, ...]] = []
    urls: list[tuple[Any, ...]] = []
    atts: list[tuple[Any, ...]] = []
    quar: list[tuple[Any, ...]] = []
    message_ids: list[str] = []
    quarantined_ids: list[str] = []
    for rec in records:
        if isinstance(rec, Quarantined):
            quarantined_ids.append(rec.id)
            quar.append((rec.id, rec.source, rec.reason, rec.detail, rec.size, when))
            continue
        mid = rec.id
        message_ids.append(mid)
        # Same order as SCHEMAS["messages"]; campaign_id and trap_visit_id are later stages'.
        msgs.append(
            (
                mid, rec.source, rec.size, rec.received_at, rec.received_at_source, rec.date,
                tuple(rec.date_flags), rec.message_id, rec.subject, rec.from_.name,
                rec.from_.addr, rec.from_.domain, rec.origin_ip, rec.origin_hop, rec.text,
                len(rec.hops), len(rec.urls), len(rec.attachments), tuple(rec.defects),
                rec.origin_asn, rec.origin_prefix, rec.routing_snapshot, None, None, when,
            )
        )  # fmt: skip
        for kind, addrs in (("to", rec.to), ("cc", rec.cc)):
            rcpts.extend((mid, kind, a.name, a.addr, a.domain, None) for a in addrs)
        if rec.envelope is not None:
            for addr in rec.envelope.rcpt_to:
                domain = addr.rpartition("@")[2].lower() or None
                rcpts.append((mid, "rcpt", None, addr, domain, None))
        hops.extend(
            (
                mid, h.index, h.from_helo, h.from_rdns, h.from_ip, h.by_host, h.protocol,
                h.smtp_id, h.for_addr, h.timestamp, h.trusted, h.raw,
            )
            for h in rec.hops
        )  # fmt: skip
        urls.extend(
            (mid, u.url, u.host, u.registered_domain, u.source, u.obfuscated) for u in rec.urls
        )
        atts.extend((mid, a.filename, a.content_type, a.size, a.sha256) for a in rec.attachments)
    tables = {
        "messages": _table("messages", _columns("messages", msgs)),
        "recipients": _table("recipients", _columns("recipients", rcpts)),
        "hops": _table("hops", _columns("hops", hops)),
        "urls": _table("urls", _columns("urls", urls)),
        "attachments": _table("attachments", _columns("attachments", atts)),
        "quarantine": _table("quarantine", _columns("quarantine", quar)),
    }
    return Batch(tables, message_ids, quarantined_ids)


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
    tables = {name: pa.concat_tables([b.tables[name] for b in batches]) for name in SCHEMAS}
    return Batch(
        tables,
        [i for b in batches for i in b.message_ids],
        [i for b in batches for i in b.quarantined_ids],
    )


def _insert_all(con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table]) -> None:
    con.execute("BEGIN TRANSACTION")
    try:
        for name in TABLE_ORDER:
            table = tables[name]
            if table.num_rows == 0:
                continue
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


def _subset(batch: Batch, ids: list[str]) -> Batch:
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
        ids = batch.message_ids + batch.quarantined_ids
        if len(ids) > 1:
            half = len(ids) // 2
            return write_batch(con, _subset(batch, ids[:half])) + write_batch(
                con, _subset(batch, ids[half:])
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
