"""A read-only SQL sandbox over the store, for SQL typed by a user (``trapline query``).

Read-only opening alone is not a sandbox: DuckDB can still ``ATTACH`` another file and write to
it, ``COPY ... TO`` any path (say, over ``site.secret``), read any file (``read_csv``, ``glob``)
and install extensions. ``sandbox`` closes all of that on the connection it is given, whatever
opened it, and locks the configuration so the SQL cannot reopen it; ``read_statement`` admits one
``SELECT`` (``DESCRIBE``, ``SHOW`` and ``WITH`` are selects too) or ``EXPLAIN`` and nothing else.

The settings are the database instance's: apply the sandbox only to a connection opened for it
(the CLI opens one per command), never to a connection a writer in the same process shares.
"""

from __future__ import annotations

import duckdb

from trapline.errors import QueryError

# DuckDB settings, in order: the lock last (after it, no SET can undo the others).
SANDBOX_SETTINGS = (
    ("enable_external_access", False),  # no file, URL, ATTACH, COPY, EXPORT or INSTALL
    ("autoinstall_known_extensions", False),
    ("autoload_known_extensions", False),
    ("allow_community_extensions", False),
    ("lock_configuration", True),
)
_ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def sandbox(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Close file, network and extension access on ``con`` and lock its configuration."""
    locked = con.execute("SELECT current_setting('lock_configuration')").fetchone()
    if locked and locked[0]:
        return con  # already a sandbox (its settings cannot change any more)
    for name, value in SANDBOX_SETTINGS:
        con.execute(f"SET {name} = {str(value).lower()}")
    return con


def read_statement(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.Statement:
    """The one read statement in ``sql``; ``QueryError`` for several, none, or a write."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QueryError(f"{first}; check the SQL against docs/schema.md") from exc
    if len(statements) != 1:
        raise QueryError(
            f"{len(statements)} statements given; `trapline query` runs exactly one SELECT"
        )
    (statement,) = statements
    if statement.type not in _ALLOWED:
        kind = statement.type.name
        raise QueryError(
            f"{kind} is not allowed: `trapline query` is read-only (one SELECT, DESCRIBE, "
            "SHOW or EXPLAIN; settings are in duckdb_settings())"
        )
    return statement
