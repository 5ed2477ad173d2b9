"""How the API and dashboard reach the store, reads by default.

Inside ``trapline serve`` and standalone (``trapline web``) the web app takes turns on the store
like every other user (``trapline.store.access``): each request opens it read-only on first use
and gives its turn back when the response is sent (``RequestTurns``), and a write (keys) takes a
short write turn. So the web app never keeps a writer (the trap's drain, an ingest) waiting for
longer than a request. Work outside a request (cache warm-up) runs in ``session()``. Standalone,
writes answer 503 with what to do instead. ``StoreAccess(store, ...)`` instead shares one open
store between threads (cursors), for callers that hold the store themselves.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import duckdb

from trapline.errors import ServiceError
from trapline.store.duckdb import Store, open_store
from trapline.store.labels import SPAM, label_filter


class _Turns:
    """The stores one request (or session) opened; closed, turn given back, when it ends."""

    def __init__(self) -> None:
        self.stores: list[Store] = []
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            for store in self.stores:
                with contextlib.suppress(Exception):
                    store.close()
            self.stores.clear()


_TURNS: ContextVar[_Turns | None] = ContextVar("trapline_store_turns", default=None)


@contextmanager
def turn_scope() -> Iterator[None]:
    """Scope of one request or session: stores opened inside it are closed at its end."""
    turns = _Turns()
    token = _TURNS.set(turns)
    try:
        yield
    finally:
        _TURNS.reset(token)
        turns.close()


class RequestTurns:
    """ASGI middleware: every request runs in its own ``turn_scope``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        with turn_scope():
            await self.app(scope, receive, send)


class ReadOnlyStore(ServiceError):
    """This web server opened the store read-only; run it inside `trapline serve --web ...`
    (which holds the store) or use the CLI (`trapline keys create`) while no server runs."""


class StoreAccess:
    """Thread-local cursors on one open store, plus a lock for the rare write."""

    def __init__(
        self,
        store: Store | None,
        *,
        writable: bool,
        owned: bool = False,
        data_dir: Path | None = None,
    ) -> None:
        self._store = store
        self.data_dir = Path(data_dir) if data_dir is not None else store.data_dir  # type: ignore[union-attr]
        self.writable = writable
        self._owned = owned
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._guard = threading.Lock()
        self.write_lock = threading.Lock()
        self._version: tuple[Any, ...] = ()
        self._version_at = 0.0
        self._refreshing = threading.Lock()
        self._version_lock = threading.Lock()
        self._version_cursor: duckdb.DuckDBPyConnection | None = None

    @classmethod
    def taking_turns(cls, data_dir: Path, *, writable: bool) -> StoreAccess:
        """Access that opens the store per request (see the module docstring)."""
        return cls(None, writable=writable, data_dir=data_dir)

    @classmethod
    def open_read_only(cls, data_dir: Path) -> StoreAccess:
        return cls.taking_turns(data_dir, writable=False)

    @property
    def store(self) -> Store:
        """The shared store, or this request's (opened read-only on first use)."""
        return self._store if self._store is not None else self._request_store()

    def _request_store(self) -> Store:
        turns = _TURNS.get()
        if turns is None:
            raise RuntimeError("store access outside a request: wrap the work in session()")
        with turns.lock:
            if not turns.stores:
                # Not shared with this thread's other turns: the scope may end on another thread.
                turns.stores.append(Store(self.data_dir, read_only=True, reentrant=False))
            return turns.stores[0]

    @contextmanager
    def session(self) -> Iterator[None]:
        """A read turn for work outside a request (a background thread), given back at exit;
        inside a request or session it is that one's turn (a second would wait behind a
        waiting writer that waits for the first)."""
        if _TURNS.get() is not None:
            yield
            return
        with turn_scope():
            yield

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (made on first use, reused after), or this request's store."""
        if self._store is None:
            return self._request_store().con
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._store.con.cursor()
            self._local.cursor = cur
            with self._guard:
                self._cursors.append(cur)
        return cur

    def release_cursor(self) -> None:
        """Close this thread's cursor (a short-lived thread calls it before it ends)."""
        cur = getattr(self._local, "cursor", None)
        if cur is not None:
            self._local.cursor = None
            with self._guard:
                self._cursors.remove(cur)
            cur.close()

    @contextmanager
    def writer(self) -> Iterator[Store]:
        """A store handle for one short write; raises ``ReadOnlyStore`` when opened read-only."""
        if not self.writable:
            raise ReadOnlyStore()
        with self.write_lock:
            if self._store is None:
                # This request's read turn goes first: a write turn waits for every reader.
                turns = _TURNS.get()
                if turns is not None:
                    turns.close()
                with open_store(self.data_dir, reentrant=False) as store:
                    yield store
                return
            view = self._store.view()
            try:
                yield view
            finally:
                view.close()
                self.forget_version()

    def spam_only(self, alias: str = "") -> str:
        """SQL condition keeping spam (analyses count spam only)."""
        return label_filter(SPAM, f"{alias}label")

    def version(self) -> tuple[Any, ...]:
        """Cheap fingerprint of what is stored: changes whenever messages or analyses change."""
        with self._guard:  # one cursor for the refresher threads, not one per thread
            if self._version_cursor is None:
                self._version_cursor = self.store.con.cursor()
                self._cursors.append(self._version_cursor)
            cur = self._version_cursor
        with self._version_lock:
            return self._version_row(cur)

    def _version_row(self, cur: duckdb.DuckDBPyConnection) -> tuple[Any, ...]:
        row = cur.execute(
            "SELECT (SELECT count(*) FROM messages), (SELECT max(ingested_at) FROM messages), "
            "(SELECT max(updated_at) FROM campaigns), (SELECT count(*) FROM visits), "
            "(SELECT count(*) FROM feed_indicators), (SELECT count(*) FROM ip_routing)"
        ).fetchone()
        return tuple(row or ())

    def version_now(self, max_age_s: float = 2.0) -> tuple[Any, ...]:
        """``version()`` at most ``max_age_s`` old: the first call asks the store, later ones
        refresh it on a background thread so no request waits for the scan."""
        if not self._version:
            self._refresh_version()
        elif time.monotonic() - self._version_at > max_age_s and self._refreshing.acquire(False):
            threading.Thread(target=self._refresh_version, args=(True,), daemon=True).start()
        return self._version

    def _refresh_version(self, release: bool = False) -> None:
        try:
            with self.session():
                self._version = self.version()
            self._version_at = time.monotonic()
        finally:
            if release:
                self._refreshing.release()

    def forget_version(self) -> None:
        """This process wrote: ask the store now, so its own writes show at once."""
        self._refresh_version()

    def close(self) -> None:
        # A version refresh may still be scanning on its thread: let it finish first.
        with self._version_lock, self._guard:
            for cur in self._cursors:
                cur.close()
            self._cursors.clear()
        if self._owned and self._store is not None:
            self._store.close()
