"""One thin dialect layer: the local analyses' DuckDB SQL, run on Spark SQL unchanged.

``SparkSQL`` stands in for a DuckDB connection (``execute``, ``register``, ``unregister``;
results with ``fetchall``, ``fetchone``, ``fetchnumpy``), so ``analyze.networks`` and
``analyze.timeline`` run on a Spark dataset as they are. A statement that reads a dataset table
(or a temp table made from one) goes to Spark, any other (routing snapshots, AS names, feeds,
the catalog) to the local store. On its way to Spark the text gets the few spellings the two
engines disagree on (``REWRITES``, outside quoted literals), then ``?`` parameters as literals.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import numpy as np

from trapline.distributed.task import TABLES

# Tables of the dataset; every other table name a query uses is read from the local store.
BIG = frozenset(TABLES)
_NAMES = re.compile(r"\b(?:from|join|table(?:\s+if\s+exists)?)\s+([a-z_][a-z0-9_]*)", re.I)
_CREATE_TEMP = re.compile(r"^\s*CREATE\s+TEMP\s+TABLE\s+([a-z_][a-z0-9_]*)\s+AS\b", re.I)
_DROP = re.compile(r"^\s*DROP\s+TABLE\s+IF\s+EXISTS\s+([a-z_][a-z0-9_]*)\s*$", re.I)

# DuckDB spelling -> Spark SQL spelling, applied outside quoted literals.
REWRITES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bepoch_us\(", re.I), "unix_micros("),  # microseconds since 1970
    (re.compile(r"\s//\s"), " div "),  # integer division
    (re.compile(r"([\w.]+)::VARCHAR\b", re.I), r"CAST(\1 AS STRING)"),
    (_CREATE_TEMP, r"CACHE TABLE \1 AS"),  # a session-scoped table, computed once
)


def to_spark(sql: str) -> str:
    """``sql`` (DuckDB text, ``''`` escapes) with ``REWRITES`` applied outside literals."""
    parts = sql.split("'")
    for i in range(0, len(parts), 2):  # even pieces are outside quotes
        for pattern, repl in REWRITES:
            parts[i] = pattern.sub(repl, parts[i])
    return "'".join(parts)


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def bind(sql: str, params: Sequence[Any]) -> str:
    """``sql`` with each ``?`` outside quotes replaced by a Spark SQL literal."""
    out, values, quoted = [], iter(params), False
    for ch in sql:
        if ch == "'":
            quoted = not quoted
        out.append(_literal(next(values)) if ch == "?" and not quoted else ch)
    return "".join(out)


def plain_value(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A Spark row as DuckDB returns it (naive UTC timestamps)."""
    return tuple(v.replace(tzinfo=None) if isinstance(v, datetime) else v for v in row)


class Result:
    """The collected rows of one Spark query, read like a DuckDB result."""

    def __init__(self, rows: list[tuple[Any, ...]], columns: Sequence[str] = ()) -> None:
        self.rows, self.columns = rows, list(columns)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def fetchnumpy(self) -> dict[str, np.ndarray]:
        return {c: np.array([r[i] for r in self.rows]) for i, c in enumerate(self.columns)}


def frame(spark: Any, table: Any) -> Any:
    """A Spark DataFrame of a pyarrow table, with its types (also when it has no rows)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    rows = table.to_pandas() if table.num_rows else []
    return spark.createDataFrame(rows, from_arrow_schema(table.schema))


class SparkSQL:
    """A DuckDB-connection look-alike: dataset queries run on Spark, the rest locally."""

    def __init__(self, spark: Any, local: Any) -> None:
        self.spark, self.local = spark, local
        self.remote = set(BIG)  # names Spark holds: the dataset and temp tables made from it

    def _on_spark(self, sql: str) -> bool:
        return bool({n.lower() for n in _NAMES.findall(sql)} & self.remote)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if not self._on_spark(sql):
            return self.local.execute(sql, list(params))
        created, dropped = _CREATE_TEMP.match(sql), _DROP.match(sql)
        df = self.spark.sql(bind(to_spark(sql), params))
        rows = [plain_value(tuple(r)) for r in df.collect()]
        if created:
            self.remote.add(created.group(1).lower())
        if dropped and dropped.group(1).lower() not in BIG:
            self.remote.discard(dropped.group(1).lower())
        return Result(rows, df.columns)

    def register(self, name: str, table: Any) -> None:
        """A pyarrow table as a Spark temp view (the analyses join it to dataset tables)."""
        frame(self.spark, table).createOrReplaceTempView(name)
        self.remote.add(name.lower())

    def unregister(self, name: str) -> None:
        self.spark.catalog.dropTempView(name)
        self.remote.discard(name.lower())
