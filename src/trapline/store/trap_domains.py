"""The trap domains a store has issued addresses on (``trap_domains`` table).

``serve`` records its domains when it starts; whoever decodes addresses later (``address
decode``, the harvest linkage) adds them to the configured ones, so a store keeps knowing its
own traps when the config file that named them is gone.
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb

from trapline.store.raw import utcnow


def normalise(domain: str) -> str:
    return str(domain).strip().lower().rstrip(".")


def record(con: duckdb.DuckDBPyConnection, domains: Iterable[str]) -> None:
    """Remember ``domains`` (already known ones keep their first date)."""
    now = utcnow()
    rows = [(d, now) for d in sorted({normalise(d) for d in domains if normalise(d)})]
    if rows:
        con.executemany(
            "INSERT OR IGNORE INTO trap_domains (domain, first_used) VALUES (?, ?)", rows
        )


def recorded(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every domain recorded in this store (none for a store older than the table)."""
    try:
        return [
            str(r[0]) for r in con.execute("SELECT domain FROM trap_domains ORDER BY 1").fetchall()
        ]
    except duckdb.CatalogException:
        return []


def known(configured: Iterable[str], con: duckdb.DuckDBPyConnection | None) -> list[str]:
    """The configured domains plus those this store recorded, normalised, configured first."""
    out = [normalise(d) for d in configured if normalise(d)]
    for domain in recorded(con) if con is not None else []:
        if domain not in out:
            out.append(domain)
    return out
