"""Store tables out as Parquet (every table, the store's own schema) or CSV (one table or view).

The Parquet layout is the one ``trapline attach parquet`` and the Spark job share: one folder
per table, ``DIR/<table>/*.parquet`` (folders may be hive-partitioned), plus ``DIR/_trapline.json``
naming the tables and their row counts. Column types are the store's (lists stay lists, BLOBs
stay binary, timestamps stay UTC microseconds), so a round trip loses nothing.
"""

from __future__ import annotations

import csv
import difflib
import json
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, TextIO

from trapline import __version__
from trapline.errors import UsageError
from trapline.store.attached import REGISTRY
from trapline.store.duckdb import Store

MANIFEST = "_trapline.json"
LAYOUT = "trapline-parquet/1"
# Views computed from the store that CSV can export beside the tables.
VIEWS = ("networks",)
FETCH_ROWS = 10_000


@dataclass(slots=True, frozen=True)
class TableFile:
    table: str
    rows: int
    path: Path


def store_tables(store: Store) -> list[str]:
    """The store's tables (views over an attached Parquet dataset included), by name."""
    rows = store.con.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'main' AND table_name <> ? ORDER BY table_name",
        [REGISTRY],
    ).fetchall()
    return [r[0] for r in rows]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_text(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def export_parquet(store: Store, out: Path, *, force: bool = False) -> list[TableFile]:
    """Every table into ``out/<table>/<table>.parquet``; ``force`` replaces an earlier export."""
    tables = store_tables(store)
    if out.exists() and any(out.iterdir()):
        ours = (out / MANIFEST).exists()
        if not (force and ours):
            hint = "pass --force to replace it" if ours else "choose an empty or new folder"
            raise UsageError(f"{out} is not empty; {hint}")
        for t in tables:
            shutil.rmtree(out / t, ignore_errors=True)
    written: list[TableFile] = []
    try:
        for t in tables:
            folder = out / t
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{t}.parquet"
            store.con.execute(
                f"COPY (SELECT * FROM {_quote(t)}) TO {_sql_text(path)} "
                "(FORMAT parquet, COMPRESSION zstd)"
            )
            rows = store.con.execute(f"SELECT count(*) FROM {_quote(t)}").fetchone()
            written.append(TableFile(t, int(rows[0]) if rows else 0, path))
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror}; choose another --out") from exc
    manifest = {
        "layout": LAYOUT,
        "written_by": f"trapline {__version__}",
        "tables": {f.table: {"rows": f.rows} for f in written},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return written


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=str, ensure_ascii=False)
    return value


def _table_rows(store: Store, table: str) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
    cur = store.con.cursor()
    cur.execute(f"SELECT * FROM {_quote(table)}")
    columns = [d[0] for d in cur.description or ()]

    def rows() -> Iterator[tuple[Any, ...]]:
        while batch := cur.fetchmany(FETCH_ROWS):
            yield from batch
        cur.close()

    return columns, rows()


def _view_rows(
    store: Store, view: str, settings: dict[str, Any]
) -> tuple[list[str], Iterable[tuple[Any, ...]]]:
    from trapline.analyze.networks import network_scores

    dicts = [s.as_dict() for s in network_scores(store, settings)]
    if not dicts:
        return [], []
    columns = list(dicts[0])
    return columns, [tuple(d[c] for c in columns) for d in dicts]


def export_csv(store: Store, table: str, out: TextIO, settings: dict[str, Any]) -> int:
    """One table (or view: ``networks``) as CSV with a header; lists as JSON, BLOBs as hex."""
    tables = store_tables(store)
    if table in VIEWS:
        columns, rows = _view_rows(store, table, settings)
    elif table in tables:
        columns, rows = _table_rows(store, table)
    else:
        close = difflib.get_close_matches(table, [*VIEWS, *tables], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"no table {table!r}; {hint}choose one of: {', '.join([*VIEWS, *tables])}")
    writer = csv.writer(out, lineterminator="\n")
    n = 0
    if columns:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
        n += 1
    return n
