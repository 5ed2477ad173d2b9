"""Whether a ``serve`` runs on a data dir, where it listens and what it has done.

One ``serve`` per data dir: it holds ``serve.lock`` (an exclusive ``flock``, gone with the
process, so a killed serve never leaves it stale) from before it touches the spool until it
exits, and rewrites its state (ports, counters) inside that file every drain round, in place over
space reserved at start, so it can still say what is wrong when the disk is full. ``trapline
status`` reads it without opening the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trapline.errors import ServiceError
from trapline.store.turns import lock_taken

LOCK_FILE = "serve.lock"
STATE_BYTES = 16384  # reserved for the state at start: rewriting it needs no new disk space


@dataclass(slots=True)
class ServeCounters:
    """What a serve did since it started (and the drain's current lag)."""

    accepted: int = 0  # trap messages made durable in the spool (each got its 250)
    drained: int = 0  # message records moved from the spool into the store
    new: int = 0  # of those, not already stored
    stages_run: int = 0  # post-ingest stage calls on drained batches
    drain_rounds: int = 0
    drain_lag_s: float = 0.0  # age of the oldest segment waiting in the spool (0 = none)
    drain_errors: int = 0
    last_error: str = ""  # the last failed round's error, until a round succeeds


@dataclass(slots=True)
class ServeState:
    pid: int
    started_at: float
    data_dir: str
    drain_pid: int | None = None  # the drain process (``serve.drainer``)
    services: list[dict[str, Any]] = field(default_factory=list)
    counters: ServeCounters = field(default_factory=ServeCounters)
    updated_at: float = 0.0


class ServeLease:
    """This process's claim to be the one ``serve`` of a data dir."""

    def __init__(self, data_dir: Path, fd: int) -> None:
        self.data_dir = data_dir
        self._fd = fd

    @classmethod
    def take(cls, data_dir: Path) -> ServeLease:
        """Claim ``data_dir``; raises ``ServiceError`` (touching nothing else) if a serve has it."""
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            other = read_state(data_dir)
            pid = f" (pid {other['pid']})" if other and other.get("pid") else ""
            raise ServiceError(
                f"a `trapline serve`{pid} already runs on {data_dir}; stop it first, or give this "
                "one its own --data-dir"
            ) from None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, b" " * STATE_BYTES, 0)
        return cls(data_dir, fd)

    def publish(self, state: ServeState) -> None:
        """Write the state over the reserved bytes of the lock file (JSON, space-padded)."""
        state.updated_at = time.time()
        blob = json.dumps(asdict(state)).encode()[: STATE_BYTES - 1]
        with contextlib.suppress(OSError):
            os.pwrite(self._fd, blob.ljust(STATE_BYTES, b" "), 0)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)


def read_state(data_dir: Path) -> dict[str, Any] | None:
    """The last state a serve wrote on ``data_dir`` (None when there is none)."""
    for _ in range(3):  # a read may meet a rewrite half done: read again
        try:
            data = json.loads((Path(data_dir) / LOCK_FILE).read_bytes().strip() or b"null")
        except OSError:
            return None
        except ValueError:
            time.sleep(0.01)
            continue
        return data if isinstance(data, dict) else None
    return None


def serve_running(data_dir: Path) -> bool:
    """True when a live process holds ``serve.lock`` on ``data_dir``."""
    return lock_taken(Path(data_dir) / LOCK_FILE)


def status(data_dir: Path) -> dict[str, Any]:
    """What ``trapline status`` shows: the serve (if running) and the store's current writer."""
    from trapline.store.turns import holder

    running = serve_running(data_dir)
    state = read_state(data_dir) if running else None
    return {
        "data_dir": str(data_dir),
        "serve": {"running": running, **(state or {})},
        "store_writer": holder(data_dir),
    }
