"""The raw archive: every message's exact bytes, content-addressed and zstd-compressed.

Raw first (ARCHITECTURE rule 2): bytes are committed here before anything parses them, so a
parser crash or a Ctrl-C never loses a message, and any later version of the parser can be re-run
over the archive. The id is the SHA-256 of the uncompressed bytes, so storing the same bytes twice
is a no-op by construction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb
import pyarrow as pa
import zstandard

from trapline.errors import Ambiguous, NotFound, StoreError, UsageError
from trapline.model import Envelope, clean_text, utcnow

# A fast level: the archive is written on the ingest critical path and read rarely, so speed
# beats the last few percent of ratio.
ZSTD_LEVEL = 1
CODEC = "zstd"

_compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
_decompressor = zstandard.ZstdDecompressor()

RAW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("size", pa.int64()),
        ("codec", pa.string()),
        ("data", pa.binary()),
        ("source", pa.string()),
        ("envelope", pa.string()),
        ("ingested_at", pa.timestamp("us")),
        ("label", pa.string()),
        ("trust", pa.string()),
    ]
)


@dataclass(slots=True, frozen=True)
class RawRow:
    """One message ready for the archive: id, exact bytes and where they were first seen."""

    id: str
    data: bytes
    source: str
    envelope: Envelope | None = None
    label: str = "spam"  # what the source holds (store/labels.py); kept for re-parsing
    trust: str | None = None  # the trust set it was parsed with (pipeline/core.py trust_key)


def envelope_to_json(env: Envelope | None) -> str | None:
    """The SMTP envelope as JSON text: archived with the bytes because it cannot be re-derived."""
    if env is None:
        return None
    return json.dumps(
        {
            "peer_ip": env.peer_ip,
            "peer_port": env.peer_port,
            "helo": env.helo,
            "mail_from": env.mail_from,
            "rcpt_to": list(env.rcpt_to),
            "received_at": env.received_at.isoformat() if env.received_at else None,
            "session_id": env.session_id,
            "session_fingerprint": env.session_fingerprint,
        }
    )


def envelope_from_json(text: str | None) -> Envelope | None:
    if not text:
        return None
    d = json.loads(text)
    when = datetime.fromisoformat(d["received_at"]) if d.get("received_at") else None
    return Envelope(
        peer_ip=d["peer_ip"],
        peer_port=d.get("peer_port") or 0,
        helo=d.get("helo"),
        mail_from=d.get("mail_from"),
        rcpt_to=tuple(d.get("rcpt_to") or ()),
        received_at=when,
        session_id=d.get("session_id"),
        session_fingerprint=d.get("session_fingerprint"),
    )


def compress(data: bytes) -> bytes:
    return _compressor.compress(data)


def decompress(codec: str, blob: bytes) -> bytes:
    """The original bytes of an archived blob."""
    if codec == "none":
        return blob
    if codec == "zstd":
        return _decompressor.decompress(blob)
    raise StoreError(f"unknown raw codec {codec!r}; this store was written by a newer trapline")


def existing_ids(con: duckdb.DuckDBPyConnection, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` are already archived (one set-based query, not one per id)."""
    if not ids:
        return set()
    probe = pa.table({"id": pa.array(ids, pa.string())})
    con.register("_probe_ids", probe)
    try:
        rows = con.execute(
            "SELECT p.id FROM _probe_ids p SEMI JOIN raw r ON r.id = p.id"
        ).fetchall()
    finally:
        con.unregister("_probe_ids")
    return {row[0] for row in rows}


def other_trust(con: duckdb.DuckDBPyConnection, ids: Sequence[str], key: str) -> str | None:
    """The trust set some of ``ids`` were parsed with when it is not ``key`` (None: all match,
    or the set is unknown: rows archived before trust sets were recorded)."""
    probe = pa.table({"id": pa.array(list(ids), pa.string())})
    con.register("_trust_probe", probe)
    try:
        rows = con.execute(
            "SELECT r.trust FROM raw r SEMI JOIN _trust_probe p ON p.id = r.id "
            "WHERE r.trust IS NOT NULL AND r.trust <> ? LIMIT 1",
            [key],
        ).fetchall()
    finally:
        con.unregister("_trust_probe")
    return str(rows[0][0]) if rows else None


def raw_table(rows: Iterable[RawRow], now: datetime | None = None) -> pa.Table:
    """Compress ``rows`` into an Arrow table with the ``raw`` table's columns."""
    rows = list(rows)
    when = now or utcnow()
    return pa.table(
        {
            "id": pa.array([r.id for r in rows], pa.string()),
            "size": pa.array([len(r.data) for r in rows], pa.int64()),
            "codec": pa.array([CODEC] * len(rows), pa.string()),
            "data": pa.array([compress(r.data) for r in rows], pa.binary()),
            "source": pa.array([clean_text(r.source) for r in rows], pa.string()),
            "envelope": pa.array([envelope_to_json(r.envelope) for r in rows], pa.string()),
            "ingested_at": pa.array([when] * len(rows), pa.timestamp("us")),
            "label": pa.array([r.label for r in rows], pa.string()),
            "trust": pa.array([r.trust for r in rows], pa.string()),
        },
        schema=RAW_SCHEMA,
    )


def rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Abort the open transaction, if any: a statement interrupted by Ctrl-C (even a COMMIT)
    may already have ended it, and that must not hide the original error."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        return


def is_interrupt(exc: BaseException) -> bool:
    """DuckDB turns a Ctrl-C that lands inside a query into its own error: recognise it."""
    if isinstance(exc, KeyboardInterrupt | duckdb.InterruptException):
        return True
    return isinstance(exc, RuntimeError) and "interrupted" in str(exc).lower()


def write_raw(con: duckdb.DuckDBPyConnection, rows: Sequence[RawRow]) -> int:
    """Archive ``rows`` (already de-duplicated) in one transaction; returns how many were written."""
    if not rows:
        return 0
    return write_raw_table(con, raw_table(rows))


def write_raw_table(con: duckdb.DuckDBPyConnection, table: pa.Table) -> int:
    """Archive a ``raw_table`` built earlier (outside a write window) in one transaction."""
    if table.num_rows == 0:
        return 0
    con.register("_raw_batch", table)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            cols = ", ".join(RAW_SCHEMA.names)
            con.execute(f"INSERT INTO raw ({cols}) SELECT {cols} FROM _raw_batch")
            con.execute("COMMIT")
        except BaseException:
            rollback(con)
            raise
    finally:
        con.unregister("_raw_batch")
    return int(table.num_rows)


def resolve_id(con: duckdb.DuckDBPyConnection, id_or_prefix: str) -> str:
    """The full id for ``id_or_prefix`` (a unique prefix of at least 4 hex digits)."""
    prefix = id_or_prefix.strip().lower()
    if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix):
        raise UsageError(
            f"{id_or_prefix!r} is not a message id; give at least 4 hex digits of one "
            '(`trapline query "select id, subject from messages limit 5"` lists some)'
        )
    if len(prefix) == 64:
        found = con.execute("SELECT id FROM raw WHERE id = ?", [prefix]).fetchall()
    else:
        found = con.execute(
            "SELECT id FROM raw WHERE starts_with(id, ?) ORDER BY id LIMIT 3", [prefix]
        ).fetchall()
    if not found:
        raise NotFound(
            f"no message with id {prefix}…; check the id (`trapline stats` shows counts)"
        )
    if len(found) > 1:
        shown = ", ".join(row[0][: len(prefix) + 4] for row in found[:2])
        raise Ambiguous(f"{prefix} matches several messages ({shown}, …); give more characters")
    return str(found[0][0])


def read_raw(con: duckdb.DuckDBPyConnection, message_id: str) -> bytes:
    """The exact original bytes of a message (full id; see ``resolve_id`` for prefixes)."""
    row = con.execute("SELECT codec, data FROM raw WHERE id = ?", [message_id]).fetchone()
    if row is None:
        raise NotFound(f"no message with id {message_id}")
    return decompress(str(row[0]), bytes(row[1]))


def iter_raw(con: duckdb.DuckDBPyConnection, ids: Sequence[str]) -> Iterable[RawRow]:
    """The archived rows for ``ids`` (those that exist), fetched in one query."""
    if not ids:
        return
    probe = pa.table({"id": pa.array(list(ids), pa.string())})
    con.register("_want_ids", probe)
    try:
        result = con.execute(
            "SELECT r.id, r.codec, r.data, r.source, r.envelope, r.label "
            "FROM raw r SEMI JOIN _want_ids w ON w.id = r.id"
        ).fetchall()
    finally:
        con.unregister("_want_ids")
    for rid, codec, blob, source, env, label in result:
        data = decompress(str(codec), bytes(blob))
        yield RawRow(str(rid), data, str(source or ""), envelope_from_json(env), label or "spam")


def pending_ids(con: duckdb.DuckDBPyConnection, source_prefix: str = "") -> list[str]:
    """Archived ids with neither a ``messages`` nor a ``quarantine`` row: an interrupted run's
    leftovers, parsed by the next ingest (resume). ``source_prefix`` keeps those whose source
    starts with it (the trap drain resumes trap mail, not a running ingest's work)."""
    rows = con.execute(
        "SELECT r.id FROM raw r "
        "ANTI JOIN messages m ON m.id = r.id "
        "ANTI JOIN (SELECT id FROM quarantine WHERE id IS NOT NULL) q ON q.id = r.id "
        "WHERE starts_with(r.source, ?) ORDER BY r.id",
        [source_prefix],
    ).fetchall()
    return [str(row[0]) for row in rows]
