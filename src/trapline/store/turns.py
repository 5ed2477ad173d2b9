"""Take turns on the store: many readers or one writer at a time, fairly, across processes.

DuckDB lets one process open a database file read-write, or any number of processes open it
read-only, never both at once; inside one process a read-only and a read-write connection of the
same file cannot coexist either. So every user of the store (commands, ``serve``'s drain, the
web API and DNSBL inside ``serve``) opens it only for a short window, behind a fair
reader/writer lock made of two ``flock`` files in the data directory:

* ``store.gate``: a turnstile everyone passes on the way in and holds while waiting;
* ``store.lock``: shared by readers, exclusive for a writer;
* ``store.readers``: held (shared) by every reader on its way in. A writer on its way in
  (before the gate or waiting at it) lets them go first, for its first ``READERS_FIRST_S``: a
  read then waits for the window in progress, not also for the writers queued behind it (a
  drain round, the next ingest batch), and a writer still gets its turn when reads never stop.

Past that head start, a writer waiting for the readers to leave holds the gate, so no new
reader slips in before it;
a reader waiting for a writer holds it too, so the next writer queues behind that reader. A long
writer (an ingest) calls ``Store.take_turn()`` between batches: when the gate shows somebody
waiting, it closes the store, lets them in, and queues for its next window. ``flock`` locks
belong to an open file and die with the process, so a killed holder never leaves a stale lock;
they also work between threads of one process, each of which opens the lock files itself.

``open_store`` takes its turn here; services use ``trapline.store.access`` (``reading``,
``writing``). How long to wait, and how to say so, is the process's ``Policy`` (``set_policy``;
the CLI sets it from ``--wait``). The design and its trade-offs are in ``docs/concurrency.md``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from trapline.config import DEFAULTS
from trapline.errors import StoreBusy, StoreLocked

log = logging.getLogger("trapline.store")

GATE_FILE = "store.gate"
LOCK_FILE = "store.lock"
HOLDER_FILE = "store.holder"  # pid and command of the current writer, for the waiting message
READERS_FILE = "store.readers"
READERS_FIRST_S = 1.0


@dataclass(slots=True, frozen=True)
class Policy:
    """How this process waits for the store: at most ``wait_s`` seconds (None = for ever),
    saying so through ``announce`` once a wait passes ``announce_after_s``."""

    wait_s: float | None = float(DEFAULTS["store_wait_s"])
    who: str = "trapline"
    announce: Callable[[str], None] = log.warning
    announce_after_s: float = 0.5


_policy = Policy()


def set_policy(
    *,
    wait_s: float | None = None,
    who: str | None = None,
    announce: Callable[[str], None] | None = None,
) -> Policy:
    """Set this process's waiting policy (the CLI calls it once); returns the new policy."""
    global _policy
    changes: dict[str, object] = {}
    if wait_s is not None:
        changes["wait_s"] = None if wait_s < 0 else wait_s
    if who is not None:
        changes["who"] = who
    if announce is not None:
        changes["announce"] = announce
    _policy = replace(_policy, **changes)  # type: ignore[arg-type]
    return _policy


def policy() -> Policy:
    return _policy


def holder(data_dir: Path) -> dict[str, object] | None:
    """The writer holding the store now (``pid``, ``who``, ``since``), if any is alive."""
    try:
        info = json.loads((Path(data_dir) / HOLDER_FILE).read_text(encoding="utf-8"))
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return dict(info)


# Turns this process holds, per (data dir, thread): [exclusive, how many handles share it].
# A thread that opens the store again while it has it (a helper called inside a ``with``)
# shares its turn: waiting at the gate for itself would never end.
_held: dict[tuple[str, int], list[int]] = {}
_held_lock = threading.Lock()


class Turn:
    """One holder's turn on the store of ``data_dir``: shared (reader) or exclusive (writer)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        exclusive: bool,
        wait_s: float | None = None,
        reentrant: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.exclusive = exclusive
        # False: never share this thread's turn (for a turn closed from another thread)
        self.reentrant = reentrant
        self.wait_s = _policy.wait_s if wait_s is None else (None if wait_s < 0 else wait_s)
        self._fd: int | None = None
        self._active = False
        self.nested = False  # shares a turn this thread already holds
        self._key = (str(self.data_dir.resolve()), threading.get_ident())

    @property
    def held(self) -> bool:
        return self._active

    def acquire(self) -> None:
        """Pass the gate, then take the data lock; raises ``StoreBusy`` after ``wait_s``."""
        if not self.reentrant:
            self._lock()
            self._active = True
            return
        with _held_lock:
            mine = _held.get(self._key)
            if mine is not None:
                if self.exclusive and not mine[0]:
                    raise StoreLocked(
                        f"the store in {self.data_dir} is open read-only in this thread; close "
                        "it before opening it for writing"
                    )
                mine[1] += 1
                self.nested = self._active = True
                return
        self._lock()
        with _held_lock:
            _held[self._key] = [int(self.exclusive), 1]
        self._active = True

    def _lock(self) -> None:
        deadline = None if self.wait_s is None else time.monotonic() + self.wait_s
        started = time.monotonic()
        try:
            gate = _open(self.data_dir / GATE_FILE)
        except PermissionError:  # a read-only data dir: nobody can write, so nothing to wait for
            if self.exclusive:
                raise
            return
        if self.exclusive:
            os.close(gate)
            readers_until = started + READERS_FIRST_S
            while True:  # give way to readers (for a while), then queue at the gate
                _let_readers_pass(self.data_dir, readers_until)
                gate = _open(self.data_dir / GATE_FILE)
                if self._pass(gate, started, deadline, readers_until):
                    return
        readers = -1
        try:
            with contextlib.suppress(PermissionError):  # files made by another user
                readers = _open(self.data_dir / READERS_FILE)
                fcntl.flock(readers, fcntl.LOCK_SH)  # never blocks: writers only probe it
            self._pass(gate, started, deadline)
        finally:
            if readers >= 0:
                os.close(readers)  # in (or given up): writers need not wait for this reader

    def _pass(
        self, gate: int, started: float, deadline: float | None, readers_until: float = 0.0
    ) -> bool:
        """Through the gate to the data lock. A writer that readers come up behind while it
        waits at the gate steps out again (until ``readers_until``): returns False."""
        give_way = None
        if self.exclusive:
            readers = self.data_dir / READERS_FILE

            def give_way() -> bool:
                return time.monotonic() < readers_until and lock_taken(readers, exclusive=True)

        try:
            if not self._wait(gate, fcntl.LOCK_EX, started, deadline, give_way):
                return False
            data = _open(self.data_dir / LOCK_FILE)
            try:
                mode = fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH
                if not self._wait(data, mode, started, deadline, give_way):
                    os.close(data)
                    return False
            except BaseException:
                os.close(data)
                raise
        finally:
            os.close(gate)  # closing drops the gate lock
        self._fd = data
        if self.exclusive:
            _write_holder(self.data_dir)
        return True

    def release(self) -> None:
        if not self._active:
            return
        self._active = False
        if not self.reentrant:
            self._unlock()
            return
        with _held_lock:
            mine = _held[self._key]
            mine[1] -= 1
            if mine[1] == 0:
                del _held[self._key]
        if self.nested:
            self.nested = False
            return
        self._unlock()

    def _unlock(self) -> None:
        if self._fd is None:  # a reader of a read-only data dir holds no lock
            return
        if self.exclusive:
            with contextlib.suppress(OSError):
                (self.data_dir / HOLDER_FILE).write_text("", encoding="utf-8")
        os.close(self._fd)  # closing drops the lock
        self._fd = None

    def someone_waiting(self) -> bool:
        """True when another reader or writer is at the gate (a long writer should yield)."""
        return lock_taken(self.data_dir / GATE_FILE, exclusive=True) or lock_taken(
            self.data_dir / READERS_FILE, exclusive=True
        )

    def _wait(
        self,
        fd: int,
        mode: int,
        started: float,
        deadline: float | None,
        give_way: Callable[[], bool] | None = None,
    ) -> bool:
        """Take ``mode`` on ``fd`` (True), or stop waiting when ``give_way`` says so (False)."""
        pause, announced = 0.002, False
        while True:
            if give_way is not None and give_way():
                return False
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                pass
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise StoreBusy(
                    f"the store in {self.data_dir} is busy ({_held_by(self.data_dir)}) and did "
                    f"not come free within {self.wait_s:g}s; retry later, or wait longer with "
                    "--wait SECONDS (-1 = as long as it takes)"
                )
            if not announced and now - started >= _policy.announce_after_s:
                announced = True
                _policy.announce(f"waiting for the store ({_held_by(self.data_dir)})...")
            time.sleep(pause)
            pause = min(pause * 2, 0.01)


def _let_readers_pass(data_dir: Path, until: float) -> None:
    """A writer on its way in: while readers are on theirs, let them pass (until ``until``)."""
    while time.monotonic() < until and lock_taken(data_dir / READERS_FILE, exclusive=True):
        time.sleep(0.002)


def lock_taken(path: Path, *, exclusive: bool = False) -> bool:
    """True when another open file holds a ``flock`` on ``path`` that conflicts with a shared
    (or, with ``exclusive``, any) lock; False when nobody does or the file is missing."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock this probe took
    return False


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


def _write_holder(data_dir: Path) -> None:
    info = {"pid": os.getpid(), "who": _policy.who, "since": time.time()}
    with contextlib.suppress(OSError):
        (data_dir / HOLDER_FILE).write_text(json.dumps(info), encoding="utf-8")


def _held_by(data_dir: Path) -> str:
    info = holder(data_dir)
    if info is None:
        return "in use by readers or another writer"
    return f"held by `{info['who']}`, pid {info['pid']}"
