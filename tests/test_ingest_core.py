"""The one ingest core: file ingest and the trap drain share dedupe, archive, parse, quarantine
and the stage runner, so a failing stage behaves the same in ``serve`` as in ``ingest``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import wait_for
from trap_helpers import TrapProcess, send_one, serve_env, spam_bodies
from trapline.pipeline.core import IngestCore
from trapline.pipeline.run import ingest
from trapline.store.duckdb import open_store

TRAP = "traps.example.org"

# A stage that writes inside a transaction and then fails: the runner must roll the write back,
# report the failure once and switch the stage off. Each call leaves a line in CALLS.
FAILING_STAGE = """
import os

def explode(store, message_ids, settings):
    with open(os.environ["FAILING_STAGE_CALLS"], "a") as fh:
        fh.write(f"{len(message_ids)}\\n")
    store.con.execute("BEGIN TRANSACTION")
    store.con.execute(
        "INSERT INTO ingest_runs (run_id, started_at) VALUES ('from-the-failing-stage', now())"
    )
    raise RuntimeError("deliberate stage failure")
"""
STAGES = "failing_stage:explode,trapline.pipeline.adapters.harvest:harvest_stage"


def _stage_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "mods").mkdir(exist_ok=True)
    (tmp_path / "mods" / "failing_stage.py").write_text(FAILING_STAGE)
    path = os.pathsep.join(p for p in (str(tmp_path / "mods"), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "FAILING_STAGE_CALLS": str(tmp_path / "calls.txt")}


def test_a_failing_stage_during_serve_is_rolled_back_reported_once_and_switched_off(
    tmp_path: Path,
) -> None:
    bodies = spam_bodies(12)  # skips before any process starts when the corpus is absent
    data = tmp_path / "data"
    env = _stage_env(tmp_path)
    proc = TrapProcess(data, {"post_ingest_stages": STAGES}, extra_env=env).start()
    try:
        assert send_one(proc.smtp_port, [f"first@{TRAP}"], bodies[0])[0] == 250
        # the drain stored it and the stage failed on it
        wait_for((tmp_path / "calls.txt").exists, "the failing stage to run", 60)
        for i, body in enumerate(bodies[1:]):
            assert send_one(proc.smtp_port, [f"next{i}@{TRAP}"], body)[0] == 250
    finally:
        log = proc.stop(signal.SIGTERM)
    assert proc.proc is not None and proc.proc.returncode == 0, log
    # called once (switched off after its failure), and said once
    assert (tmp_path / "calls.txt").read_text().splitlines() == ["1"]
    assert log.count("failing_stage:explode failed and was switched off") == 1, log
    with open_store(data, read_only=True) as store:
        con = store.con
        stored = con.execute("SELECT count(*) FROM messages").fetchone()
        quarantined = con.execute("SELECT count(*) FROM quarantine").fetchone()
        leaked = con.execute(
            "SELECT count(*) FROM ingest_runs WHERE run_id = 'from-the-failing-stage'"
        ).fetchone()
    # the messages after the failure were stored normally, none rejected as a store error
    assert stored == (12,) and quarantined == (0,) and leaked == (0,)


def test_the_same_failing_stage_during_ingest_is_reported_the_same_way(tmp_path: Path) -> None:
    bodies = spam_bodies(12)
    folder = tmp_path / "mail"
    folder.mkdir()
    for i, body in enumerate(bodies):
        (folder / f"{i:02d}.eml").write_bytes(body)
    env = {**serve_env(tmp_path / "data", post_ingest_stages=STAGES), **_stage_env(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "trapline", "ingest", "--batch-size", "4", "--workers", "1", str(folder)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("failing_stage:explode failed and was switched off") == 1
    assert (tmp_path / "calls.txt").read_text().splitlines() == ["4"]
    with open_store(tmp_path / "data", read_only=True) as store:
        assert store.con.execute("SELECT count(*) FROM messages").fetchone() == (12,)


def test_stages_are_loaded_once_per_writer_not_per_batch(tmp_path: Path) -> None:
    """The core imports its stages when made; batches after that reuse them."""
    settings = {"data_dir": str(tmp_path / "data"), "post_ingest_stages": STAGES.split(",")}
    env = _stage_env(tmp_path)
    sys.path.insert(0, str(tmp_path / "mods"))
    os.environ["FAILING_STAGE_CALLS"] = env["FAILING_STAGE_CALLS"]
    try:
        core = IngestCore(settings, lambda _text: None)
        loaded = [spec for spec, _ in core.stages.active]
        assert loaded == STAGES.split(",")
        sys.modules.pop("failing_stage")  # a re-import per batch would now fail to find it
        (tmp_path / "mods" / "failing_stage.py").unlink()
        with open_store(tmp_path / "data") as store:
            items = [(raw.id, raw) for raw in _raws(spam_bodies(3))]
            got = core.archive(store, items)
            written = core.write(store, core.parse(got.fresh))
        assert len(written.stored) == 3
        assert (tmp_path / "calls.txt").read_text().splitlines() == ["3"]
        assert "failing_stage:explode" not in [spec for spec, _ in core.stages.active]
    finally:
        sys.path.remove(str(tmp_path / "mods"))
        os.environ.pop("FAILING_STAGE_CALLS", None)


def test_a_writer_skips_messages_another_writer_stored_meanwhile(tmp_path: Path) -> None:
    """Writers take turns; one that resumes may parse what another is still parsing. Whoever
    writes second skips those messages instead of quarantining them as store errors."""
    settings = {"data_dir": str(tmp_path / "data"), "post_ingest_stages": []}
    first, second = (IngestCore(settings, lambda _t: None) for _ in range(2))
    with open_store(tmp_path / "data") as store:
        items = [(raw.id, raw) for raw in _raws(spam_bodies(5))]
        fresh = first.archive(store, items).fresh
        assert sorted(mid for mid, _ in second.pending(store)) == sorted(mid for mid, _ in fresh)
        assert len(second.write(store, second.parse(second.pending(store))).stored) == 5
        written = first.write(store, first.parse(fresh))
        assert written.stored == [] and written.quarantined == 0
        assert store.con.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)
        assert store.con.execute("SELECT count(*) FROM messages").fetchone() == (5,)


def test_file_ingest_runs_on_the_core(tmp_path: Path) -> None:
    """The summary counts come from the core's archive and write steps (dedupe included)."""
    folder = tmp_path / "mail"
    folder.mkdir()
    bodies = spam_bodies(6)
    for i, body in enumerate([*bodies, bodies[0]]):
        (folder / f"{i:02d}.eml").write_bytes(body)
    settings = {"data_dir": str(tmp_path / "data"), "post_ingest_stages": []}
    summary = ingest([folder], settings=settings, workers=1)
    assert (summary.read, summary.new, summary.duplicates, summary.parsed) == (7, 6, 1, 6)


def _raws(bodies: list[bytes]) -> list:  # type: ignore[type-arg]
    from trapline.model import RawMessage

    return [RawMessage(b, f"test:{i}") for i, b in enumerate(bodies)]
