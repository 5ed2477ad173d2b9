"""Let a local store read a Parquet dataset (Spark's output, or `export parquet`) in place.

Each table folder of the dataset replaces the store's (empty) table of the same name by a view
over its Parquet files, with the store's column names, order and types, so every reading
command (stats, networks, exports, the dashboard) works on it unchanged. Tables the dataset
lacks stay ordinary tables. The dataset is a local folder or a URI (``s3a://bucket/out``,
``gs://``, ``hdfs://``), read through :mod:`trapline.store.attached`. Commands that write into an
attached table (``analyze campaigns`` updates ``messages``) cannot: run those in Spark
(``trapline spark analyze``) or import instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from trapline.errors import UsageError
from trapline.export.tables import store_tables
from trapline.objectstores import ObjectStores, is_uri, locate, parse_uri
from trapline.store import attached
from trapline.store.attached import Location
from trapline.store.duckdb import Store

NOT_A_DATASET = (
    "give the --out folder of `trapline spark ingest` or `trapline export parquet`, "
    "which holds one folder per table (messages/, hops/, ...) of Parquet files"
)

# What a dataset never replaces: the routing this store maps and sizes networks with (the
# Spark job maps with the store's snapshots too), who may use this store's API (keys, sensors),
# and the domains its own trap accepts mail for.
KEEP_OWN = (
    "routing_snapshots",
    "routing_prefixes",
    "as_names",
    "api_keys",
    "sensors",
    "trap_domains",
)
CHECK_STORE = (
    "check the URI, the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile) "
    "and the s3_endpoint and s3_region settings"
)


@dataclass(slots=True, frozen=True)
class Attached:
    table: str
    path: str
    rows: int


@dataclass(slots=True, frozen=True)
class Attachment:
    """What ``attach_parquet`` did: the tables now read from the dataset, the dataset's
    tables this store kept its own of, and the routing snapshots the dataset was mapped with
    that this store lacks (network sizes and new lookups need them imported)."""

    tables: list[Attached]
    kept: list[str]
    missing_snapshots: list[str]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def locate_dataset(dataset: str | Path, stores: ObjectStores | None = None) -> Location:
    """Where ``dataset`` lives: a local folder (``file://`` URIs too), or an object store URI
    with the endpoint and region it is reached at (the region resolved now, once). Paths
    carry no trailing slash."""
    text = str(dataset)
    if is_uri(text):
        kind, *_, inner = parse_uri(text)
        if kind == "file":
            text = inner
        else:
            stores = stores or ObjectStores.from_settings({})
            filesystem, path = locate(text, stores)
            _must_be_a_folder(filesystem, path, text)
            region = getattr(filesystem, "region", "") or stores.region
            return Location(text.rstrip("/"), ObjectStores(stores.endpoint, region))
    root = Path(text).expanduser().resolve()
    if not root.is_dir():
        raise UsageError(f"{dataset} is not a folder; {NOT_A_DATASET}")
    return Location(str(root), ObjectStores("", ""))


def _must_be_a_folder(filesystem: Any, path: str, uri: str) -> None:
    from pyarrow.fs import FileType

    try:
        [info] = filesystem.get_file_info([path])
    except OSError as exc:
        raise UsageError(f"cannot reach {uri}: {_first_line(exc)}; {CHECK_STORE}") from exc
    if info.type == FileType.File:
        raise UsageError(f"{uri} is an object, not a folder; {NOT_A_DATASET}")
    if info.type != FileType.Directory:
        raise UsageError(f"{uri}: no such bucket or folder; {NOT_A_DATASET}")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


def _pattern(where: Location, table: str) -> str:
    return f"{where.path}/{table}/**/*.parquet"


def attach_parquet(
    store: Store, dataset: str | Path, stores: ObjectStores | None = None
) -> Attachment:
    """Replace the store's tables that ``dataset`` has by views over its Parquet files
    (all but ``KEEP_OWN``)."""
    where = locate_dataset(dataset, stores)
    con = store.con
    already = attached.locations(con)
    if where.scheme:
        _one_store_per_scheme(already, where)
        attached.make_readable(con, [where], replace=True)
    present = [t for t in store_tables(store) if _has_parquet(con, where, table=t)]
    found = [t for t in present if t not in KEEP_OWN]
    if not found:
        raise UsageError(f"{dataset} holds no table folders with Parquet files; {NOT_A_DATASET}")
    busy = []
    for t in found:
        if t in already:
            continue
        (n,) = con.execute(f"SELECT count(*) FROM {_quote(t)}").fetchone() or (0,)
        if n:
            busy.append(f"{t} ({n:,} rows)")
    if busy:
        raise UsageError(
            f"this store already holds {', '.join(busy)}; attach into a new --data-dir "
            "(import routing there first: trapline routing import FILE)"
        )
    attached.ensure_registry(con)
    out: list[Attached] = []
    con.execute("BEGIN TRANSACTION")
    try:
        for t in found:
            columns = con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = ? ORDER BY ordinal_position",
                [t],
            ).fetchall()
            select = ", ".join(f"CAST({_quote(c)} AS {typ}) AS {_quote(c)}" for c, typ in columns)
            glob = _literal(_pattern(where, t))
            source = f"read_parquet({glob}, hive_partitioning = true, union_by_name = true)"
            con.execute(f"DROP {'VIEW' if t in already else 'TABLE'} {_quote(t)}")
            con.execute(f"CREATE VIEW {_quote(t)} AS SELECT {select} FROM {source}")
            attached.record(con, t, where)
            (n,) = con.execute(f"SELECT count(*) FROM {_quote(t)}").fetchone() or (0,)
            out.append(Attached(t, f"{where.path}/{t}", int(n)))
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    kept = [t for t in present if t in KEEP_OWN]
    return Attachment(out, kept, _missing_snapshots(con) if "messages" in found else [])


def _missing_snapshots(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        "SELECT DISTINCT routing_snapshot FROM messages WHERE routing_snapshot IS NOT NULL "
        "AND routing_snapshot NOT IN (SELECT snapshot_id FROM routing_snapshots) ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def _has_parquet(con: duckdb.DuckDBPyConnection, where: Location, *, table: str) -> bool:
    try:
        row = con.execute(
            f"SELECT 1 FROM glob({_literal(_pattern(where, table))}) LIMIT 1"
        ).fetchone()
    except duckdb.Error as exc:
        raise UsageError(f"cannot list {where.path}: {_first_line(exc)}; {CHECK_STORE}") from exc
    return row is not None


def _one_store_per_scheme(known: dict[str, Location], where: Location) -> None:
    """A store's database reaches each URI scheme through one filesystem, so all its datasets
    of one scheme must be on one endpoint (re-attaching a dataset moves it as a whole)."""
    for table, other in known.items():
        moving = other.path == where.path
        if other.scheme == where.scheme and other.stores != where.stores and not moving:
            raise UsageError(
                f"{table} is attached from {other.path} at another {where.scheme}:// endpoint "
                f"({other.stores.endpoint or 'AWS'}); attach {where.path} into a new --data-dir"
            )
