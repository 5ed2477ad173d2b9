"""``trapline reparse``: rebuild parsed rows and every derived column from the raw archive.

The archive keeps every message byte for byte (raw first), so changing one's mind about trust,
or upgrading the parser, costs a re-parse, not a re-collection. A re-parse removes the selected
messages' parsed rows and derived rows in one transaction and marks them with the current trust
set; the ingest run then finds them archived but unparsed and parses them exactly as it resumes
an interrupted run: same pool, same stages, same speed, labels kept from the archive.
Campaigns are derived from fingerprint order, so they are rebuilt when the store had any.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from trapline.errors import NotFound, UsageError
from trapline.pipeline.core import trust_key
from trapline.pipeline.run import IngestSummary, ProgressFn, ingest
from trapline.pipeline.stages import NoteFn
from trapline.store.duckdb import Store, open_store

# Rows derived from a message, by table and the column naming it; recreated by the re-parse.
DERIVED = (
    ("recipients", "message_id"),
    ("hops", "message_id"),
    ("urls", "message_id"),
    ("attachments", "message_id"),
    ("signatures", "message_id"),
    ("ip_routing", "message_id"),
    ("dictionary_attacks", "message_id"),
    ("quarantine", "id"),
    ("messages", "id"),
)


@dataclass(slots=True, frozen=True)
class Selection:
    """Which stored messages to re-parse (all when every field is empty)."""

    source: str | None = None  # source path prefix (a folder or a file)
    since: date | None = None  # received on or after
    until: date | None = None  # received on or before
    where: str | None = None  # one SQL condition over ``messages``

    def sql(self) -> tuple[str, list[Any]]:
        """A query for the selected raw ids, and its parameters."""
        if self.since and self.until and self.since > self.until:
            raise UsageError(f"--since {self.since} is after --until {self.until}; swap them")
        if self.where is not None and ";" in self.where:
            raise UsageError("--where takes one SQL condition (no ';')")
        parts: list[str] = ["SELECT r.id FROM raw r"]
        params: list[Any] = []
        conds: list[str] = []
        if self.source:
            # Sources are stored as given at ingest: match the text and the absolute path.
            conds.append("(starts_with(r.source, ?) OR starts_with(r.source, ?))")
            params += [self.source, str(Path(self.source).resolve())]
        msg: list[str] = []
        if self.since:
            msg.append("m.received_at >= ?")
            params.append(self.since)
        if self.until:
            msg.append("m.received_at < ?")
            params.append(self.until + timedelta(days=1))
        if self.where:
            msg.append(f"({self.where})")
        if msg:
            # Date and query select parsed messages; quarantined ones have no date or columns.
            conds.append(f"r.id IN (SELECT m.id FROM messages m WHERE {' AND '.join(msg)})")
        if conds:
            parts.append("WHERE " + " AND ".join(conds))
        return " ".join(parts), params


@dataclass(slots=True, frozen=True)
class ReparseSummary:
    selected: int
    ingest: IngestSummary
    campaigns_rebuilt: bool

    def line(self) -> str:
        s = self.ingest
        rate = s.resumed / s.seconds if s.seconds > 0 else 0.0
        text = (
            f"re-parsed {s.resumed:,} of {self.selected:,} selected messages: {s.parsed:,} "
            f"parsed, {s.quarantined:,} quarantined in {s.seconds:.1f}s ({rate:.0f} msgs/s)"
        )
        return text + ("; campaigns rebuilt" if self.campaigns_rebuilt else "")


def _clear(store: Store, ids: list[str], key: str) -> bool:
    """Remove the parsed and derived rows of ``ids`` and record the trust set they will be
    parsed with, in one transaction; returns whether the store had campaigns."""
    con = store.con
    had = bool(con.execute("SELECT count(*) FROM campaign_state").fetchall()[0][0])
    con.register("_reparse_ids", pa.table({"id": pa.array(ids, pa.string())}))
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            for table, column in DERIVED:
                con.execute(f"DELETE FROM {table} WHERE {column} IN (SELECT id FROM _reparse_ids)")
            con.execute("UPDATE raw SET trust = ? WHERE id IN (SELECT id FROM _reparse_ids)", [key])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.unregister("_reparse_ids")
    return had


def reparse(
    settings: dict[str, Any],
    selection: Selection,
    *,
    trust: tuple[str, ...] = (),
    workers: int | None = None,
    on_progress: ProgressFn | None = None,
    on_note: NoteFn | None = None,
) -> ReparseSummary:
    """Re-parse the selected stored messages with the current settings and ``trust``."""
    data_dir = Path(settings["data_dir"])
    sql, params = selection.sql()
    with open_store(data_dir, read_only=True) as store:
        ids = [str(r[0]) for r in store.con.execute(sql, params).fetchall()]
    if not ids:
        raise NotFound(
            "no stored message matches the selection; `trapline stats` shows what is stored"
        )
    with open_store(data_dir) as store:
        had_campaigns = _clear(store, ids, trust_key([*(settings.get("trust") or []), *trust]))
    note: NoteFn = on_note or (lambda _text: None)

    def quiet_resume(text: str) -> None:
        # The ingest run calls the selected messages "resumed"; for a re-parse that is the point.
        if not text.startswith("resuming:"):
            note(text)

    summary = ingest(
        [],
        settings=settings,
        trust=trust,
        workers=workers,
        on_progress=on_progress,
        on_note=quiet_resume,
    )
    if had_campaigns:
        from trapline.analyze.campaigns import analyze_campaigns

        with open_store(data_dir) as store:
            analyze_campaigns(store, settings, rebuild=True)
    return ReparseSummary(len(ids), summary, had_campaigns)
