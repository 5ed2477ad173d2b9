"""The parse process pool and the main process's Ctrl-C handling for ingest.

Workers are forked after the parser is imported (shared pages, no import per worker) and before
DuckDB starts threads in the main process. Each task parses a chunk of raw messages and returns
finished Arrow tables (``batch_for``: the message tables and, with ``fingerprint_at_ingest``,
their signatures): small to pickle, nothing left for the main process to do per message.
Workers ignore SIGINT; the main process decides when to stop.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.reduction import ForkingPickler
from typing import Any

from trapline.config import DEFAULTS
from trapline.model import Message, Quarantined, RawMessage
from trapline.store.writer import Batch, tables_for

_worker_trust: Any = None
_worker_fingerprint = False


def _reduce_raw(raw: RawMessage) -> tuple[Any, ...]:
    return (RawMessage, (raw.data, raw.source, raw.envelope, raw.defects))


# Raw messages cross the pipe pickled: their plain constructor unpickles cheaper than a frozen
# slots dataclass's generic per-field state (only multiprocessing's pickler uses this).
ForkingPickler.register(RawMessage, _reduce_raw)


# Gen-0 collections per this many new container objects (CPython's default is 700).
WORKER_GC_THRESHOLD = (10_000, 10, 10)


def _init_worker(trust: Any, fingerprint: bool, nice: int = 0) -> None:
    # The main process owns Ctrl-C: it stops the pool and closes the store cleanly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if nice > 0:
        with contextlib.suppress(OSError):
            os.nice(nice)
    # Parsing allocates millions of short-lived containers (headers, hops, URLs) and makes
    # almost no reference cycles, so the cyclic collector runs less often (cycles are still
    # collected) and never walks, nor copies on write, the objects inherited from the parent.
    gc.freeze()
    gc.set_threshold(*WORKER_GC_THRESHOLD)
    global _worker_trust, _worker_fingerprint
    _worker_trust = trust
    _worker_fingerprint = fingerprint


def parse_records(
    raws: Sequence[RawMessage], trust: Any, ids: Sequence[str] | None = None
) -> list[Message | Quarantined]:
    """Parse ``raws``; ``ids`` are their ids when the caller hashed them (saves hashing twice)."""
    from trapline.ingest.parse import parse_many

    return parse_many(list(raws), trust=trust, ids=ids)


def fingerprint_at_ingest(settings: dict[str, Any]) -> bool:
    """Whether parsing also fingerprints (``fingerprint_at_ingest``; see fingerprint/rows.py)."""
    return bool(settings.get("fingerprint_at_ingest", DEFAULTS["fingerprint_at_ingest"]))


def batch_for(records: Sequence[Message | Quarantined], *, fingerprint: bool) -> Batch:
    """The write batch for parsed ``records``: their tables and, when ``fingerprint``, their
    signatures (pure; fingerprinting here spreads it over the workers and reads nothing back)."""
    batch = tables_for(records)
    if fingerprint:
        from trapline.fingerprint.rows import signature_table

        messages = [r for r in records if isinstance(r, Message)]
        # A fingerprint bug must not cost the messages their rows: the batch goes without
        # signatures (the ingest says so) and `analyze campaigns` computes them later from
        # the stored rows.
        with contextlib.suppress(Exception):
            batch.tables["signatures"] = signature_table(messages)
    return batch


def parse_task(raws: list[RawMessage], ids: list[str] | None = None) -> Batch:
    """One task: parse a chunk and return its write batch (compact to pickle back).

    ``ids[i]`` must be ``message_id_of(raws[i].data)``: the main process has them from its
    dedupe step, and passing them spares the worker a SHA-256 of every message.
    """
    return batch_for(parse_records(raws, _worker_trust, ids), fingerprint=_worker_fingerprint)


def _warm() -> int:
    return os.getpid()


def start_pool(
    workers: int, trust: Any, *, fingerprint: bool = False, nice: int = 0
) -> ProcessPoolExecutor | None:
    """``workers`` parse processes (None for one: the caller parses inline), ``nice`` steps
    below this process's priority."""
    if workers <= 1:
        return None
    # Import the parser before forking so workers share its pages and skip the import cost.
    importlib.import_module("trapline.ingest.parse")
    method = "fork"
    if fingerprint:
        from trapline.fingerprint.minhash import rayon_started

        importlib.import_module("trapline.fingerprint.rows")
        if rayon_started():
            # Forked workers would inherit rensa's dead thread pool and hang: start them from
            # a fresh interpreter instead (slower to start, and rare outside tests).
            method = "forkserver"
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["trapline.pipeline.pool", "trapline.fingerprint.rows"])
    pool = ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(trust, fingerprint, nice)
    )
    # With fork, the executor starts every worker at the first submit: do it now, before DuckDB
    # starts its threads in this process (forking a threaded process is asking for deadlocks).
    pool.submit(_warm).result()
    return pool


def unstick_if_a_worker_died(pool: ProcessPoolExecutor | None) -> None:
    """Turn a silently dead worker into a BrokenProcessPool instead of a hang.

    CPython 3.11: a worker killed (OOM killer, SIGKILL) while sending its result leaves the
    executor's manager thread blocked forever reading the rest of that message, so no future
    ever completes. Stop the other workers and close this process's copy of the result pipe's
    write end: the read then fails and the executor takes its own broken-pool path (every
    pending future fails with BrokenProcessPool, workers are reaped, nothing hangs at exit).
    """
    procs = list((getattr(pool, "_processes", None) or {}).values())
    if not any(p.exitcode is not None for p in procs):
        return
    for proc in procs:
        if proc.exitcode is None:
            proc.terminate()
    writer = getattr(getattr(pool, "_result_queue", None), "_writer", None)
    if writer is not None:
        writer.close()


class StopFlag:
    """Ctrl-C as a request, honoured between transactions rather than inside one.

    Python raises KeyboardInterrupt wherever the main thread happens to be; inside a DuckDB
    statement (even a COMMIT) DuckDB turns it into its own error or, at times, swallows it. So
    during an ingest the first SIGINT only sets this flag, which the loop checks between
    batches and turns into a KeyboardInterrupt there. A second Ctrl-C stops at once.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGINT)
        if previous is signal.SIG_IGN:  # started as a background job: Ctrl-C is not ours
            return
        self._previous = previous
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, _signum: int, _frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
