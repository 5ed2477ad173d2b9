"""Open the DuckDB store and apply the schema.

The store is the only shared state (ARCHITECTURE rule 3). One process writes at a time: every
open takes its turn through ``trapline.store.access`` (readers together, one writer alone) before
DuckDB sees the file, so commands wait their turn instead of failing on DuckDB's own lock.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from types import TracebackType

import duckdb

from trapline.errors import StoreError, StoreLocked
from trapline.store.attached import register_filesystems
from trapline.store.damage import as_damage
from trapline.store.turns import Turn

DB_FILENAME = "trapline.duckdb"


def schema_statements() -> list[str]:
    """Every ``store/schema/*.sql`` file's text, in file-name order (each area owns one file)."""
    folder = resources.files("trapline.store").joinpath("schema")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [f.read_text(encoding="utf-8") for f in files]


# The columns added last to tables older stores already have (schema/00_core.sql's ALTERs).
_NEWEST = (("messages", "label"), ("raw", "label"), ("raw", "trust"), ("urls", "part"))
_NEWEST_COLUMNS = "SELECT m.label, r.label, r.trust, u.part FROM messages m, raw r, urls u LIMIT 0"


def _current(con: duckdb.DuckDBPyConnection, *, remote: bool = False) -> bool:
    """Whether the store has the newest core columns (older stores lack them until written)."""
    if remote:
        # Binding a view over an object store lists and reads it: ask the catalog instead.
        pairs = ", ".join(f"('{t}', '{c}')" for t, c in _NEWEST)
        row = con.execute(
            f"SELECT count(*) FROM duckdb_columns() WHERE (table_name, column_name) IN ({pairs})"
        ).fetchone()
        return bool(row and row[0] == len(_NEWEST))
    # Binding a query is cheaper than the catalog views; runs at every open.
    try:
        con.execute(_NEWEST_COLUMNS).fetchall()
    except duckdb.Error:
        return False
    return True


def _apply(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """One schema file. A table that `attach parquet` replaced by a view over a dataset cannot
    be altered; its statements are skipped (the view has the dataset's columns), the rest run."""
    try:
        con.execute(sql)
    except duckdb.CatalogException as exc:
        if "modify view" not in str(exc):
            raise
        for statement in con.extract_statements(sql):
            try:
                con.execute(statement)
            except duckdb.CatalogException as again:
                if "modify view" not in str(again):
                    raise


# Store files this process has applied the schema to, with their column count afterwards: a
# writer reopening for its next window skips the schema when the count still matches (a file
# replaced meanwhile does not match).
_SCHEMA_APPLIED: dict[str, int] = {}


def _columns(con: duckdb.DuckDBPyConnection) -> int:
    # duckdb_tables() is cheaper than information_schema's views, and this runs at every open
    row = con.execute("SELECT coalesce(sum(column_count), 0) FROM duckdb_tables()").fetchall()
    return int(row[0][0])


# What DuckDB and the OS say when the disk is full or failing: conditions that pass.
_TRANSIENT = ("no space left", "disk is full", "could not write", "failed to write", "i/o error")


def is_transient(exc: BaseException) -> bool:
    """A store error that passes by itself (disk full, I/O), not bad input: the data must stay
    where it is (spool, raw archive) and be retried, never quarantined for it."""
    if isinstance(exc, OSError | duckdb.IOException):
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _TRANSIENT)


class Store:
    """A DuckDB connection on ``<data_dir>/trapline.duckdb`` with the schema applied."""

    def __init__(
        self,
        data_dir: Path,
        *,
        read_only: bool = False,
        wait_s: float | None = None,
        reentrant: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_FILENAME
        self.read_only = read_only
        if read_only and not self.path.exists():
            raise StoreError(
                f"no store at {self.path}; run `trapline ingest PATH` first or pass --data-dir"
            )
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create {self.data_dir}: {exc.strerror}; check --data-dir"
            ) from exc
        self._turn: Turn | None = Turn(
            self.data_dir, exclusive=not read_only, wait_s=wait_s, reentrant=reentrant
        )
        self._turn.acquire()
        try:
            self.con = self._connect()
        except BaseException:
            self._turn.release()
            raise

    def _connect(self) -> duckdb.DuckDBPyConnection:
        try:
            con = duckdb.connect(str(self.path), read_only=self.read_only)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StoreLocked(
                    f"{self.path} is open in a process that does not take turns (an older "
                    "trapline, or the duckdb shell); wait for it to finish, then retry"
                ) from exc
            damaged = as_damage(exc, self.path)
            if damaged is not None:
                raise damaged from exc
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        remote = register_filesystems(con)  # before anything binds a view over a dataset
        if not self.read_only:
            key = str(self.path.resolve())
            if _SCHEMA_APPLIED.get(key) != _columns(con):  # once per file: windows are short
                for sql in schema_statements():
                    _apply(con, sql)
                _SCHEMA_APPLIED[key] = _columns(con)
        elif not _current(con, remote=remote):
            # A store last written by an older trapline: upgrade it once in a write turn (the
            # schema is idempotent), then come back to read as asked.
            con.close()
            assert self._turn is not None
            self._turn.release()
            Store(self.data_dir).close()
            self._turn.acquire()
            con = duckdb.connect(str(self.path), read_only=True)
            register_filesystems(con)
        return con

    def others_waiting(self) -> bool:
        """True when another reader or writer waits for the store (a long writer should call
        ``take_turn`` at its next batch boundary)."""
        turn = getattr(self, "_turn", None)
        return turn is not None and not turn.nested and turn.someone_waiting()

    def take_turn(self) -> None:
        """Close the store, let those waiting have their turn, queue for the next one, reopen.
        Settings made with ``SET`` are back to their defaults afterwards; cursors from ``view``
        must be closed first."""
        if self._turn is None or self._turn.nested:
            return
        self.con.close()
        self._turn.release()
        self._turn.acquire()
        self.con = self._connect()

    def view(self) -> Store:
        """A second handle on this open store with its own DuckDB cursor, for another thread.

        DuckDB connections are not safe to share between threads, but cursors of one database
        are: each sees every committed write and runs its own transactions (MVCC).
        """
        other = object.__new__(Store)
        other.data_dir, other.path, other.read_only = self.data_dir, self.path, self.read_only
        other.con, other._turn = self.con.cursor(), None  # the turn stays with this handle
        return other

    def close(self) -> None:
        try:
            self.con.close()
        finally:
            turn = getattr(self, "_turn", None)  # handles built field by field have none
            if turn is not None:
                turn.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_store(
    data_dir: Path,
    *,
    read_only: bool = False,
    wait_s: float | None = None,
    reentrant: bool = True,
) -> Store:
    """Open (creating if needed) the store in ``data_dir`` once it is this process's turn:
    together with other readers, or alone as a writer (``wait_s``: see ``turns.Policy``;
    ``reentrant=False`` for a store another thread may close)."""
    return Store(data_dir, read_only=read_only, wait_s=wait_s, reentrant=reentrant)
