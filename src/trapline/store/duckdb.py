"""Open the DuckDB store and apply the schema.

The store is the only shared state (ARCHITECTURE rule 3). One process writes at a time; DuckDB
enforces that with a file lock, which we turn into a ``StoreLocked`` error that says what to do.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from types import TracebackType

import duckdb

from trapline.errors import StoreError, StoreLocked
from trapline.store.damage import as_damage

DB_FILENAME = "trapline.duckdb"


def schema_statements() -> list[str]:
    """Every ``store/schema/*.sql`` file's text, in file-name order (each area owns one file)."""
    folder = resources.files("trapline.store").joinpath("schema")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [f.read_text(encoding="utf-8") for f in files]


def _current(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the store has the newest core column (older stores lack it until written)."""
    # fetchall: a half-read result would block the caller's next statement on this connection
    found = con.execute(
        "SELECT count(*) FROM information_schema.columns "
        "WHERE table_name = 'messages' AND column_name = 'label'"
    ).fetchall()
    return bool(found[0][0])


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


class Store:
    """A DuckDB connection on ``<data_dir>/trapline.duckdb`` with the schema applied."""

    def __init__(self, data_dir: Path, *, read_only: bool = False) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_FILENAME
        if read_only and not self.path.exists():
            raise StoreError(
                f"no store at {self.path}; run `trapline ingest PATH` first or pass --data-dir"
            )
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StoreLocked(
                    f"{self.path} is open in another trapline process (for example `trapline "
                    "serve`); stop it or wait for it to finish, then retry"
                ) from exc
            damaged = as_damage(exc, self.path)
            if damaged is not None:
                raise damaged from exc
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        except OSError as exc:
            raise StoreError(
                f"cannot create {self.data_dir}: {exc.strerror}; check --data-dir"
            ) from exc
        if not read_only:
            for sql in schema_statements():
                _apply(self.con, sql)
        elif not _current(self.con):
            # A store last written by an older trapline: upgrade it once (the schema is
            # idempotent), then read as asked.
            self.con.close()
            Store(self.data_dir).close()
            self.con = duckdb.connect(str(self.path), read_only=True)

    def view(self) -> Store:
        """A second handle on this open store with its own DuckDB cursor, for another thread.

        DuckDB connections are not safe to share between threads, but cursors of one database
        are: each sees every committed write and runs its own transactions (MVCC).
        """
        other = object.__new__(Store)
        other.data_dir, other.path, other.con = self.data_dir, self.path, self.con.cursor()
        return other

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_store(data_dir: Path, *, read_only: bool = False) -> Store:
    """Open (creating if needed) the store in ``data_dir``."""
    return Store(data_dir, read_only=read_only)
