"""File ingest: read → archive raw → parse in a process pool → write → post-ingest stages.

The steps per batch are the ingest core's (``pipeline.core``, shared with the trap drain); this
module adds the sources and the process pool. The main process is the only writer (DuckDB
allows one). It reads sources, hashes and de-duplicates, commits the new raw bytes (raw first,
ARCHITECTURE rule 2) and only then hands them to the parse workers. Workers return finished Arrow tables (``pool.batch_for``), so
the main process does no per-message Python work after the hash. In-flight work is bounded, so
memory stays flat on any input size. A Ctrl-C or a kill loses no committed batch: the next run
finds archived messages that have neither a ``messages`` nor a ``quarantine`` row and parses them.
Post-ingest stages (``trapline.pipeline.stages``) run on their own thread and cursor after each commit.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from trapline.config import DEFAULTS
from trapline.errors import IngestError, StoreError, UsageError
from trapline.model import RawMessage, SourceProblem, message_id_of, utcnow
from trapline.pipeline.core import IngestCore, Item
from trapline.pipeline.pool import StopFlag, parse_task, start_pool, unstick_if_a_worker_died
from trapline.pipeline.stages import NoteFn
from trapline.serve.status import serve_running
from trapline.store import raw as rawstore
from trapline.store.duckdb import Store, is_transient, open_store
from trapline.store.labels import check_label
from trapline.store.writer import Batch, merge, write_problems

# How often a writer waiting on its parse workers looks whether someone waits for the store.
_POLL_S = 0.02
# How long after letting someone in the writer keeps its writes small.
_SHARED_S = 5.0
# ... and how small: messages per parse chunk, archive and write meanwhile.
_SHARED_STEP = 100

# (messages finished, bytes they stand for, total input bytes or None when unknown)
ProgressFn = Callable[[int, int, int | None], None]


@dataclass(slots=True, frozen=True)
class IngestSummary:
    """What one ingest run did. ``read`` = messages read from sources this run."""

    read: int
    new: int
    duplicates: int
    parsed: int
    quarantined: int
    problems: int
    resumed: int
    seconds: float
    bytes_read: int
    stage_notes: tuple[str, ...] = ()
    interrupted: bool = False

    def rate(self) -> float:
        """Messages read per second over the whole run (the summary line's and the bar's)."""
        return self.read / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        parts = [
            f"{self.read} read",
            f"{self.new} new",
            f"{self.duplicates} duplicates" + (" (already stored)" if self.duplicates else ""),
            f"{self.quarantined} quarantined",
            f"{self.problems} source problems",
        ]
        if self.resumed:
            parts.append(f"{self.resumed} resumed from an interrupted run")
        text = ", ".join(parts) + f" in {self.seconds:.1f}s ({rate:.0f} msgs/s)"
        return ("interrupted: " if self.interrupted else "") + text


# --- the main loop -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Counts:
    read: int = 0
    new: int = 0
    duplicates: int = 0
    parsed: int = 0
    quarantined: int = 0
    problems: int = 0
    resumed: int = 0


class _Run:
    """One ingest run's moving parts (pool, store, buffers); ``ingest`` drives it."""

    def __init__(
        self, store: Store, pool: ProcessPoolExecutor | None, core: IngestCore, chunk: int,
        batch_size: int, reader: Any, on_progress: ProgressFn | None,
        after_turn: Callable[[], None],
    ) -> None:  # fmt: skip
        self.store = store
        self.pool = pool
        self.core = core
        self.chunk = chunk
        self.batch_size = batch_size
        self.reader = reader
        self.on_progress = on_progress
        self.after_turn = after_turn
        self.last_tick = 0.0
        self.counts = _Counts()
        self.max_in_flight = 2 * (pool._max_workers if pool else 1)  # type: ignore[attr-defined]
        self.stop = StopFlag()
        self.in_flight: dict[Future[Batch], list[RawMessage]] = {}
        self.done: list[Batch] = []
        self.done_rows = 0
        self.shared_until = 0.0  # until then, write in small steps (someone waited recently)

    # parse side
    def submit(self, items: list[Item]) -> None:
        """Parse ``(id, raw)`` pairs in chunks; the ids spare the workers hashing again."""
        size = min(self.chunk, self.step())
        for start in range(0, len(items), size):
            part = items[start : start + size]
            if self.pool is None:
                self._collect(self.core.parse(part))
                continue
            while len(self.in_flight) >= self.max_in_flight:
                self.drain(block_until_one=True)
            raws = [raw for _, raw in part]
            self.in_flight[self.pool.submit(parse_task, raws, [mid for mid, _ in part])] = raws

    def drain(self, *, block_until_one: bool = False, everything: bool = False) -> None:
        blocking = block_until_one or everything
        idle_since = time.monotonic()
        while self.in_flight:
            timeout = _POLL_S if blocking else 0
            finished, _ = wait(list(self.in_flight), timeout=timeout, return_when=FIRST_COMPLETED)
            self.stop.check()
            if not finished:
                if not blocking:
                    return
                # Waiting on the workers needs no store: whoever waits for it goes first.
                self.take_turn()
                if time.monotonic() - idle_since >= 1.0:
                    idle_since = time.monotonic()
                    unstick_if_a_worker_died(self.pool)
                continue
            idle_since = time.monotonic()
            for fut in finished:
                part = self.in_flight.pop(fut)
                try:
                    batch = self.core.checked(fut.result())
                except BrokenProcessPool:
                    raise
                except Exception as exc:  # a bug in parse or writer code: retry one by one
                    batch = self.core.fallback(part, exc)
                self._collect(batch)
            # Between chunks nothing is mid-transaction: a good moment to let others in.
            self.take_turn()
            if not everything:
                return

    def step(self) -> int:
        """Messages per write: the batch size, or a small step for a while after someone waited
        for the store (the next waiter then waits for one small write, not a whole batch)."""
        return _SHARED_STEP if time.monotonic() < self.shared_until else self.batch_size

    def _collect(self, batch: Batch) -> None:
        self.done.append(batch)
        self.done_rows += batch.n_rows
        if self.done_rows >= self.step():
            self.flush_parsed()

    def flush_parsed(self) -> None:
        if not self.done:
            return
        batch = merge(self.done)
        self.done, self.done_rows = [], 0
        self.take_turn()  # a reader that came while the batch gathered goes before the write
        written = self.core.write(self.store, batch)
        self.counts.parsed += len(written.stored)
        self.counts.quarantined += written.quarantined
        self.tick()
        self.take_turn()

    def take_turn(self) -> None:
        """At a batch boundary: when others wait for the store, let them have it first."""
        if not self.store.others_waiting():
            return
        self.core.stages.finish()  # the stage thread's cursor must go before the connection
        self.store.take_turn()
        self.after_turn()
        self.shared_until = max(self.shared_until, time.monotonic() + _SHARED_S)

    def tick(self, *, force: bool = False) -> None:
        """Report progress: messages finished (stored, quarantined or duplicate) and the share
        of input bytes they stand for, at most ten times a second."""
        if self.on_progress is None:
            return
        now = time.perf_counter()
        if not force and now - self.last_tick < 0.1:
            return
        self.last_tick = now
        c = self.counts
        done = c.duplicates + c.parsed + c.quarantined
        share = min(1.0, done / c.read) if c.read else 0.0
        self.on_progress(done, int(self.reader.bytes_read * share), self.reader.bytes_total)

    # raw side
    def archive(self, buffer: list[Item]) -> list[Item]:
        """Dedupe ``buffer`` within itself and against the store, commit the new bytes (in
        ``step`` sized transactions, letting waiting readers in between)."""
        fresh: list[Item] = []
        start = 0
        while start < len(buffer):
            end = start + self.step()
            self.take_turn()
            got = self.core.archive(self.store, buffer[start:end])
            self.counts.new += len(got.fresh)
            self.counts.duplicates += got.duplicates
            fresh += got.fresh
            start = end
        return fresh

    def resume(self) -> None:
        """Parse what an interrupted run archived but never parsed."""
        pending = self.core.pending(self.store)
        self.counts.resumed += len(pending)
        for start in range(0, len(pending), self.batch_size):
            self.submit(pending[start : start + self.batch_size])


def _tune(store: Store, settings: dict[str, Any]) -> None:
    """Bound DuckDB's memory: its buffer pool otherwise caches every block written this run, so
    the writer's RSS would grow with the input instead of staying flat."""
    limit = settings.get("store_memory_limit", DEFAULTS["store_memory_limit"])
    if limit:
        store.con.execute("SET memory_limit = ?", [str(limit)])
    # The cores belong to the parse workers (and one DuckDB thread writes faster alone).
    store.con.execute("SET threads = 1")
    # Fewer checkpoints rewrite fewer half-filled row groups (memory_limit still bounds memory);
    # the cost is a larger WAL to replay after a crash.
    store.con.execute("SET checkpoint_threshold = '256MB'")


def ingest(
    paths: Sequence[str | Path],
    *,
    settings: dict[str, Any],
    trust: Sequence[str] = (),
    workers: int | None = None,
    batch_size: int | None = None,
    stdin: IO[bytes] | None = None,
    on_progress: ProgressFn | None = None,
    on_note: NoteFn | None = None,
    label: str = "spam",
) -> IngestSummary:
    """Ingest mail from ``paths`` into the store in ``settings['data_dir']``.

    ``label`` is stored with every new message (``spam``, ``ham`` or a name; see
    ``trapline.store.labels``).
    ``trust`` adds CIDRs / host names to ``settings['trust']`` for the origin walk. Raises
    ``SourceError`` before touching the store when a path does not exist. A KeyboardInterrupt is
    re-raised after the store is closed cleanly; every batch committed before it stays.
    """
    from trapline.ingest.sources import SourceReader

    note: NoteFn = on_note or (lambda _text: None)
    label = check_label(label)
    started = time.perf_counter()
    n_workers = int(workers if workers is not None else settings.get("workers") or 0)
    n_workers = n_workers if n_workers > 0 else (os.cpu_count() or 1)
    size = int(batch_size or settings.get("batch_size") or DEFAULTS["batch_size"])
    if size < 1:
        raise UsageError("--batch-size must be at least 1")
    # Several chunks per batch keep both workers busy while the main process archives the next.
    chunk = max(25, min(500, size // (2 * n_workers)))
    reader = SourceReader(
        [str(p) for p in paths], stdin=stdin, follow_symlinks=bool(settings.get("follow_symlinks"))
    )
    core = IngestCore(settings, note, trust=trust, label=label)
    stages = core.stages
    nice = int(settings.get("ingest_worker_nice", DEFAULTS["ingest_worker_nice"]))
    pool = start_pool(n_workers, core.trust, fingerprint=core.fingerprint, nice=nice)
    store: Store | None = None
    run: _Run | None = None
    interrupted = completed = False
    run_id = uuid.uuid4().hex
    try:
        store = open_store(Path(settings["data_dir"]))
        _tune(store, settings)
        background = settings.get("post_ingest_background", DEFAULTS["post_ingest_background"])
        store.con.execute(
            "INSERT INTO ingest_runs (run_id, started_at, sources) VALUES (?, ?, ?)",
            [run_id, utcnow(), [str(p) for p in paths]],
        )
        if background:
            stages.start_background(store)

        def after_turn() -> None:
            assert store is not None
            _tune(store, settings)
            if background:
                stages.start_background(store)

        run = _Run(store, pool, core, chunk, size, reader, on_progress, after_turn)
        if serve_running(Path(settings["data_dir"])):
            # Its drain and services take turns all the time: small steps from the first write.
            run.shared_until = math.inf
        run.stop.install()
        run.resume()
        _main_loop(run, reader, note)
        run.drain(everything=True)
        run.flush_parsed()
        stages.finish()
        run.tick(force=True)
        # The parse workers are done, so the checkpoint at close (DuckDB moving this run's
        # log into the file) may use every core, not the one we kept.
        store.con.execute("SET threads = ?", [os.cpu_count() or 1])
        completed = True
    except KeyboardInterrupt:
        interrupted = True
        raise
    except BrokenProcessPool as exc:
        raise IngestError(
            "a parse worker died (out of memory, or a crash in a parser library); every "
            "message read so far is archived: run the same ingest again to resume (with "
            "--workers 1 to find the message that causes it)"
        ) from exc
    except Exception as exc:
        if is_transient(exc):
            raise StoreError(
                f"the store could not be written ({type(exc).__name__}: {str(exc)[:200]}); "
                "free space, then run the same ingest again: it resumes where this one stopped"
            ) from exc
        if not rawstore.is_interrupt(exc):
            raise
        # Ctrl-C landed inside a DuckDB statement: the transaction is atomic either way.
        interrupted = True
        raise KeyboardInterrupt from exc
    finally:
        if run is not None:
            run.stop.restore()
        stages.finish(cancel=True)  # after an error or Ctrl-C: drop queued stage work
        if pool is not None:
            # Workers ignore SIGINT: queued chunks are cancelled and the few already handed out
            # finish (well under a second). Terminating workers instead can deadlock the
            # executor's queue feeder thread on Python 3.11 when a large task is mid-write.
            pool.shutdown(wait=True, cancel_futures=True)
        if store is not None:
            # Only a completed run is marked finished; after an error the connection may be in
            # a failed transaction and the original error is the one to report.
            if run is not None and completed:
                c = run.counts
                store.con.execute(
                    "UPDATE ingest_runs SET finished_at = ?, read = ?, new = ?, duplicates = ?, "
                    "quarantined = ?, problems = ? WHERE run_id = ?",
                    [
                        utcnow(),
                        c.read,
                        c.new,
                        c.duplicates,
                        c.quarantined,
                        c.problems,
                        run_id,
                    ],
                )
            store.close()
    c = run.counts
    return IngestSummary(
        read=c.read,
        new=c.new,
        duplicates=c.duplicates,
        parsed=c.parsed,
        quarantined=c.quarantined,
        problems=c.problems,
        resumed=c.resumed,
        seconds=time.perf_counter() - started,
        bytes_read=reader.bytes_read,
        stage_notes=stages.summaries(),
        interrupted=interrupted,
    )


def _main_loop(run: _Run, reader: Any, note: NoteFn) -> None:
    buffer: list[tuple[str, RawMessage]] = []
    problems: list[SourceProblem] = []
    # The first batch is one chunk per worker, so parsing starts while the rest is read.
    workers = run.max_in_flight // 2
    limit = min(run.batch_size, run.chunk * workers) if run.pool is not None else run.batch_size
    for item in reader:
        if isinstance(item, SourceProblem):
            problems.append(item)
            note(f"{item.source}: {item.reason}" + (f" ({item.detail})" if item.detail else ""))
            continue
        run.counts.read += 1
        buffer.append((message_id_of(item.data), item))
        if len(buffer) >= limit:
            run.stop.check()
            run.submit(run.archive(buffer))
            buffer, limit = [], run.batch_size
            run.drain()
            run.take_turn()
            run.tick()
    if buffer:
        run.submit(run.archive(buffer))
    # Source problems are counted in `seen` once per (source, reason), however often re-read.
    write_problems(run.store.con, problems)
    run.counts.problems += len(problems)
