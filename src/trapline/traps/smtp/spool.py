"""The durable trap spool: every message is on disk before the sender hears ``250``.

RFC 5321 §4.5.5 / §6.1: once a server answers 250 to the end of DATA it owns the message. So
each message goes into a segment file that is written to ``tmp/``, fsync'd, renamed into
``new/`` and followed by an fsync of ``new/`` itself (the rename is only durable once the
directory entry is) — and only then is its future resolved and the 250 sent.

Group commit: a single committer thread takes *every* record queued while the previous fsync ran
and writes them as one segment, so 50 concurrent sessions share one pair of fsyncs instead of
paying 100. Each 250 still waits for the segment holding its own message.

Visits, SMTP sessions, relay attempts and limit events travel through the same spool (not
fsync-awaited by anyone, written with the next segment or after ``linger_s``), so the trap
processes never touch the store and the drain (``pipeline.drain``) is the store's only writer.

Segment format: records back to back, each ``TRAPSPOOL1 <kind> <json-bytes> <data-bytes>\\n``
followed by the JSON object, the raw data and ``\\n``.

A message received over SMTP is never held whole in memory: ``open_message`` gives an
``IncomingMessage`` that keeps a small message in memory (it joins the group commit) and moves
a larger one to a file in ``tmp/``: the record head (fields, our ``Received:`` line) first, with
a fixed-width data length, then the content as DATA arrives. When DATA ends the length is
written into the head and the committer fsyncs the file and renames it into ``new/`` as a
one-record segment: the bytes received are written once and never copied.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trapline.errors import TraplineError

log = logging.getLogger("trapline.spool")

MAGIC = b"TRAPSPOOL1"
KINDS = frozenset({"message", "visit", "session", "relay", "limit", "comment"})


class SpoolError(TraplineError):
    """The trap spool could not be written; check free space and permissions of the spool dir."""


@dataclass(slots=True, frozen=True)
class SpoolRecord:
    """One thing the traps observed. ``fields`` is JSON-safe; ``data`` holds message bytes."""

    kind: str
    fields: dict[str, Any]
    data: bytes = b""


@dataclass(slots=True)
class _Pending:
    record: SpoolRecord | None  # a record to write into the next segment, or ...
    future: Future[str] | None
    file: Path | None = None  # ... a finished one-record segment in tmp/ (IncomingMessage)


# A streamed message's head has a fixed-width data length, patched in once the data has ended.
_WIDE_HEAD = b"%s %s %d %020d\n"


def _json(fields: dict[str, Any]) -> bytes:
    # ASCII JSON: lone surrogates (undecodable bytes from a client) are escaped, never fatal.
    return json.dumps(fields, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def encode_record(record: SpoolRecord) -> bytes:
    body = _json(record.fields)
    head = b"%s %s %d %d\n" % (MAGIC, record.kind.encode(), len(body), len(record.data))
    return head + body + record.data + b"\n"


def decode_segment(blob: bytes) -> list[SpoolRecord]:
    """Records in a segment; raises ``SpoolError`` on a malformed file (never half a record)."""
    out: list[SpoolRecord] = []
    pos = 0
    while pos < len(blob):
        end = blob.find(b"\n", pos)
        parts = blob[pos:end].split(b" ") if end >= 0 else []
        if len(parts) != 4 or parts[0] != MAGIC or not parts[2].isdigit() or not parts[3].isdigit():
            raise SpoolError(f"malformed spool record header at byte {pos}")
        n_json, n_data = int(parts[2]), int(parts[3])
        start = end + 1
        if start + n_json + n_data + 1 > len(blob) or blob[start + n_json + n_data] != 0x0A:
            raise SpoolError(f"truncated spool record at byte {pos}")
        fields = json.loads(blob[start : start + n_json])
        data = blob[start + n_json : start + n_json + n_data]
        out.append(SpoolRecord(parts[1].decode(), fields, data))
        pos = start + n_json + n_data + 1
    return out


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Spool:
    """A spool directory with ``tmp/``, ``new/`` (durable, not yet drained) and ``done/``."""

    root: Path
    linger_s: float = 0.2  # longest a non-durable record (event, visit) waits for company
    on_commit: Callable[[], None] | None = None  # e.g. wake the drain worker
    _lock: threading.Condition = field(default_factory=threading.Condition, init=False)
    _pending: list[_Pending] = field(default_factory=list, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _closing: bool = field(default=False, init=False)
    _seq: int = field(default=0, init=False)  # segment names (committer thread)
    _parts: Iterator[int] = field(default_factory=itertools.count, init=False)  # tmp/ files
    commits: int = field(default=0, init=False)  # segments written (for the benchmark)
    accepted: int = field(default=0, init=False)  # message records made durable (each got 250)

    writer: bool = True  # False: a process that only drains; tmp/ belongs to the writer

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        for sub in ("tmp", "new", "done", "bad"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if not self.writer:
            return
        # Anything left in tmp/ was never renamed, so nobody got a 250 for it: discard.
        for leftover in (self.root / "tmp").iterdir():
            leftover.unlink(missing_ok=True)

    @classmethod
    def reader(cls, root: Path) -> Spool:
        """The drain's view of a spool another process writes: reads, marks done, quarantines."""
        return cls(root, writer=False)

    # --- writing ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="trap-spool", daemon=True)
            self._thread.start()

    def submit(self, record: SpoolRecord, *, durable: bool) -> Future[str] | None:
        """Queue ``record``; for ``durable`` ones the future resolves (segment name) once the
        record is on disk."""
        if record.kind not in KINDS:
            raise ValueError(f"unknown spool record kind {record.kind!r}")
        future: Future[str] | None = Future() if durable else None
        with self._lock:
            if self._closing:
                raise SpoolError("the spool is shut down; restart `trapline serve`")
            self._pending.append(_Pending(record, future))
            self._lock.notify()
        return future

    def open_message(self, record: SpoolRecord, in_memory: int) -> IncomingMessage:
        """A message being received (``record`` with what precedes the content as its data):
        kept in memory up to ``in_memory`` bytes, beyond that in a file in ``tmp/``."""
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._parts):06d}.part"
        return IncomingMessage(self, self.root / "tmp" / name, record, in_memory)

    def _submit_file(self, path: Path) -> Future[str]:
        future: Future[str] = Future()
        with self._lock:
            if self._closing:
                raise SpoolError("the spool is shut down; restart `trapline serve`")
            self._pending.append(_Pending(None, future, path))
            self._lock.notify()
        return future

    def write_now(self, records: list[SpoolRecord]) -> Path | None:
        """Synchronously write ``records`` as one durable segment (no committer thread)."""
        return self._write_segment(records) if records else None

    def close(self) -> None:
        """Write everything queued, then stop the committer."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        else:
            self._flush(self._take())

    def _take(self) -> list[_Pending]:
        batch, self._pending = self._pending, []
        return batch

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closing:
                    self._lock.wait()
                if not self._closing and not any(p.future for p in self._pending):
                    # Only events queued: let more gather, unless a message arrives meanwhile.
                    deadline = time.monotonic() + self.linger_s
                    while not self._closing and not any(p.future for p in self._pending):
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._lock.wait(left)
                batch = self._take()
                closing = self._closing
            self._flush(batch)
            if closing:
                with self._lock:
                    rest = self._take()
                self._flush(rest)
                return

    def _flush(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        try:
            path = self._commit(batch)
        except Exception as exc:  # never let the committer die: fail this batch (451), go on
            log.error("spool write failed: %s", exc)
            reason = exc.strerror if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
            err = SpoolError(f"spool write failed ({reason}); check space in {self.root}")
            for p in batch:
                if p.file is not None:  # not acknowledged, so not kept
                    p.file.unlink(missing_ok=True)
                if p.future is not None:
                    p.future.set_exception(err)
            return
        self.accepted += sum(1 for p in batch if p.record is None or p.record.kind == "message")
        for p in batch:
            if p.future is not None:
                p.future.set_result(p.file.name if p.file is not None else path.name)
        if self.on_commit is not None:
            self.on_commit()

    def _commit(self, batch: list[_Pending]) -> Path:
        """Make a batch durable: finished message files fsync'd and renamed into ``new/``, the
        records written as one segment, and one fsync of ``new/`` for all of them."""
        for p in batch:
            if p.file is not None:
                fd = os.open(p.file, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                p.file = p.file.rename(self.root / "new" / self._name())
        records = [p.record for p in batch if p.record is not None]
        final = self._write_segment(records, sync_dir=False) if records else self.root / "new"
        _fsync_dir(self.root / "new")
        self.commits += 1
        return final

    def _name(self) -> str:
        self._seq += 1
        return f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}.seg"

    def _write_segment(self, records: list[SpoolRecord], *, sync_dir: bool = True) -> Path:
        name = self._name()
        tmp = self.root / "tmp" / name
        final = self.root / "new" / name
        blob = b"".join(encode_record(r) for r in records)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)  # the bytes are on disk ...
        finally:
            os.close(fd)
        os.rename(tmp, final)
        if sync_dir:
            _fsync_dir(final.parent)  # ... and so is the name that makes them visible
            self.commits += 1
        return final

    # --- reading (the drain) ----------------------------------------------------------------

    def pending_segments(self) -> list[Path]:
        """Durable segments not yet drained, oldest first (names sort by creation time)."""
        return sorted((self.root / "new").glob("*.seg"))

    def read(self, path: Path) -> list[SpoolRecord]:
        return decode_segment(path.read_bytes())

    def mark_done(self, *paths: Path) -> None:
        """Move drained segments to ``done/``, durably (so a restart does not redo them) with
        one directory sync for them all, not one per segment."""
        for path in paths:
            os.rename(path, self.root / "done" / path.name)
        for folder in {path.parent for path in paths}:
            _fsync_dir(folder)

    def quarantine(self, path: Path) -> None:
        """Move a segment that cannot be decoded to ``bad/`` for a human to look at."""
        os.rename(path, self.root / "bad" / path.name)
        _fsync_dir(path.parent)

    def prune_done(self, keep_s: float = 7 * 86400) -> int:
        """Delete drained segments older than ``keep_s``; returns how many went."""
        cutoff = time.time() - keep_s
        gone = 0
        for path in (self.root / "done").glob("*.seg"):
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                gone += 1
        return gone


class IncomingMessage:
    """A message being received: in memory up to ``in_memory`` bytes, then in a file in ``tmp/``
    written as it arrives (see the module docstring). ``record`` is the message's record with
    what precedes the content as its ``data`` (our trace line); ``digest`` hashes all its data.

    ``write`` never raises: a write error (disk full) is kept and ``commit`` reports it as a
    ``SpoolError``, so the session reads DATA to its end and answers 451, never half-way."""

    def __init__(self, spool: Spool, path: Path, record: SpoolRecord, in_memory: int) -> None:
        self.spool, self.path, self.record, self.in_memory = spool, path, record, in_memory
        self.digest = hashlib.sha256(record.data)
        self.size = 0  # content bytes so far
        self.error: OSError | None = None
        body = _json(record.fields)
        # The data length is patched in at the end; the fixed width keeps the head's size.
        self._head = _WIDE_HEAD % (MAGIC, record.kind.encode(), len(body), 0) + body + record.data
        self._buffer = bytearray()  # the content while it is small
        self._fd: int | None = None
        self._queued = False  # the file went to the committer: no longer ours to drop

    @property
    def spilled(self) -> bool:
        return self._fd is not None or self._queued or self.error is not None

    def write(self, data: bytes) -> None:
        """Append message content."""
        self.digest.update(data)
        if not self.spilled and self.size + len(data) <= self.in_memory:
            self._buffer += data
        else:
            if not self.spilled:  # too big to keep: from now on the file holds it
                try:
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except OSError as exc:
                    self.error = exc
                self._write_at(self._head + self._buffer, 0)
                self._buffer = bytearray()
            self._write_at(data, len(self._head) + self.size)
        self.size += len(data)

    def commit(self) -> Future[str]:
        """Queue the message; the future resolves once it is durable in ``new/``. Raises
        ``SpoolError`` when it cannot be, and then leaves nothing behind."""
        record = self.record
        if not self.spilled:  # small: joins the next group-committed segment
            content, self._buffer = bytes(self._buffer), bytearray()
            full = SpoolRecord(record.kind, record.fields, record.data + content)
            future = self.spool.submit(full, durable=True)
            assert future is not None
            return future
        n_json, n_data = len(_json(record.fields)), len(record.data) + self.size
        self._write_at(_WIDE_HEAD % (MAGIC, record.kind.encode(), n_json, n_data), 0)
        self._write_at(b"\n", len(self._head) + self.size)
        try:
            if self.error is not None:
                reason = self.error.strerror
                raise SpoolError(f"spool write failed ({reason}); check space in {self.spool.root}")
            assert self._fd is not None
            os.close(self._fd)
            self._fd = None
            future = self.spool._submit_file(self.path)
            self._queued = True
            return future
        except SpoolError:
            self.discard()
            raise

    def discard(self) -> None:
        """Drop the message (refused or broken off); safe to call more than once."""
        self._buffer = bytearray()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not self._queued:
            self.path.unlink(missing_ok=True)

    def _write_at(self, data: bytes | bytearray, offset: int) -> None:
        if self._fd is None or self.error is not None:
            return
        try:
            view = memoryview(data)
            while view:
                n = os.pwrite(self._fd, view, offset)
                view, offset = view[n:], offset + n
        except OSError as exc:  # kept for commit; the file goes then
            self.error = exc
