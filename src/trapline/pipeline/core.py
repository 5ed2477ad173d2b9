"""The ingest core: what file ingest and the trap drain both do to a batch of raw messages.

Raw first (ARCHITECTURE rule 2): ``archive`` de-duplicates against the store and commits the new
bytes before anything is parsed; ``pending`` finds what an interrupted writer archived but never
parsed (resume); ``parse`` turns raw messages into a write batch, retrying a failed chunk one
message at a time and quarantining what still fails as ``internal-error``; ``write`` stores a
batch and runs the post-ingest stages on it through the one stage runner.

One core lives as long as its writer (an ingest run, a ``serve`` process), so stages are loaded
once and a stage switched off stays off for that writer. The core holds no store: every call is
given the store of the current write window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from trapline.ingest.received import TrustBoundary
from trapline.model import Message, Quarantined, RawMessage, message_id_of
from trapline.pipeline.pool import batch_for, fingerprint_at_ingest, parse_records
from trapline.pipeline.stages import NoteFn, PostIngestStages
from trapline.store import raw as rawstore
from trapline.store.duckdb import Store
from trapline.store.writer import Batch, subset, write_batch

# (id, raw message): ids travel with the bytes so nothing is hashed twice.
Item = tuple[str, RawMessage]


@dataclass(slots=True, frozen=True)
class Archived:
    """What ``archive`` did with one buffer: the new items, and how many were already stored."""

    fresh: list[Item]
    duplicates: int
    known: list[Item]  # archived before (one item per id)


@dataclass(slots=True, frozen=True)
class Prepared:
    """Messages made ready outside a write window: their compressed raw rows and parsed batch,
    so the window itself only de-duplicates and inserts."""

    ids: frozenset[str]
    raw: pa.Table
    batch: Batch

    def covers(self, ids: Sequence[str]) -> bool:
        return all(i in self.ids for i in ids)


@dataclass(slots=True, frozen=True)
class Written:
    """What ``write`` stored: message ids that got rows, and how many were quarantined."""

    stored: list[str]
    quarantined: int


def trust_for(specs: Sequence[str]) -> TrustBoundary:
    """The origin walk's trust boundary (private and loopback ranges always included)."""
    return TrustBoundary.from_specs(list(specs))


def trust_key(specs: Sequence[str]) -> str:
    """The trust set as archived with each message (``raw.trust``): sorted, comma-separated."""
    return ",".join(sorted({s.strip().lower() for s in specs if s.strip()}))


class IngestCore:
    """Dedupe, raw archive, resume, parse, quarantine and the stage runner, for one writer."""

    def __init__(
        self,
        settings: dict[str, Any],
        note: NoteFn,
        *,
        trust: Sequence[str] = (),
        label: str = "spam",
    ) -> None:
        self.settings = settings
        self.note = note
        self.label = label  # given to every message this writer archives (store/labels.py)
        self.resumed_labels: dict[str, str] = {}  # resumed ids archived with another label
        specs = [*(settings.get("trust") or []), *trust]
        self.trust = trust_for(specs)
        self.trust_key = trust_key(specs)
        self.told_trust = False  # the "parsed with another trust set" note, said once
        self.fingerprint = fingerprint_at_ingest(settings)
        self.stages = PostIngestStages(settings, note)
        self.stages.load()
        self.unsigned = 0  # messages stored without signatures (a fingerprint bug)

    # raw side

    def archive(
        self, store: Store, items: Sequence[Item], prepared: Prepared | None = None
    ) -> Archived:
        """De-duplicate ``items`` within themselves and against the store; commit the new bytes
        (the rows ``prepared`` already compressed, when it covers them)."""
        unique: dict[str, RawMessage] = {}
        for mid, raw in items:
            unique.setdefault(mid, raw)
        known = rawstore.existing_ids(store.con, list(unique))
        fresh = [(mid, raw) for mid, raw in unique.items() if mid not in known]
        if prepared is not None and prepared.covers(list(unique)):
            keep = pa.array([mid for mid, _ in fresh], pa.string())
            rawstore.write_raw_table(
                store.con, prepared.raw.filter(pc.is_in(prepared.raw["id"], value_set=keep))
            )
        else:
            rawstore.write_raw(store.con, [self._row(mid, r) for mid, r in fresh])
        if known and not self.told_trust:
            self._other_trust(store, known)
        known_items = [(mid, raw) for mid, raw in unique.items() if mid in known]
        return Archived(fresh, len(items) - len(fresh), known_items)

    def _row(self, mid: str, raw: RawMessage) -> rawstore.RawRow:
        return rawstore.RawRow(mid, raw.data, raw.source, raw.envelope, self.label, self.trust_key)

    def prepare(self, items: Sequence[Item]) -> Prepared:
        """Compress and parse ``items`` before taking a write turn (pure CPU work, no store)."""
        unique = dict(items)
        rows = [self._row(mid, r) for mid, r in unique.items()]
        return Prepared(
            frozenset(unique), rawstore.raw_table(rows), self.parse(list(unique.items()))
        )

    def _other_trust(self, store: Store, known: set[str]) -> None:
        """Say (once) that known bytes were parsed with another trust set: a duplicate is not
        parsed again, so the new --trust would silently not apply to it."""
        other = rawstore.other_trust(store.con, sorted(known), self.trust_key)
        if other is None:
            return
        self.told_trust = True
        was, now = other or "(none)", self.trust_key or "(none)"
        self.note(
            f"some messages were already stored, parsed with another --trust set (was: {was}; "
            f"now: {now}); their parse is kept: `trapline reparse` re-parses stored mail with "
            "the current trust set"
        )

    def pending(self, store: Store, source_prefix: str = "") -> list[Item]:
        """Archived messages an interrupted writer never parsed (they are parsed like new ones);
        ``source_prefix``: only those whose source starts with it."""
        ids = rawstore.pending_ids(store.con, source_prefix)
        if ids:
            self.note(f"resuming: {len(ids)} archived messages from an interrupted run")
        rows = {r.id: r for r in rawstore.iter_raw(store.con, ids)}
        self.resumed_labels.update((r.id, r.label) for r in rows.values() if r.label != self.label)
        # In id order, as listed: the store returns them in any order.
        return [(i, RawMessage(rows[i].data, rows[i].source, rows[i].envelope)) for i in ids]

    def unparsed(self, store: Store, items: Sequence[Item]) -> list[Item]:
        """Those of ``items`` (archived) with neither a ``messages`` nor a ``quarantine`` row."""
        if not items:
            return []
        done = _stored_ids(store, [mid for mid, _ in items])
        return [(mid, raw) for mid, raw in items if mid not in done]

    # parse side

    def parse(self, items: Sequence[Item]) -> Batch:
        """Parse in this process (the drain; an ingest without a pool) into a write batch."""
        raws = [raw for _, raw in items]
        try:
            records = parse_records(raws, self.trust, [mid for mid, _ in items])
        except Exception as exc:  # a bug in parse code: retry one by one
            return self.fallback(raws, exc)
        return self.batch(records)

    def batch(self, records: Sequence[Message | Quarantined]) -> Batch:
        return self.checked(batch_for(records, fingerprint=self.fingerprint))

    def fallback(self, raws: Sequence[RawMessage], exc: Exception) -> Batch:
        """Re-run a failed chunk message by message in-process; failures are quarantined."""
        records: list[Message | Quarantined] = []
        for raw in raws:
            try:
                records.extend(parse_records([raw], self.trust))
            except Exception as one:
                mid = message_id_of(raw.data)
                detail = f"{type(one).__name__}: {one}"[:500]
                records.append(
                    Quarantined(mid, len(raw.data), raw.source, "internal-error", detail)
                )
        self.note(f"a parse task failed ({type(exc).__name__}: {exc}); retried one by one")
        return self.batch(records)

    def checked(self, batch: Batch) -> Batch:
        """Say once per writer when fingerprints could not be computed for a batch."""
        if self.fingerprint and batch.message_ids and "signatures" not in batch.tables:
            self.unsigned += len(batch.message_ids)
            if self.unsigned == len(batch.message_ids):
                self.note(
                    "fingerprints could not be computed at ingest for some messages (a bug: "
                    "please report it); they are stored, and `trapline analyze campaigns` "
                    "computes their fingerprints from the stored rows"
                )
        return batch

    # store side

    def write(self, store: Store, batch: Batch) -> Written:
        """Store ``batch`` (skipping messages another writer stored meanwhile), then run the
        post-ingest stages on the messages that got rows."""
        batch = _unstored(store, batch)
        self._label(batch)
        bad = write_batch(store.con, batch)
        for q in bad:
            self.note(f"{q.source}: quarantined, the store rejected it ({q.detail[:120]})")
        bad_ids = {q.id for q in bad}
        stored = [i for i in batch.message_ids if i not in bad_ids]
        self.stages.submit(store, stored)
        return Written(stored, len(batch.quarantined_ids) + len(bad))

    def _label(self, batch: Batch) -> None:
        """Give the batch's messages their label (the writer's, or the archive's when resumed)."""
        table = batch.tables.get("messages")
        if table is None or "label" in table.column_names:
            return
        if self.resumed_labels:
            ids = table.column("id").to_pylist()
            values = pa.array([self.resumed_labels.get(i, self.label) for i in ids], pa.string())
        else:
            values = pa.array([self.label] * table.num_rows, pa.string())
        batch.tables["messages"] = table.append_column("label", values)


def _unstored(store: Store, batch: Batch) -> Batch:
    """``batch`` without the messages that already have a ``messages`` or ``quarantine`` row.

    Writers take turns on the store, and a writer that resumes may parse messages another
    writer archived and is still parsing; whoever writes second skips them."""
    ids = batch.message_ids + batch.quarantined_ids
    if not ids:
        return batch
    done = _stored_ids(store, ids)
    if not done:
        return batch
    return subset(batch, [i for i in ids if i not in done])


def _stored_ids(store: Store, ids: list[str]) -> set[str]:
    """Which of ``ids`` have a ``messages`` or a ``quarantine`` row."""
    store.con.register("_written_probe", pa.table({"id": pa.array(ids, pa.string())}))
    try:
        rows = store.con.execute(
            "SELECT p.id FROM _written_probe p WHERE p.id IN (SELECT id FROM messages) "
            "OR p.id IN (SELECT id FROM quarantine WHERE id IS NOT NULL)"
        ).fetchall()
    finally:
        store.con.unregister("_written_probe")
    return {str(r[0]) for r in rows}
