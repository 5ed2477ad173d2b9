"""Datasets a store reads in place (``trapline attach parquet``): the registry, and how DuckDB
reaches the ones on object stores.

An attached table is a view over ``read_parquet('<root>/<table>/**/*.parquet')``, stored in the
DuckDB file. For a local folder DuckDB reads the files itself. For ``s3a://``, ``gs://`` or
``hdfs://`` it would need its ``httpfs`` extension, which it downloads on first use: not
possible offline, and not version-matched to every DuckDB. Instead every connection gets the
same pyarrow filesystems the Spark job writes with (:mod:`trapline.objectstores`), registered
through fsspec, so the views bind the same way on every open. The registry keeps where each
dataset lives (endpoint, region); credentials come from the AWS chain at read time, never the
store.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import duckdb

from trapline.errors import ObjectStoreError, StoreError
from trapline.objectstores import ObjectStores, is_uri, locate

REGISTRY = "attached_parquet"
_COLUMNS = "table_name VARCHAR PRIMARY KEY, path VARCHAR, attached_at TIMESTAMP DEFAULT now()"
_NEWER = ("endpoint VARCHAR", "region VARCHAR")  # the object store of a URI path


@dataclass(slots=True, frozen=True)
class Location:
    """Where an attached dataset lives: a local folder, or a URI and how to reach its store."""

    path: str
    stores: ObjectStores

    @property
    def scheme(self) -> str:
        return self.path.split("://", 1)[0].lower() if is_uri(self.path) else ""


def has_registry(con: duckdb.DuckDBPyConnection) -> bool:
    # duckdb_tables() rather than information_schema: this runs at every open of the store
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [REGISTRY]
    ).fetchone()
    return bool(row and row[0])


def locations(con: duckdb.DuckDBPyConnection) -> dict[str, Location]:
    """Table name -> where the store reads it from, for every attached table."""
    if not has_registry(con):
        return {}
    cursor = con.execute(f"SELECT * FROM {REGISTRY}")
    names = [d[0] for d in cursor.description or ()]
    out: dict[str, Location] = {}
    for row in cursor.fetchall():
        record = dict(zip(names, row, strict=True))
        stores = ObjectStores(
            endpoint=record.get("endpoint") or "", region=record.get("region") or ""
        )
        out[record["table_name"]] = Location(record["path"], stores)
    return out


def ensure_registry(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"CREATE TABLE IF NOT EXISTS {REGISTRY} ({_COLUMNS})")
    for column in _NEWER:
        con.execute(f"ALTER TABLE {REGISTRY} ADD COLUMN IF NOT EXISTS {column}")


def record(con: duckdb.DuckDBPyConnection, table: str, where: Location) -> None:
    con.execute(
        f"INSERT OR REPLACE INTO {REGISTRY} (table_name, path, endpoint, region) "
        "VALUES (?, ?, ?, ?)",
        [table, where.path, where.stores.endpoint, where.stores.region],
    )


def register_filesystems(con: duckdb.DuckDBPyConnection) -> bool:
    """Give this connection's database the filesystems its attached URIs need (once per
    database instance: DuckDB shares them with every connection and cursor of one file).
    True when the store reads a dataset from an object store."""
    remote = {w.scheme: w for w in locations(con).values() if w.scheme}
    if remote:
        make_readable(con, remote.values())
    return bool(remote)


def make_readable(
    con: duckdb.DuckDBPyConnection, where: Iterable[Location], *, replace: bool = False
) -> None:
    """Register, for each remote location in ``where``, its scheme's filesystem on ``con``
    (``replace``: even where one is registered, as when a dataset moved to another endpoint)."""
    registered = set(con.list_filesystems())
    for location in where:
        if location.scheme in registered:
            if not replace:
                continue
            con.unregister_filesystem(location.scheme)
        con.register_filesystem(_fsspec(location))
        registered.add(location.scheme)


def _fsspec(location: Location) -> Any:
    try:
        from fsspec.implementations.arrow import ArrowFSWrapper
    except ImportError as exc:
        raise StoreError(
            f"this store reads a dataset at {location.path}, which needs fsspec: "
            "pip install fsspec (or reinstall trapline)"
        ) from exc
    filesystem, _path = locate(location.path, location.stores)

    class Wrapped(_Listing, ArrowFSWrapper):
        protocol = (location.scheme,)

    Wrapped.__name__ = f"Trapline{location.scheme.capitalize()}FileSystem"
    return Wrapped(filesystem)


def _raise_unless_missing(exc: OSError) -> None:
    # fsspec's walk skips every listing error by default, so an unreachable store would look
    # like an empty dataset; only "no such folder" means nothing is there.
    if not isinstance(exc, FileNotFoundError):
        raise exc


class _Listing:
    """How DuckDB's globs list an object store: ``**`` in one recursive listing (a paged
    prefix listing on S3) instead of one request per folder (per day partition), and listing
    errors raised instead of read as "no files"."""

    fs: Any

    def find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        **kw: Any,
    ) -> Any:
        if maxdepth is not None:
            return super().find(path, maxdepth, withdirs, detail, **kw)  # type: ignore[misc]
        from pyarrow.fs import FileSelector, FileType

        root = self._strip_protocol(path).rstrip("/")  # type: ignore[attr-defined]
        listing = self.fs.get_file_info(FileSelector(root, recursive=True, allow_not_found=True))
        found = {
            info.path: self._make_entry(info)  # type: ignore[attr-defined]
            for info in listing
            if withdirs or info.type != FileType.Directory
        }
        if not found:
            [info] = self.fs.get_file_info([root])
            if info.type == FileType.File:
                found[root] = self._make_entry(info)  # type: ignore[attr-defined]
        names = sorted(found)
        return {n: found[n] for n in names} if detail else names

    def walk(self, path: str, maxdepth: int | None = None, topdown: bool = True, **kw: Any) -> Any:
        kw.setdefault("on_error", _raise_unless_missing)
        return super().walk(path, maxdepth, topdown, **kw)  # type: ignore[misc]


def as_unreachable(exc: BaseException) -> ObjectStoreError | None:
    """A query that failed because an attached dataset's object store could not be read (it
    arrives as a DuckDB error carrying pyarrow's ``OSError``), as one clear error; else None."""
    if not isinstance(exc, duckdb.Error):
        return None
    found = [line for line in str(exc).splitlines() if line.startswith("OSError: ")]
    if not found:
        return None
    detail = found[-1].removeprefix("OSError: ")[:400]
    return ObjectStoreError(
        f"an attached dataset could not be read: {detail}; check that its object store is "
        "reachable and the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile), "
        "`trapline attach list` shows where each table is read from"
    )
