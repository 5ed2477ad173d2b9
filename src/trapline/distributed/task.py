"""One distributed ingest task, without Spark: the local ingest core over one split.

A task reads its split with the local reader and runs the local ingest core (``IngestCore``:
dedupe, raw archive, parse, fingerprints, write) into a private in-memory DuckDB store that has
the store's schema, maps addresses with the
local enrichment and the routing snapshots it was handed, and writes that store's tables as
Parquet: exactly the store's schema, because it *is* the store's schema. Spark only decides
where tasks run (``trapline.distributed.spark``); the same function runs in tests and locally.

Layout: ``OUT/<table>/received_day=YYYY-MM-DD/part-NNNNN.parquet`` (hive partitions by the
message's received day; ``__HIVE_DEFAULT_PARTITION__`` when it has none), ``quarantine``
unpartitioned. File names come from the task number (and, past ``CHUNK_BYTES`` of mail, the
chunk), so a retried task overwrites its own files instead of adding copies.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trapline.distributed.splits import Split, read_split
from trapline.model import RawMessage, SourceProblem, message_id_of
from trapline.objectstores import ObjectStores, locate
from trapline.pipeline.core import IngestCore
from trapline.store.duckdb import Store, schema_statements
from trapline.store.writer import write_problems

DAY = "received_day"
NO_DAY = "__HIVE_DEFAULT_PARTITION__"  # Hive's (and Spark's) name for a NULL partition value
# Tables an ingest fills; each is written when it has rows. Keyed by their message-id column.
TABLES: dict[str, str | None] = {
    "raw": "id",
    "messages": "id",
    "recipients": "message_id",
    "hops": "message_id",
    "urls": "message_id",
    "attachments": "message_id",
    "signatures": "message_id",
    "ip_routing": "message_id",
    "quarantine": None,  # no received time: not partitioned
}
SEQ_SHIFT = 32  # signatures.seq = task << 32 | order in task: global order = reading order
PARSE_CHUNK = 500
# Raw bytes a task keeps in memory at once; a split beyond it (a whole compressed file) is
# written as several parts (part-NNNNN.parquet, part-NNNNN-0001.parquet, ...).
CHUNK_BYTES = 64 << 20


@dataclass(slots=True, frozen=True)
class TaskContext:
    """What every task needs, shipped once per executor (a Spark broadcast)."""

    out: str
    trust: tuple[str, ...]  # extra trusted CIDRs / names (settings["trust"] is added)
    settings: dict[str, Any]
    routing: Any = None  # trapline.enrich.asn.Routing; None = no snapshots: addresses unmapped
    fingerprint: bool = True
    label: str = "spam"  # what the inputs hold, stored on every message (trapline.store.labels)
    # id -> (task, position) of the copy to keep, for ids read more than once in the job
    keep: dict[str, tuple[int, int]] = field(default_factory=dict)
    chunk_bytes: int = CHUNK_BYTES


@dataclass(slots=True, frozen=True)
class TaskResult:
    index: int
    read: int
    duplicates: int
    messages: int
    quarantined: int
    problems: int
    rows: dict[str, int]
    error: str | None = None


def memory_store() -> Store:
    """A private in-memory store with the schema applied (a task's scratch space)."""
    store = object.__new__(Store)
    store.data_dir, store.path = Path("."), Path(":memory:")
    store.con = duckdb.connect(":memory:")
    store.con.execute("SET threads = 1")  # the executor's cores belong to other tasks
    for sql in schema_statements():
        store.con.execute(sql)
    return store


def split_ids(
    index: int, split: Split, stores: ObjectStores | None = None
) -> list[tuple[str, int, int]]:
    """``(id, task, position)`` of every message in a split: the job's dedupe pass. Never
    raises: a split that fails here fails again in ``ingest_split``, which records why."""
    out = []
    pos = 0
    try:
        for item in read_split(split, stores):
            if isinstance(item, RawMessage):
                out.append((message_id_of(item.data), index, pos))
                pos += 1
    except Exception:  # a bug or an unexpected store error: not a failed job
        return out
    return out


@dataclass(slots=True)
class _Progress:
    """What a task has read and written so far (its parts are on disk chunk by chunk)."""

    read: int = 0
    duplicates: int = 0
    messages: int = 0
    quarantined: int = 0
    problems: int = 0
    signatures: int = 0
    parts: int = 0
    rows: dict[str, int] = field(default_factory=dict)

    def result(self, index: int, error: str | None = None) -> TaskResult:
        return TaskResult(
            index,
            self.read,
            self.duplicates,
            self.messages,
            self.quarantined,
            self.problems,
            dict(self.rows),
            error,
        )

    def add_rows(self, written: dict[str, int]) -> None:
        for name, n in written.items():
            self.rows[name] = self.rows.get(name, 0) + n


def ingest_split(index: int, split: Split, ctx: TaskContext) -> TaskResult:
    """Ingest one split into Parquet under ``ctx.out``; never raises for bad input."""
    done = _Progress()
    try:
        _ingest(index, split, ctx, done)
        return done.result(index)
    except Exception as exc:  # a bug, or an unreadable output: record it, let the job go on
        detail = f"{type(exc).__name__}: {exc}"[:500]
        if done.parts:
            detail = f"after {done.messages} messages in {done.parts} part(s): {detail}"[:500]
        source = ", ".join(split.paths)[:400] + (f" @{split.start}" if split.is_range else "")
        store = memory_store()
        write_problems(store.con, [SourceProblem(source, "task-error", detail)])
        stores = ObjectStores.from_settings(ctx.settings)
        # Its own file name: the parts written before the error stay as they are.
        written = write_tables(
            store, f"{index:05d}-error", ctx.out, only=("quarantine",), stores=stores
        )
        store.close()
        done.add_rows(written)
        done.problems += 1
        return done.result(index, detail)


def _ingest(index: int, split: Split, ctx: TaskContext, done: _Progress) -> None:
    """Read the split and store it chunk by chunk (``ctx.chunk_bytes`` of raw mail at a
    time), so a task holds one chunk, not a whole compressed file, in memory."""
    seen: set[str] = set()
    chunk: list[tuple[str, RawMessage]] = []
    problems: list[SourceProblem] = []
    size = pos = 0
    stores = ObjectStores.from_settings(ctx.settings)
    # The local ingest core (dedupe, raw archive, parse with the one-by-one retry, write,
    # labels); stages off: the ASN stage runs below with the broadcast snapshots.
    core = IngestCore(
        {**ctx.settings, "post_ingest_stages": [], "post_ingest_background": False},
        lambda _text: None,
        trust=ctx.trust,
        label=ctx.label,
    )
    for item in read_split(split, stores):
        if isinstance(item, SourceProblem):
            problems.append(item)
            continue
        done.read += 1
        mid = message_id_of(item.data)
        keep = ctx.keep.get(mid, (index, pos))
        pos += 1
        if keep != (index, pos - 1) or mid in seen:
            done.duplicates += 1
            continue
        seen.add(mid)
        chunk.append((mid, item))
        size += len(item.data)
        if size >= ctx.chunk_bytes:
            _store_chunk(index, chunk, [], core, ctx, stores, done)
            chunk, size = [], 0
    _store_chunk(index, chunk, problems, core, ctx, stores, done)


def _store_chunk(
    index: int,
    chunk: list[tuple[str, RawMessage]],
    problems: list[SourceProblem],
    core: IngestCore,
    ctx: TaskContext,
    stores: ObjectStores,
    done: _Progress,
) -> None:
    """One chunk through the core into a scratch store, written as the task's next part."""
    store = memory_store()
    try:
        archived = core.archive(store, chunk)
        stored: list[str] = []
        for start in range(0, len(archived.fresh), PARSE_CHUNK):
            written = core.write(store, core.parse(archived.fresh[start : start + PARSE_CHUNK]))
            stored.extend(written.stored)
            done.quarantined += written.quarantined
        write_problems(store.con, problems)
        done.problems += len(problems)
        if ctx.routing is not None and ctx.routing.snapshots and stored:
            from trapline.pipeline.adapters.asn import enrich

            enrich(store, ctx.settings, stored, routing=ctx.routing)
        # Global order = reading order: the task in the high bits, then the order in the task.
        shift = (index << SEQ_SHIFT) + done.signatures
        store.con.execute("UPDATE signatures SET seq = seq + ?", [shift])
        (n_sigs,) = store.con.execute("SELECT count(*) FROM signatures").fetchone() or (0,)
        part: int | str = index if done.parts == 0 else f"{index:05d}-{done.parts:04d}"
        done.add_rows(write_tables(store, part, ctx.out, stores=stores))
        done.parts += 1
        done.messages += len(stored)
        done.signatures += int(n_sigs)
    finally:
        store.close()


def filesystem_for(out: str, stores: ObjectStores | None = None) -> tuple[Any, str]:
    """A pyarrow filesystem and path for ``out`` (local path: None; s3a://, gs://, ... URI)."""
    if "://" not in out:
        return None, out
    return locate(out, stores)


def _write(table: pa.Table, filesystem: Any, path: str) -> None:
    if filesystem is None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    else:
        filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, path, compression="zstd", filesystem=filesystem)


def _days(store: Store) -> dict[str, str]:
    rows = store.con.execute(
        "SELECT id, strftime(received_at, '%Y-%m-%d') FROM messages"
    ).fetchall()
    return {mid: day or NO_DAY for mid, day in rows}


def write_tables(
    store: Store,
    part: int | str,
    out: str,
    only: Iterable[str] | None = None,
    stores: ObjectStores | None = None,
) -> dict[str, int]:
    """The store's ingest tables as Parquet files named after ``part`` (a task number)."""
    filesystem, base = filesystem_for(out, stores)
    days = _days(store)
    counts: dict[str, int] = {}
    for name in only or TABLES:
        table = store.con.sql(f'SELECT * FROM "{name}"').to_arrow_table()
        if table.num_rows == 0:
            continue
        counts[name] = table.num_rows
        key = TABLES.get(name)
        file = f"part-{part:05d}.parquet" if isinstance(part, int) else f"part-{part}.parquet"
        if key is None:
            _write(table, filesystem, f"{base}/{name}/{file}")
            continue
        day_col = pa.array([days.get(m, NO_DAY) for m in table[key].to_pylist()], pa.string())
        for day in pc.unique(day_col).to_pylist():
            rows = table.filter(pc.equal(day_col, day))
            _write(rows, filesystem, f"{base}/{name}/{DAY}={day}/{file}")
    return counts
