"""Post-ingest stages: ``post_ingest_stages`` in settings, run after every stored batch.

Scrapy-style ordered components (STYLE lesson 3): each stage is ``"package.module:function"``,
called as ``fn(store, message_ids, settings)`` once the batch's rows are committed, and returns a
one-line summary. A stage without its inputs (no routing snapshot, no site secret) raises
``NotConfigured`` and is switched off for the rest of the run, said once.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from trapline.errors import NotConfigured
from trapline.store.duckdb import Store

NoteFn = Callable[[str], None]


@dataclass(slots=True)
class PostIngestStages:
    """``post_ingest_stages`` from settings, switched off one by one when they say so."""

    settings: dict[str, Any]
    note: NoteFn
    active: list[tuple[str, Callable[..., Any]]] = field(default_factory=list)
    last: dict[str, str] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    _lag: int = 2
    _thread: ThreadPoolExecutor | None = None
    _view: Store | None = None
    _pending: list[Future[None]] = field(default_factory=list)

    def load(self) -> None:
        for spec in self.settings.get("post_ingest_stages") or []:
            module, _, name = str(spec).partition(":")
            try:
                fn = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError, ValueError) as exc:
                # Skipped, not fatal: the messages are still stored, and the stage can be
                # re-run over them later. Said once, so nothing is silently missing.
                self.note(
                    f"post-ingest stage {spec!r} skipped: cannot load it ({exc}); write it as "
                    "'package.module:function' or remove it from post_ingest_stages"
                )
                continue
            self.active.append((str(spec), fn))

    def run(self, store: Store, message_ids: list[str]) -> None:
        if not message_ids:
            return
        for spec, fn in list(self.active):
            try:
                result = fn(store, message_ids, self.settings)
                # A stage that left a result half-read would block the next batch's writes.
                store.con.complete()
            except NotConfigured as exc:
                self.note(f"{spec} switched off: {exc}")
                self.active.remove((spec, fn))
                continue
            except Exception as exc:
                # The batch is committed and the stage can be re-run over it later, so one
                # stage's failure must not stop the ingest; say so, once, and switch it off.
                _rollback(store)
                self.note(
                    f"{spec} failed and was switched off for this run "
                    f"({type(exc).__name__}: {exc}); the messages are stored"
                )
                self.active.remove((spec, fn))
                continue
            self.calls[spec] = self.calls.get(spec, 0) + 1
            if result:
                self.last[spec] = str(result)

    # Background mode: stages of batch N run on their own thread and cursor while the main
    # thread stores batch N+1, so a slow stage no longer leaves the parse workers idle. At most
    # ``lag`` batches wait, which bounds memory and how far an interrupt can leave stages behind.

    def start_background(self, store: Store, *, lag: int = 2) -> None:
        if not self.active:
            return
        self._view = store.view()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="post-ingest")
        self._lag = lag

    def submit(self, store: Store, message_ids: list[str]) -> None:
        """Run the stages on a committed batch: now, or on the stage thread when started."""
        if self._thread is None or self._view is None:
            self.run(store, message_ids)
            return
        while len(self._pending) >= self._lag:
            self._pending.pop(0).result()
        self._pending.append(self._thread.submit(self.run, self._view, list(message_ids)))

    def finish(self, *, cancel: bool = False) -> None:
        """Wait for queued stage work (or drop it when ``cancel``), then release the thread."""
        if self._thread is None:
            return
        try:
            if not cancel:
                for fut in self._pending:
                    fut.result()
        finally:
            self._thread.shutdown(wait=True, cancel_futures=cancel)
            self._pending.clear()
            self._thread = None
            if self._view is not None:
                self._view.con.close()
                self._view = None

    def summaries(self) -> tuple[str, ...]:
        """Each stage's latest one-line summary (a stage reports per batch, not per run)."""
        out = []
        for spec, text in self.last.items():
            n = self.calls.get(spec, 1)
            out.append(f"{spec}: {text}" + (f" (last of {n} batches)" if n > 1 else ""))
        return tuple(out)


def _rollback(store: Store) -> None:
    """End a transaction a failed stage may have left open on the shared connection."""
    try:
        store.con.execute("ROLLBACK")
    except Exception:  # nothing was open: the normal case
        return
