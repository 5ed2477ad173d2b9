"""How the API and dashboard reach the store: one cursor per worker thread, reads by default.

Inside ``trapline serve`` the web service shares the serve process's store (DuckDB allows one
writing process; cursors of one database are thread-safe and see every commit). Standalone
(``trapline web``) it opens the store read-only, so it runs beside other readers; writes (keys,
imports) then answer 503 with what to do instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from trapline.errors import ServiceError
from trapline.store.duckdb import Store, open_store


class ReadOnlyStore(ServiceError):
    """This web server opened the store read-only; run it inside `trapline serve --web ...`
    (which holds the store) or use the CLI (`trapline keys create`) while no server runs."""


class StoreAccess:
    """Thread-local cursors on one open store, plus a lock for the rare write."""

    def __init__(self, store: Store, *, writable: bool, owned: bool = False) -> None:
        self.store = store
        self.writable = writable
        self._owned = owned
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._guard = threading.Lock()
        self.write_lock = threading.Lock()
        self._columns: dict[tuple[str, str], bool] = {}
        self._version: tuple[Any, ...] = ()
        self._version_at = 0.0
        self._refreshing = threading.Lock()
        self._version_lock = threading.Lock()
        self._version_cursor: duckdb.DuckDBPyConnection | None = None

    @classmethod
    def open_read_only(cls, data_dir: Path) -> StoreAccess:
        return cls(open_store(data_dir, read_only=True), writable=False, owned=True)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (made on first use, reused after)."""
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self.store.con.cursor()
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
            view = self.store.view()
            try:
                yield view
            finally:
                view.close()
                self.forget_version()

    def has_column(self, table: str, column: str) -> bool:
        """Whether ``table.column`` exists (schemas of other areas grow while we run)."""
        key = (table, column)
        if not self._columns.get(key):
            row = (
                self.cursor()
                .execute(
                    "SELECT count(*) FROM information_schema.columns "
                    "WHERE table_name = ? AND column_name = ?",
                    [table, column],
                )
                .fetchone()
            )
            self._columns[key] = bool(row and row[0])
        return self._columns[key]

    def has_table(self, table: str) -> bool:
        row = (
            self.cursor()
            .execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table])
            .fetchone()
        )
        return bool(row and row[0])

    def spam_only(self, alias: str = "") -> str:
        """SQL condition keeping spam (analyses count spam only), or TRUE before labels exist."""
        if self.has_column("messages", "label"):
            return f"{alias}label = 'spam'"
        return "TRUE"

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
            self._version = self.version()
            self._version_at = time.monotonic()
        finally:
            if release:
                self._refreshing.release()

    def forget_version(self) -> None:
        """This process wrote: ask the store now, so its own writes show at once."""
        self._refresh_version()

    def close(self) -> None:
        with self._guard:
            for cur in self._cursors:
                cur.close()
            self._cursors.clear()
        if self._owned:
            self.store.close()
