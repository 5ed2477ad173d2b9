"""``serve``'s drain in a process of its own: the spool moves into the store in short write windows.

Why a process and not a thread: a write window (open, store one group, run the stages, close
with DuckDB's checkpoint) holds the store against every reader, and a thread spends it sharing
one interpreter lock with the SMTP and HTTP loops, so readers also waited for those loops. In
its own process the window has a core to itself.

The parent (``DrainProcess``) wakes the child when the spool commits, and the child
(``_child_main``) reports back over one queue: log records, notes, counters after every round,
and its totals when it stops. The child first finishes what a previous run left behind (records
the trap domains, parses what a crash archived, drains the spool) and says it is ready; ``serve``
opens its ports after that. It dies with its parent (``PR_SET_PDEATHSIG``): a killed ``serve``
leaves no drain behind, and the next start recovers from the spool as always.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import logging.handlers
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

from trapline.errors import ServiceError, TraplineError
from trapline.pipeline.core import IngestCore
from trapline.pipeline.drain import DrainResult, drain, prepare_next, resume
from trapline.serve.status import ServeCounters, ServeLease, ServeState
from trapline.store import trap_domains, turns
from trapline.store.access import writing
from trapline.store.duckdb import is_transient
from trapline.traps.smtp.spool import Spool

log = logging.getLogger("trapline.serve")

# Records per drain transaction while serving: a reader waits for at most one of them.
DRAIN_RECORDS = 200
_PR_SET_PDEATHSIG = 1


@dataclass(slots=True)
class _Totals:
    """What the child has done, sent to the parent after every round."""

    segments: int = 0
    messages: int = 0
    new_messages: int = 0
    stages_run: int = 0
    rounds: int = 0
    errors: int = 0
    last_error: str = ""

    def plus(self, other: _Totals) -> _Totals:
        """Both processes' counts added up (the last error is this one's)."""
        counts = {
            f.name: getattr(self, f.name) + getattr(other, f.name)
            for f in dataclasses.fields(self)
            if f.name != "last_error"
        }
        return dataclasses.replace(self, **counts)


def drain_lag(spool: Spool) -> float:
    """Seconds the oldest undrained segment has waited (segment names start with their time)."""
    pending = spool.pending_segments()
    if not pending:
        return 0.0
    try:
        born = int(pending[0].name.split("-", 1)[0]) / 1e9
    except ValueError:
        return 0.0
    return max(0.0, time.time() - born)


class DrainProcess:
    """The parent's handle on the drain child: start it, wake it, read what it reports, stop it."""

    def __init__(
        self,
        spool: Spool,
        settings: dict[str, Any],
        lease: ServeLease,
        state: ServeState,
        note: Callable[[str], None],
    ) -> None:
        self.spool, self.settings = spool, settings
        self.lease, self.state, self.note = lease, state, note
        self.total = DrainResult()
        ctx = multiprocessing.get_context("spawn")  # the parent has threads: never fork it
        # Plain shared memory and a pipe, not Events: setting an Event whose waiter died hangs.
        self._stop = ctx.RawValue(ctypes.c_bool, False)
        self._bell, bell = ctx.Pipe(duplex=False)
        os.set_blocking(bell.fileno(), False)
        self._bell_fd = bell.fileno()
        self._bell_keep = bell
        self._ctx = ctx
        self._queue, self._proc = self._make_child()
        self._base = _Totals()  # what drain processes before the current one did
        self._got = _Totals()  # the current one's last report
        self._listener: threading.Thread | None = None
        self._reported = ServeCounters()
        self._interval = float(settings.get("serve_report_interval_s") or 60.0)
        self._last_report = time.monotonic()

    def start(self) -> DrainResult:
        """Start the child and wait until it has recovered what a previous run left; returns
        what it recovered. Raises the child's error when it cannot open the store."""
        self._spawn()
        recovered = self._await_ready()
        self._listener = threading.Thread(target=self._listen, name="drain-reports", daemon=True)
        self._listener.start()
        return recovered

    def _make_child(
        self,
    ) -> tuple[multiprocessing.Queue[tuple[str, Any]], multiprocessing.process.BaseProcess]:
        # A fresh queue per child: one killed while writing may leave the old one locked.
        out: multiprocessing.Queue[tuple[str, Any]] = self._ctx.Queue()
        proc = self._ctx.Process(
            target=_child_main,
            args=(str(self.spool.root), self.settings, self._bell, self._stop, out, _turn_policy()),
            name="trapline-drain",
            daemon=True,
        )
        return out, proc

    def _spawn(self) -> None:
        if self._proc.pid is not None:  # started before: a replacement needs its own
            self._queue, self._proc = self._make_child()
        self._proc.start()
        self.state.drain_pid = self._proc.pid

    def _await_ready(self) -> DrainResult:
        while True:
            kind, payload = self._next(block=True)
            if self._handle(kind, payload):
                continue
            if kind == "ready":
                return DrainResult(**payload)
            if kind == "failed":
                self._proc.join(10)
                raise payload if isinstance(payload, TraplineError) else ServiceError(payload)
            if kind == "gone":
                raise ServiceError(
                    f"the drain process exited at start (code {self._proc.exitcode}); see the "
                    "log above, fix the cause and start serve again"
                )

    def wake(self) -> None:
        """Ring the child's bell (never blocks: a full pipe means it has rings to read)."""
        with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
            os.write(self._bell_fd, b"w")

    def stop(self) -> None:
        """Ask the child to drain everything left and exit; wait for it and its last report."""
        self._stop.value = True
        self.wake()
        if self._listener is not None:
            self._listener.join()
        self._proc.join(30)
        if self._proc.is_alive():  # the listener saw it go; this is a last safety net
            self._proc.kill()
            self._proc.join()
        self._bell_keep.close()

    def _next(self, *, block: bool) -> tuple[str, Any]:
        """The child's next report, ("gone", None) once it has exited, ("idle", None) when
        there is nothing yet."""
        while True:
            try:
                return self._queue.get(timeout=1.0 if block else 0.2)
            except queue.Empty:
                if not self._proc.is_alive():
                    try:  # a report may have landed between the timeout and the exit
                        return self._queue.get(timeout=0.2)
                    except queue.Empty:
                        return "gone", None
                if not block:
                    return "idle", None

    def _handle(self, kind: str, payload: Any) -> bool:
        """Log records, notes and counters from the child; False for anything else."""
        if kind == "log":
            logging.getLogger(payload.name).handle(payload)
        elif kind == "note":
            self.note(payload)
        elif kind == "totals":
            self._counters(_Totals(**payload))
        else:
            return False
        return True

    def _listen(self) -> None:
        restarts = 0
        while True:
            kind, payload = self._next(block=False)
            if not self._handle(kind, payload) and kind == "gone":
                if self._stop.value:
                    return
                restarts += 1
                self._replace(restarts)
                continue
            if time.monotonic() - self._last_report >= self._interval:
                self._last_report = time.monotonic()
                self.report()

    def _replace(self, restarts: int) -> None:
        """A drain process died while serving (killed, out of memory): start another after a
        pause (2, 4, ... 60 s), counting on from what the dead one reported."""
        delay = min(60.0, 2.0 ** min(restarts, 6))
        log.error(
            "the drain process exited (code %s); the spool keeps every accepted message; "
            "starting a new one in %.0fs",
            self._proc.exitcode, delay,
        )  # fmt: skip
        self._base, self._got = self._base.plus(self._got), _Totals()
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not self._stop.value:
            time.sleep(0.1)
        if self._stop.value:
            return
        try:
            self._spawn()
            self._await_ready()
        except Exception as exc:  # the next "gone" tries again, later
            log.error("the new drain process could not start: %s", exc)

    def _counters(self, got: _Totals) -> None:
        self._got = got
        got = got.plus(self._base)
        c = self.state.counters
        c.accepted = self.spool.accepted
        c.drained, c.new, c.stages_run = got.messages, got.new_messages, got.stages_run
        c.drain_rounds, c.drain_errors, c.last_error = got.rounds, got.errors, got.last_error
        c.drain_lag_s = drain_lag(self.spool)
        self.total.segments, self.total.messages = got.segments, got.messages
        self.total.new_messages = got.new_messages
        self.lease.publish(self.state)

    def report(self) -> None:
        """One line per interval: what arrived, what reached the store, how far behind it is."""
        now, was = self.state.counters, self._reported
        now.accepted = self.spool.accepted
        self.note(
            f"serve: {now.accepted - was.accepted} accepted, {now.drained - was.drained} drained "
            f"({now.new - was.new} new), {now.stages_run - was.stages_run} stage runs, "
            f"drain lag {now.drain_lag_s:.1f}s"
            + (
                f", {now.drain_errors - was.drain_errors} drain errors"
                if now.drain_errors > was.drain_errors
                else ""
            )
        )
        self._reported = dataclasses.replace(now)


# --- the child ----------------------------------------------------------------------------------


def _turn_policy() -> tuple[str, float | None]:
    """How the parent waits for the store, for the child to wait (and name itself) alike."""
    mine = turns.policy()
    return f"{mine.who} (drain)", mine.wait_s


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies (a SIGKILLed serve)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _child_main(
    spool_root: str,
    settings: dict[str, Any],
    bell: Connection,
    stop: Synchronized[bool],
    out: multiprocessing.Queue[tuple[str, Any]],
    policy: tuple[str, float | None],
) -> None:
    _die_with_parent()
    who, wait_s = policy
    turns.set_policy(who=who, wait_s=-1 if wait_s is None else wait_s)
    for sig in (signal.SIGINT, signal.SIGTERM):  # a signal to the whole group: the parent
        signal.signal(sig, signal.SIG_IGN)  # stops us once its services have stopped
    parent = os.getppid()
    os.set_blocking(bell.fileno(), False)
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(_Tagged(out))]  # type: ignore[arg-type]
    root.setLevel(logging.INFO)
    data_dir = Path(str(settings["data_dir"]))
    spool = Spool.reader(Path(spool_root))
    try:
        worker = _Child(spool, settings, data_dir, out)
        recovered = worker.recover()
    except TraplineError as exc:
        out.put(("failed", exc))
        return
    except Exception as exc:
        log.exception("the drain could not start")
        out.put(("failed", f"the drain could not start: {type(exc).__name__}: {exc}"))
        return
    worker.send()
    out.put(("ready", dataclasses.asdict(recovered)))
    worker.run(bell, lambda: bool(stop.value) or os.getppid() != parent)
    worker.send()


class _Tagged:
    """A queue adapter for ``QueueHandler``: log records travel as ("log", record)."""

    def __init__(self, out: multiprocessing.Queue[tuple[str, Any]]) -> None:
        self.out = out

    def put_nowait(self, record: logging.LogRecord) -> None:
        self.out.put(("log", record))


class _Child:
    """The drain loop: one group per write window, prepared (parsed, compressed) outside it."""

    def __init__(
        self,
        spool: Spool,
        settings: dict[str, Any],
        data_dir: Path,
        out: multiprocessing.Queue[tuple[str, Any]],
    ) -> None:
        self.spool, self.settings, self.data_dir, self.out = spool, settings, data_dir, out
        # One ingest core for the drain's life: stages load once, and one that fails stays off.
        self.core = IngestCore(settings, self.note)
        self.totals = _Totals()
        self._retry_at = 0.0
        self._failures = 0  # failed rounds in a row (back off: 2, 4, ... 60 s)

    def note(self, text: str) -> None:
        self.out.put(("note", text))

    def send(self) -> None:
        """The counters so far, to the parent (for its status, report lines and totals)."""
        self.totals.stages_run = sum(self.core.stages.calls.values())
        self.out.put(("totals", dataclasses.asdict(self.totals)))

    def recover(self) -> DrainResult:
        """The first write window: record the trap domains, finish what a crash left behind."""
        with writing(self.data_dir) as store:
            trap_domains.record(store.con, self.settings["trap_domains"])
            resume(store, self.core)
            # What is left once someone waits for the store, the loop takes on.
            got = drain(
                self.spool, store, self.settings, core=self.core, on_note=self.note,
                max_records=DRAIN_RECORDS, should_yield=store.others_waiting,
            )  # fmt: skip
        self._add(got)
        if got.segments:
            self.note(f"recovered from the spool: {got.line()}")
        return got

    def run(self, bell: Connection, stopping: Callable[[], bool]) -> None:
        last_prune = time.monotonic()
        while not stopping():
            if bell.poll(1.0):  # rung (the spool committed), or a second passed
                with contextlib.suppress(BlockingIOError):
                    os.read(bell.fileno(), 65536)
            self.round()
            if time.monotonic() - last_prune > 3600:
                last_prune = time.monotonic()
                with contextlib.suppress(OSError):
                    self.spool.prune_done()
            if len(self.spool.pending_segments()) < DRAIN_RECORDS and not stopping():
                time.sleep(0.1)  # let a burst gather into fewer, larger transactions
        while self.spool.pending_segments():  # a round per window: drain them all before exit
            errors = self.totals.errors
            self.round(now=True)
            if self.totals.errors > errors:
                break  # failing (disk full): the spool keeps the rest for the next start

    def round(self, *, now: bool = False) -> None:
        waiting = time.monotonic() < self._retry_at and not now
        if self.spool.pending_segments() and not waiting:
            try:
                # Parsing and compressing happen before the write turn, not inside it.
                ready = prepare_next(self.spool, self.core, DRAIN_RECORDS)
                with writing(self.data_dir) as store:
                    got = drain(
                        self.spool, store, self.settings, core=self.core,
                        max_records=DRAIN_RECORDS, should_yield=store.others_waiting,
                        ready=ready,
                    )  # fmt: skip
            except Exception as exc:  # the data stays in the spool; a later round retries
                self._failed(exc)
            else:
                if self._failures:
                    log.warning("drain works again after %d failed rounds", self._failures)
                self._failures, self._retry_at, self.totals.last_error = 0, 0.0, ""
                self._add(got)
                self.totals.rounds += 1
        self.send()

    def _failed(self, exc: Exception) -> None:
        self.totals.errors += 1
        self._failures += 1
        delay = min(60.0, 2.0 ** min(self._failures, 6))
        self._retry_at = time.monotonic() + delay
        self.totals.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if is_transient(exc):  # disk full or failing: the operator must see it
            log.warning(
                "drain failed (%s); the spool keeps every accepted message, retrying in %.0fs: "
                "free space in %s",
                self.totals.last_error, delay, self.data_dir,
            )  # fmt: skip
        else:
            log.exception("drain failed; the spool keeps the data, retrying in %.0fs", delay)

    def _add(self, got: DrainResult) -> None:
        self.totals.segments += got.segments
        self.totals.messages += got.messages
        self.totals.new_messages += got.new_messages
