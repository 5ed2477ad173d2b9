"""Drain the trap spool into the store, exactly once.

Order per batch of segments: (1) insert visits, sessions and events with ``INSERT OR IGNORE`` on
their unique ids, (2) ingest the messages through the normal pipeline (raw first, content-
addressed by SHA-256, so storing the same bytes again is a no-op), (3) move the segments to
``done/``. A crash between any two steps re-applies the batch on restart and changes nothing:
that is what makes "at least once from the spool" into "exactly once in the store".

This is the store's only writer while ``trapline serve`` runs (DuckDB allows one writer process).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from trapline.errors import NotConfigured
from trapline.model import Envelope, RawMessage
from trapline.store.duckdb import Store
from trapline.traps.smtp.spool import Spool, SpoolError, SpoolRecord

log = logging.getLogger("trapline.drain")
NoteFn = Callable[[str], None]

_TS = pa.timestamp("us")
# kind → (table, [(column, arrow type)]); the spool record's JSON fields use the column names.
TABLES: dict[str, tuple[str, list[tuple[str, pa.DataType]]]] = {
    "visit": (
        "visits",
        [
            ("id", pa.string()), ("seq", pa.int64()), ("address", pa.string()),
            ("visited_at", _TS), ("ip", pa.string()), ("user_agent", pa.string()),
            ("method", pa.string()), ("host", pa.string()), ("path", pa.string()),
            ("referer", pa.string()), ("headers", pa.string()), ("sensor_id", pa.string()),
            ("ignored_robots", pa.bool_()), ("read_robots", pa.bool_()),
        ],
    ),
    "session": (
        "smtp_sessions",
        [
            ("session_id", pa.string()), ("peer_ip", pa.string()), ("peer_port", pa.int32()),
            ("started_at", _TS), ("ended_at", _TS), ("helo", pa.string()),
            ("helo_shape", pa.string()), ("mail_from", pa.list_(pa.string())),
            ("rcpt_to", pa.list_(pa.string())), ("esmtp", pa.bool_()), ("tls", pa.bool_()),
            ("pipelined", pa.bool_()), ("commands", pa.list_(pa.string())),
            ("first_command_ms", pa.float64()), ("median_gap_ms", pa.float64()),
            ("messages", pa.int32()), ("fingerprint", pa.string()),
            ("fingerprint_text", pa.string()), ("end_reason", pa.string()),
        ],
    ),
    "relay": (
        "relay_attempts",
        [
            ("id", pa.string()), ("session_id", pa.string()), ("peer_ip", pa.string()),
            ("mail_from", pa.string()), ("rcpt_to", pa.string()), ("domain", pa.string()),
            ("attempted_at", _TS),
        ],
    ),
    "limit": (
        "limit_events",
        [
            ("id", pa.string()), ("session_id", pa.string()), ("peer_ip", pa.string()),
            ("kind", pa.string()), ("reply", pa.string()), ("detail", pa.string()), ("hit_at", _TS),
        ],
    ),
    "comment": (
        "comment_spam",
        [
            ("id", pa.string()), ("visit_id", pa.string()), ("posted_at", _TS), ("ip", pa.string()),
            ("user_agent", pa.string()), ("name", pa.string()), ("email", pa.string()),
            ("url", pa.string()), ("body", pa.string()), ("urls", pa.list_(pa.string())),
        ],
    ),
}  # fmt: skip


@dataclass(slots=True)
class DrainResult:
    segments: int = 0
    messages: int = 0  # message records read from the spool
    new_messages: int = 0  # of those, not already in the store
    events: dict[str, int] = field(default_factory=dict)
    bad_segments: int = 0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        ev = ", ".join(f"{n} {k}" for k, n in sorted(self.events.items()))
        return (
            f"drained {self.segments} segments: {self.messages} messages "
            f"({self.new_messages} new)" + (f", {ev}" if ev else "")
        )


def _naive_utc(value: Any) -> datetime | None:
    if not value:
        return None
    when = datetime.fromisoformat(str(value))
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when


def _clean(value: Any) -> Any:
    """Strings Arrow accepts: lone surrogates (bytes a client sent that are not UTF-8) → "?"."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def event_table(kind: str, records: Sequence[SpoolRecord]) -> pa.Table:
    """Pure: spool records of one kind as an Arrow table in the store's column order."""
    _, columns = TABLES[kind]
    arrays = []
    for name, typ in columns:
        values = [_clean(r.fields.get(name)) for r in records]
        if typ == _TS:
            values = [_naive_utc(v) for v in values]
        arrays.append(pa.array(values, typ))
    return pa.table(arrays, names=[c for c, _ in columns])


def raw_message(record: SpoolRecord, segment: str) -> RawMessage:
    """Pure: a spooled message as the pipeline's input, with the envelope as ground truth."""
    f = record.fields
    when = datetime.fromisoformat(f["received_at"]) if f.get("received_at") else None
    env = Envelope(
        peer_ip=f["peer_ip"],
        peer_port=int(f.get("peer_port") or 0),
        helo=f.get("helo"),
        mail_from=f.get("mail_from"),
        rcpt_to=tuple(f.get("rcpt_to") or ()),
        received_at=when,
        session_id=f.get("session_id"),
        session_fingerprint=f.get("session_fingerprint"),
    )
    return RawMessage(record.data, f"smtp-trap:{segment}", env)


def write_events(store: Store, records: Sequence[SpoolRecord]) -> dict[str, int]:
    """Insert non-message records, one transaction, ignoring ids already present."""
    by_kind: dict[str, list[SpoolRecord]] = {}
    for r in records:
        if r.kind in TABLES:
            by_kind.setdefault(r.kind, []).append(r)
    if not by_kind:
        return {}
    con = store.con
    con.begin()
    try:
        for kind, recs in by_kind.items():
            table, columns = TABLES[kind]
            names = ", ".join(c for c, _ in columns)
            con.register("_spool_rows", event_table(kind, recs))
            try:
                con.execute(
                    f"INSERT OR IGNORE INTO {table} ({names}) SELECT {names} FROM _spool_rows"
                )
            finally:
                con.unregister("_spool_rows")
        con.commit()
    except Exception:
        con.rollback()
        raise
    return {k: len(v) for k, v in by_kind.items()}


def ingest_raws(
    store: Store,
    raws: list[RawMessage],
    settings: dict[str, Any],
    note: NoteFn,
    *,
    resume: bool = False,
) -> int:
    """Store ``raws`` the way ``trapline ingest`` does: raw bytes first (content-addressed, so a
    replay is a no-op), then parse, write, and run ``post_ingest_stages`` on the new messages.

    Returns how many were new. In-process and batch-sized (the spool hands over at most a few
    thousand messages at a time), built on the store's and parser's public functions rather
    than the file-oriented ``trapline.pipeline.run.ingest``.
    """
    from trapline.store import raw as rawstore

    con = store.con
    backlog: list[RawMessage] = []
    if resume:  # a crash between archiving and parsing left raw rows without messages rows
        pending = rawstore.pending_ids(con)
        backlog = [
            RawMessage(r.data, r.source, r.envelope) for r in rawstore.iter_raw(con, pending)
        ]
        if backlog:
            note(f"resuming: {len(backlog)} archived trap messages were never parsed")
    unique = {raw.id: raw for raw in raws}
    known = rawstore.existing_ids(con, list(unique))
    fresh = [raw for mid, raw in unique.items() if mid not in known]
    rawstore.write_raw(con, [rawstore.RawRow(r.id, r.data, r.source, r.envelope) for r in fresh])
    if fresh or backlog:
        _parse_and_write(store, fresh + backlog, settings, note)
    return len(fresh)


def _parse_and_write(
    store: Store, raws: list[RawMessage], settings: dict[str, Any], note: NoteFn
) -> None:
    from trapline.ingest.parse import parse_many
    from trapline.ingest.received import TrustBoundary
    from trapline.model import Message, Quarantined
    from trapline.pipeline.pool import batch_for, fingerprint_at_ingest
    from trapline.store.writer import write_batch

    trust = TrustBoundary.from_specs(list(settings.get("trust") or []))
    records: list[Message | Quarantined] = []
    try:
        records = list(parse_many(raws, trust=trust))
    except Exception:  # a parser bug must not lose the batch: retry one by one, quarantine failures
        for raw in raws:
            try:
                records.extend(parse_many([raw], trust=trust))
            except Exception as exc:
                detail = f"{type(exc).__name__}: {exc}"[:500]
                records.append(
                    Quarantined(raw.id, len(raw.data), raw.source, "internal-error", detail)
                )
    batch = batch_for(records, fingerprint=fingerprint_at_ingest(settings))
    bad = {q.id for q in write_batch(store.con, batch)}
    run_stages(store, [i for i in batch.message_ids if i not in bad], settings, note)


_SWITCHED_OFF: set[str] = set()  # stages that said NotConfigured, noted once per process


def run_stages(
    store: Store, message_ids: list[str], settings: dict[str, Any], note: NoteFn
) -> None:
    """``post_ingest_stages`` over freshly stored messages; a failing stage is noted, not fatal
    (the messages are stored and the stage can be re-run over them later)."""
    if not message_ids:
        return
    for spec in settings.get("post_ingest_stages") or []:
        module, _, name = str(spec).partition(":")
        try:
            fn = getattr(importlib.import_module(module), name)
            fn(store, message_ids, settings)
        except NotConfigured as exc:
            if spec not in _SWITCHED_OFF:
                _SWITCHED_OFF.add(spec)
                note(f"{spec} switched off: {exc}")
        except Exception as exc:
            note(
                f"post-ingest stage {spec} failed ({type(exc).__name__}: {exc}); messages are stored"
            )


def drain(
    spool: Spool,
    store: Store,
    settings: dict[str, Any],
    *,
    max_records: int = 2000,
    on_note: NoteFn | None = None,
    resume: bool = False,
) -> DrainResult:
    """Move everything durable in the spool into the store; safe to call at any time.

    ``resume`` (use it once at start-up) also parses messages an earlier crash archived in
    ``raw`` but never parsed, so re-draining their segment does not leave them unparsed."""
    result = DrainResult()

    def note(text: str) -> None:
        result.notes.append(text)
        log.info("%s", text)
        if on_note is not None:
            on_note(text)

    if resume:
        ingest_raws(store, [], settings, note, resume=True)
    pending = spool.pending_segments()
    while pending:
        group: list[tuple[Path, list[SpoolRecord]]] = []
        n_records = 0
        while pending and n_records < max_records:
            path = pending.pop(0)
            try:
                recs = spool.read(path)
            except (SpoolError, ValueError, OSError) as exc:
                note(f"spool segment {path.name} unreadable ({exc}); moved to bad/")
                spool.quarantine(path)
                result.bad_segments += 1
                continue
            group.append((path, recs))
            n_records += len(recs)
        try:
            _apply(spool, store, settings, group, result, note)
        except Exception as exc:
            if len(group) == 1:  # a poison segment must not block everything behind it
                note(f"spool segment {group[0][0].name} cannot be stored ({exc}); moved to bad/")
                spool.quarantine(group[0][0])
                result.bad_segments += 1
                continue
            for one in group:  # find the culprit; the others go through (replays are no-ops)
                try:
                    _apply(spool, store, settings, [one], result, note)
                except Exception as inner:
                    note(f"spool segment {one[0].name} cannot be stored ({inner}); moved to bad/")
                    spool.quarantine(one[0])
                    result.bad_segments += 1
    return result


def _apply(
    spool: Spool,
    store: Store,
    settings: dict[str, Any],
    group: list[tuple[Path, list[SpoolRecord]]],
    result: DrainResult,
    note: NoteFn,
) -> None:
    """Store one group of segments (events, then messages), then move them to done/."""
    records = [r for _, recs in group for r in recs]
    messages = [
        raw_message(r, path.name) for path, recs in group for r in recs if r.kind == "message"
    ]
    for kind, n in write_events(store, records).items():
        result.events[kind] = result.events.get(kind, 0) + n
    if messages:
        result.new_messages += ingest_raws(store, messages, settings, note)
        result.messages += len(messages)
    for path, _ in group:
        spool.mark_done(path)
    result.segments += len(group)
