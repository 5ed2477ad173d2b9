"""Drain the trap spool into the store, exactly once.

Order per batch of segments: (1) insert visits, sessions and events with ``INSERT OR IGNORE`` on
their unique ids, (2) ingest the messages through the normal pipeline (raw first, content-
addressed by SHA-256, so storing the same bytes again is a no-op), (3) move the segments to
``done/``. A crash between any two steps re-applies the batch on restart and changes nothing:
that is what makes "at least once from the spool" into "exactly once in the store". Messages
go through the ingest core file ingest uses (``pipeline.core``): one dedupe, archive, parse,
quarantine and stage runner.

This is the store's only writer while ``trapline serve`` runs (DuckDB allows one writer process).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from trapline.model import Envelope, RawMessage, clean_text
from trapline.pipeline.core import IngestCore, Prepared
from trapline.store.duckdb import Store, is_transient
from trapline.store.writer import subset
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
    """Strings Arrow accepts, as every stored string: ``clean_text`` (lists item by item)."""
    if isinstance(value, str):
        return clean_text(value)
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


TRAP_SOURCE = "smtp-trap:"  # the source of every message the drain stores


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
    return RawMessage(record.data, f"{TRAP_SOURCE}{segment}", env)


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


def store_messages(
    store: Store, core: IngestCore, raws: Sequence[RawMessage], prepared: Prepared | None = None
) -> int:
    """Store spooled messages through the ingest core (raw first, content-addressed, so a
    replay is a no-op); returns how many were new. ``prepared`` (a ``ReadyGroup``'s) spares the
    write window the parsing and compressing when it covers these messages."""
    items = [(raw.id, raw) for raw in raws]
    got = core.archive(store, items, prepared)
    # Archived earlier but never parsed (a write failed after the archive, disk full): now.
    todo = got.fresh + core.unparsed(store, got.known)
    if todo:
        ids = [mid for mid, _ in todo]
        if prepared is not None and prepared.covers(ids):
            core.write(store, subset(prepared.batch, ids))
        else:
            core.write(store, core.parse(todo))
    return len(got.fresh)


# Bytes of segments per drain group: a burst of big messages is stored a few at a time, so the
# drain's memory does not grow with how much mail the trap took at once.
GROUP_BYTES = 16 * 1024 * 1024


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # gone or unreadable: the read says so
        return 0


@dataclass(slots=True, frozen=True)
class ReadyGroup:
    """One drain group read and prepared outside a write window: the window stores exactly
    these segments (newer ones wait for the next round, so nothing is parsed inside it)."""

    segments: list[tuple[Path, list[SpoolRecord]]]
    unreadable: list[tuple[Path, str]]  # (segment, why): moved to bad/ by the drain
    prepared: Prepared | None  # None when the group holds no message


def prepare_next(spool: Spool, core: IngestCore, max_records: int) -> ReadyGroup | None:
    """Outside a write window: read the next group of segments (up to ``max_records`` records
    or ``GROUP_BYTES``) and parse and compress its messages. None when the spool is empty."""
    segments: list[tuple[Path, list[SpoolRecord]]] = []
    unreadable: list[tuple[Path, str]] = []
    items: list[tuple[str, RawMessage]] = []
    n_records = n_bytes = 0
    for path in spool.pending_segments():
        if n_records >= max_records or n_bytes >= GROUP_BYTES:
            break
        n_bytes += _size(path)
        try:
            recs = spool.read(path)
        except (SpoolError, ValueError, OSError) as exc:
            unreadable.append((path, str(exc)))
            continue
        segments.append((path, recs))
        n_records += len(recs)
        for rec in recs:
            if rec.kind == "message":
                raw = raw_message(rec, path.name)
                items.append((raw.id, raw))
    if not segments and not unreadable:
        return None
    return ReadyGroup(segments, unreadable, core.prepare(items) if items else None)


def resume(store: Store, core: IngestCore) -> None:
    """Parse what a crash archived in ``raw`` but never parsed (run once at start-up)."""
    # Trap mail only: other archived-but-unparsed rows may be a running ingest's work in hand.
    pending = core.pending(store, TRAP_SOURCE)
    if pending:
        core.write(store, core.parse(pending))


def drain(
    spool: Spool,
    store: Store,
    settings: dict[str, Any],
    *,
    core: IngestCore | None = None,
    max_records: int = 2000,
    on_note: NoteFn | None = None,
    should_yield: Callable[[], bool] | None = None,
    ready: ReadyGroup | None = None,
) -> DrainResult:
    """Move everything durable in the spool into the store; safe to call at any time.

    ``core`` is the writer's ingest core (``serve`` keeps one for its lifetime, so stages load
    once and stay switched off once they fail); without one, a core is made for this call.
    ``should_yield`` is asked between transactions of ``max_records``: when it says so (someone
    waits for the store), the round ends early and the rest stays in the spool for the next.
    With ``ready`` (``prepare_next``) the round stores that one group and nothing else."""
    result = DrainResult()

    def note(text: str) -> None:
        result.notes.append(text)
        log.info("%s", text)
        if on_note is not None:
            on_note(text)

    if core is None:
        core = IngestCore(settings, note)
    if ready is not None:
        # Work prepared outside the window: store that group and end, since anything more
        # would be parsed inside the window and keep readers waiting for it too.
        for path, why in ready.unreadable:
            note(f"spool segment {path.name} unreadable ({why}); moved to bad/")
            spool.quarantine(path)
            result.bad_segments += 1
        if ready.segments:
            _store_group(spool, store, core, ready.segments, result, note, ready.prepared)
        return result
    pending = spool.pending_segments()
    while pending:
        if result.segments and should_yield and should_yield():
            break
        group: list[tuple[Path, list[SpoolRecord]]] = []
        n_records = n_bytes = 0
        while pending and n_records < max_records and n_bytes < GROUP_BYTES:
            path = pending.pop(0)
            n_bytes += _size(path)
            try:
                recs = spool.read(path)
            except (SpoolError, ValueError, OSError) as exc:
                note(f"spool segment {path.name} unreadable ({exc}); moved to bad/")
                spool.quarantine(path)
                result.bad_segments += 1
                continue
            group.append((path, recs))
            n_records += len(recs)
        _store_group(spool, store, core, group, result, note)
    return result


def _store_group(
    spool: Spool,
    store: Store,
    core: IngestCore,
    group: list[tuple[Path, list[SpoolRecord]]],
    result: DrainResult,
    note: NoteFn,
    prepared: Prepared | None = None,
) -> None:
    """Store one group; when it fails, find the segment that cannot be stored and move it to
    ``bad/`` while the others go through (replays are no-ops). Disk full is raised: the spool
    keeps everything for a later round."""
    try:
        _apply(spool, store, core, group, result, prepared)
    except Exception as exc:
        if is_transient(exc):
            raise
        if len(group) == 1:  # a poison segment must not block everything behind it
            note(f"spool segment {group[0][0].name} cannot be stored ({exc}); moved to bad/")
            spool.quarantine(group[0][0])
            result.bad_segments += 1
            return
        for one in group:
            try:
                _apply(spool, store, core, [one], result, prepared)
            except Exception as inner:
                if is_transient(inner):
                    raise
                note(f"spool segment {one[0].name} cannot be stored ({inner}); moved to bad/")
                spool.quarantine(one[0])
                result.bad_segments += 1


def _apply(
    spool: Spool,
    store: Store,
    core: IngestCore,
    group: list[tuple[Path, list[SpoolRecord]]],
    result: DrainResult,
    prepared: Prepared | None = None,
) -> None:
    """Store one group of segments (events, then messages), then move them to done/."""
    records = [r for _, recs in group for r in recs]
    messages = [
        raw_message(r, path.name) for path, recs in group for r in recs if r.kind == "message"
    ]
    for kind, n in write_events(store, records).items():
        result.events[kind] = result.events.get(kind, 0) + n
    if messages:
        result.new_messages += store_messages(store, core, messages, prepared)
        result.messages += len(messages)
    spool.mark_done(*(path for path, _ in group))
    result.segments += len(group)
