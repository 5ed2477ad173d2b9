"""How the API and dashboard reach the store: one cursor per worker thread, reads by default.

Inside ``trapline serve`` the web service shares the serve process's store (DuckDB allows one
writing process; cursors of one database are thread-safe and see every commit). Standalone
(``trapline web``) it opens the store read-only, so it runs beside other readers; writes (keys,
imports) then answer 503 with what to do instead.
"""

from __future__ import annotations

import threading
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
        row = (
            self.cursor()
            .execute(
                "SELECT (SELECT count(*) FROM messages), (SELECT max(ingested_at) FROM messages), "
                "(SELECT max(updated_at) FROM campaigns), (SELECT count(*) FROM visits), "
                "(SELECT count(*) FROM feed_indicators), (SELECT count(*) FROM ip_routing)"
            )
            .fetchone()
        )
        return tuple(row or ())

    def close(self) -> None:
        with self._guard:
            for cur in self._cursors:
                cur.close()
            self._cursors.clear()
        if self._owned:
            self.store.close()
