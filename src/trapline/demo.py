"""``trapline demo``: ingest the bundled real corpus and report on it.

The sample is package data (``trapline/data/sample``: ~300 SpamAssassin 2002 messages, byte for
byte, with their licence note), so the demo works from an installed wheel with no network and no
checkout. Routing files shipped under ``trapline/data/routing`` are imported first when the
routing area provides ``ROUTING_IMPORT``, so the post-ingest ASN stage can map 2002 mail with
period routing data.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import ExitStack
from importlib import resources
from pathlib import Path
from typing import Any

from trapline.pipeline import IngestSummary, NoteFn, ProgressFn, ingest
from trapline.store.duckdb import open_store
from trapline.store.queries import stats

# Contract for the routing area: ``fn(data_dir: Path, files: list[Path]) -> str`` imports the
# routing tables in ``files`` into the store and returns a one-line summary.
ROUTING_IMPORT = "trapline.enrich.routing:demo_import"


def _routing_hook() -> Callable[[Path, list[Path]], str] | None:
    module, _, name = ROUTING_IMPORT.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    return fn


def run_demo(
    settings: dict[str, Any],
    *,
    on_progress: ProgressFn | None = None,
    on_note: NoteFn | None = None,
) -> dict[str, Any]:
    """Ingest the bundled sample into ``settings['data_dir']``; returns summary, stats, notes."""
    notes: list[str] = []
    data_dir = Path(settings["data_dir"])
    with ExitStack() as stack:
        root = stack.enter_context(resources.as_file(resources.files("trapline").joinpath("data")))
        sample = root / "sample"
        routing_dir = root / "routing"
        routing_files = (
            sorted(p for p in routing_dir.rglob("*") if p.is_file()) if routing_dir.is_dir() else []
        )
        hook = _routing_hook()
        if routing_files and hook is not None:
            notes.append(hook(data_dir, routing_files))
        elif routing_files:
            notes.append(
                "routing data bundled but this build cannot import it; origins stay unmapped"
            )
        summary: IngestSummary = ingest(
            [sample / "mail"], settings=settings, on_progress=on_progress, on_note=on_note
        )
    with open_store(data_dir, read_only=True) as store:
        report = stats(store.con, top=5)
    return {"summary": summary, "stats": report, "notes": notes, "sample": str(sample)}
