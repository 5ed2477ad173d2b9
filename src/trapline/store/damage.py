"""Tell a damaged store file from every other DuckDB error, and say how to recover.

A store file cut short (a full disk, a copy interrupted) or with damaged blocks fails deep
inside whatever query touches the damaged part, with DuckDB's own words ("Could not read enough
bytes", "Corrupt database file: computed checksum ...", "not a valid DuckDB database file").
Those are not SQL mistakes and not transient: ``as_damage`` turns them into ``StoreDamaged``,
whose message names the file, what DuckDB saw, and the way back.
"""

from __future__ import annotations

import re
from pathlib import Path

from trapline.errors import StoreDamaged

_SIGNS = re.compile(
    r"Could not read enough bytes|Corrupt database file|not a valid DuckDB database file"
    r"|checksum .* does not match|Failed to read database header|file is truncated",
    re.I,
)


def is_damage(exc: BaseException) -> bool:
    """Whether ``exc`` (a DuckDB error) says the database file itself is damaged."""
    return _SIGNS.search(str(exc)) is not None


def recovery_text(path: Path | str) -> str:
    """What to do about a damaged store at ``path``."""
    return (
        f"move it aside (mv {path} {path}.damaged) and restore a backup if you have one; "
        "otherwise start a new store: `trapline ingest` your sources again (raw bytes are "
        "content-addressed, so nothing is stored twice), start `trapline serve` to drain trap "
        "mail still in spool/new (spool/done keeps drained segments for 7 days), then "
        "`trapline reparse` and `trapline analyze campaigns` rebuild every derived table. "
        "If the file still opens, `trapline reparse` rebuilds the parsed tables from the raw "
        "archive and `trapline query` can copy out what is readable"
    )


def as_damage(exc: BaseException, path: Path | str) -> StoreDamaged | None:
    """``StoreDamaged`` for a damage error, else None (the caller re-raises as it would)."""
    if not is_damage(exc):
        return None
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StoreDamaged(f"{path} is damaged ({first}); {recovery_text(path)}")
