"""Let a local store read a Parquet dataset (Spark's output, or `export parquet`) in place.

Each table folder of the dataset replaces the store's (empty) table of the same name by a view
over its Parquet files, with the store's column names, order and types, so every reading
command (stats, networks, exports, the dashboard) works on it unchanged. Tables the dataset
lacks stay ordinary tables. Commands that write into an attached table (``analyze campaigns``
updates ``messages``) cannot: run those in Spark (``trapline spark analyze``) or import instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from trapline.errors import UsageError
from trapline.export.tables import store_tables
from trapline.store.duckdb import Store

REGISTRY = "attached_parquet"


@dataclass(slots=True, frozen=True)
class Attached:
    table: str
    path: str
    rows: int


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def attached_tables(store: Store) -> dict[str, str]:
    """Table name -> dataset folder, for the tables this store reads from Parquet."""
    exists = store.con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [REGISTRY]
    ).fetchone()
    if not exists or not exists[0]:
        return {}
    rows = store.con.execute(f"SELECT table_name, path FROM {REGISTRY}").fetchall()
    return {t: p for t, p in rows}


def attach_parquet(store: Store, dataset: Path) -> list[Attached]:
    """Replace the store's tables that ``dataset`` has by views over its Parquet files."""
    root = dataset.resolve()
    if not root.is_dir():
        raise UsageError(f"{dataset} is not a folder; give the --out folder of `spark ingest`")
    already = attached_tables(store)
    tables = set(store_tables(store))
    found = sorted(
        d.name for d in root.iterdir() if d.is_dir() and d.name in tables and _has_parquet(d)
    )
    if not found:
        raise UsageError(
            f"{dataset} holds no table folders (messages/, hops/, ...) with Parquet files; "
            "give the --out folder of `trapline spark ingest` or `trapline export parquet`"
        )
    busy = []
    for t in found:
        if t in already:
            continue
        (n,) = store.con.execute(f"SELECT count(*) FROM {_quote(t)}").fetchone() or (0,)
        if n:
            busy.append(f"{t} ({n:,} rows)")
    if busy:
        raise UsageError(
            f"this store already holds {', '.join(busy)}; attach into a new --data-dir "
            "(import routing there first: trapline routing import FILE)"
        )
    store.con.execute(
        f"CREATE TABLE IF NOT EXISTS {REGISTRY} (table_name VARCHAR PRIMARY KEY, path VARCHAR, "
        "attached_at TIMESTAMP DEFAULT now())"
    )
    out: list[Attached] = []
    store.con.execute("BEGIN TRANSACTION")
    try:
        for t in found:
            columns = store.con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = ? ORDER BY ordinal_position",
                [t],
            ).fetchall()
            select = ", ".join(f"CAST({_quote(c)} AS {typ}) AS {_quote(c)}" for c, typ in columns)
            glob = _literal(str(root / t / "**" / "*.parquet"))
            source = f"read_parquet({glob}, hive_partitioning = true, union_by_name = true)"
            if t in already:
                store.con.execute(f"DROP VIEW {_quote(t)}")
            else:
                store.con.execute(f"DROP TABLE {_quote(t)}")
            store.con.execute(f"CREATE VIEW {_quote(t)} AS SELECT {select} FROM {source}")
            store.con.execute(
                f"INSERT OR REPLACE INTO {REGISTRY} (table_name, path) VALUES (?, ?)",
                [t, str(root)],
            )
            (n,) = store.con.execute(f"SELECT count(*) FROM {_quote(t)}").fetchone() or (0,)
            out.append(Attached(t, str(root / t), int(n)))
        store.con.execute("COMMIT")
    except Exception:
        store.con.execute("ROLLBACK")
        raise
    return out


def _has_parquet(folder: Path) -> bool:
    for _dirpath, _dirs, files in os.walk(folder):
        if any(f.endswith(".parquet") for f in files):
            return True
    return False
