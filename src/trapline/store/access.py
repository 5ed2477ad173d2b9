"""Store access for commands and services: a read turn or a write turn, kept short.

Readers share the store (DuckDB read-only), a writer has it alone (read-write); everyone takes
turns fairly, across processes and threads (``trapline.store.turns``; the design and its
trade-offs are in ``docs/concurrency.md``)::

    with reading(data_dir) as store:      # one command, one request, one reload
        store.con.execute("SELECT ...").fetchall()
    with writing(data_dir) as store:      # one write window; keep it short
        store.con.execute("INSERT ...")

A wait longer than ``Policy.wait_s`` raises ``StoreBusy``; ``set_policy`` sets it (and how a
wait is announced) for the process. Inside ``trapline serve`` the same is ``ctx.read()`` and
``ctx.write()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from trapline.store.duckdb import Store, open_store
from trapline.store.turns import Policy, holder, policy, set_policy

__all__ = ["Policy", "holder", "policy", "reading", "set_policy", "writing"]


@contextlib.contextmanager
def reading(data_dir: Path, *, wait_s: float | None = None) -> Iterator[Store]:
    """A read-only store for one request or command; closed (and the turn given up) at exit."""
    with open_store(Path(data_dir), read_only=True, wait_s=wait_s) as store:
        yield store


@contextlib.contextmanager
def writing(data_dir: Path, *, wait_s: float | None = None) -> Iterator[Store]:
    """A read-write store for one write window (a drain round, a batch); keep it short."""
    with open_store(Path(data_dir), wait_s=wait_s) as store:
        yield store
