"""The ingest orchestration on real mail and a real DuckDB: dedupe, counting, stages, resume.

The interrupt tests kill a real ``trapline ingest`` subprocess (SIGINT, then SIGKILL) part way
through, re-run it, and check that the store ends up exactly as after a clean run.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, shared, wait_for
from trapline.errors import NotConfigured, SourceError
from trapline.model import RawMessage
from trapline.pipeline.run import ingest
from trapline.store import raw as rawstore
from trapline.store.duckdb import Store, open_store
from trapline.store.queries import stats

STAGE_CALLS: list[list[str]] = []


def recording_stage(store: Store, message_ids: list[str], settings: dict[str, Any]) -> str:
    """A real post-ingest stage: checks its ids are committed, as a later stage would use them."""
    n = store.con.execute(
        "SELECT count(*) FROM messages WHERE list_contains(?, id)", [message_ids]
    ).fetchone()[0]
    assert n == len(message_ids)
    STAGE_CALLS.append(list(message_ids))
    return f"recorded {sum(len(c) for c in STAGE_CALLS)} messages"


def half_read_stage(store: Store, message_ids: list[str], settings: dict[str, Any]) -> str:
    """Leaves a result half-read on the shared connection (DuckDB then refuses other work)."""
    store.con.execute("SELECT id FROM messages").fetchone()
    return ""


def unconfigured_stage(store: Store, message_ids: list[str], settings: dict[str, Any]) -> str:
    raise NotConfigured("no routing snapshot imported; run `trapline routing import`")


def failing_stage(store: Store, message_ids: list[str], settings: dict[str, Any]) -> str:
    """A buggy stage that dies inside its own transaction."""
    store.con.execute("BEGIN TRANSACTION")
    store.con.execute(
        "UPDATE messages SET campaign_id = 'half-done' WHERE id = ?", [message_ids[0]]
    )
    raise ValueError("bug in a stage")


def marker_stage(store: Store, message_ids: list[str], settings: dict[str, Any]) -> str:
    """Used by the interrupt test: one line per committed batch. At batch ``TEST_PIPELINE_HOLD_AT``
    it holds the run until the test has sent its signal (and made the release file), so the run
    cannot finish before it is interrupted."""
    marker = Path(os.environ["TEST_PIPELINE_MARKER"])
    with marker.open("a") as fh:
        fh.write(f"{len(message_ids)}\n")
    if len(marker.read_text().split()) == int(os.environ["TEST_PIPELINE_HOLD_AT"]):
        wait_for(marker.with_suffix(".release").exists, "the test to release the held run")
    return ""


def _settings(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"data_dir": str(tmp_path / "store"), "post_ingest_stages": [], **extra}


def _copy(folder: str, n: int, dest: Path) -> Path:
    src = shared("mail", "spamassassin-2002", folder)
    dest.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.iterdir())[:n]:
        shutil.copyfile(p, dest / p.name)
    return dest


def _counts(data_dir: Path) -> dict[str, Any]:
    with open_store(data_dir, read_only=True) as store:
        s = stats(store.con)
        digest = store.con.execute(
            "SELECT count(*), sum(hash(id || coalesce(origin_ip, '') || coalesce(subject, ''))), "
            "(SELECT count(*) FROM hops), (SELECT count(*) FROM urls), "
            "(SELECT count(*) FROM recipients), (SELECT count(*) FROM attachments) FROM messages"
        ).fetchone()
    return {k: s[k] for k in ("seen", "messages", "quarantined", "pending")} | {"digest": digest}


def test_ingest_dedupes_within_a_run_and_across_runs(tmp_path: Path) -> None:
    corpus = _copy("spam", 120, tmp_path / "mail")
    settings = _settings(tmp_path)
    # The same folder twice in one run: every message read twice, stored once.
    first = ingest([corpus, corpus], settings=settings, workers=2, batch_size=50)
    assert (first.read, first.new, first.duplicates) == (240, 120, 120)
    assert first.parsed + first.quarantined == 120
    again = ingest([corpus], settings=settings, workers=2)
    assert (again.read, again.new, again.duplicates) == (120, 0, 120)
    assert "120 duplicates (already stored)" in again.line()
    c = _counts(tmp_path / "store")
    assert c["seen"] == 120 == c["messages"] + c["quarantined"]


def test_one_worker_and_two_workers_store_the_same(tmp_path: Path) -> None:
    corpus = _copy("spam_2", 150, tmp_path / "mail")
    one = ingest([corpus], settings=_settings(tmp_path / "a"), workers=1, batch_size=40)
    two = ingest([corpus], settings=_settings(tmp_path / "b"), workers=2, batch_size=40)
    assert (one.new, one.parsed, one.quarantined) == (two.new, two.parsed, two.quarantined)
    assert _counts(tmp_path / "a" / "store") == _counts(tmp_path / "b" / "store")


def test_source_problems_are_counted_and_seen_balances(tmp_path: Path) -> None:
    corpus = _copy("spam", 30, tmp_path / "mail")
    mbox = shared("mail", "nazario-phishing-2005", "phishing0.mbox").read_bytes()
    # A real mbox, gzip-compressed and cut short: a truncated archive.
    (corpus / "cut.mbox.gz").write_bytes(gzip.compress(mbox)[:20_000])
    (corpus / "empty.eml").write_bytes(b"")
    notes: list[str] = []
    summary = ingest([corpus], settings=_settings(tmp_path), workers=1, on_note=notes.append)
    assert summary.problems >= 1
    assert any("cut.mbox.gz" in n for n in notes), notes
    c = _counts(tmp_path / "store")
    assert c["seen"] == c["messages"] + c["quarantined"]
    assert c["pending"] == 0
    # Re-reading the same damaged archive records nothing new.
    ingest([corpus], settings=_settings(tmp_path), workers=1)
    assert _counts(tmp_path / "store")["seen"] == c["seen"]


def test_missing_path_fails_before_touching_the_store(tmp_path: Path) -> None:
    with pytest.raises(SourceError):
        ingest([tmp_path / "nope"], settings=_settings(tmp_path))
    assert not (tmp_path / "store" / "trapline.duckdb").exists()


def test_stdin_is_a_source(tmp_path: Path) -> None:
    data = shared("mail", "nazario-phishing-2005", "phishing1.mbox").read_bytes()
    summary = ingest(["-"], settings=_settings(tmp_path), stdin=io.BytesIO(data), workers=1)
    assert summary.read > 100
    c = _counts(tmp_path / "store")
    assert c["seen"] == summary.new == c["messages"] + c["quarantined"]


def test_post_ingest_stages_run_per_batch_and_switch_off_once(tmp_path: Path) -> None:
    STAGE_CALLS.clear()
    corpus = _copy("spam", 90, tmp_path / "mail")
    notes: list[str] = []
    settings = _settings(
        tmp_path,
        post_ingest_stages=[
            "test_pipeline:unconfigured_stage",
            "test_pipeline:recording_stage",
        ],
    )
    ticks: list[tuple[int, int, int | None]] = []
    summary = ingest(
        [corpus],
        settings=settings,
        workers=2,
        batch_size=30,
        on_note=notes.append,
        on_progress=lambda *a: ticks.append(a),
    )
    # A write takes at most batch_size - 1 + one chunk (25) = 54 rows, so 90 need two or more;
    # how many exactly depends on the order the workers finish in.
    assert len(STAGE_CALLS) >= 2, "one call per written batch"
    # The last progress report says every message is finished and all input bytes are covered.
    assert ticks[-1][0] == 90 and ticks[-1][1] == ticks[-1][2] == sum(
        p.stat().st_size for p in corpus.iterdir()
    )
    assert sorted(i for call in STAGE_CALLS for i in call) == sorted(
        _ids_in(tmp_path / "store", "messages")
    )
    off = [n for n in notes if "unconfigured_stage" in n]
    assert len(off) == 1 and "switched off" in off[0] and "routing" in off[0]
    assert summary.stage_notes == (
        f"test_pipeline:recording_stage: recorded {summary.parsed} messages "
        f"(last of {len(STAGE_CALLS)} batches)",
    )


def test_a_stage_that_leaves_a_result_half_read_does_not_block_the_next_batch(
    tmp_path: Path,
) -> None:
    # One worker (in-process parse): after each batch's stages the next thing is archiving the
    # next batch, whose first call needs the connection free.
    corpus = _copy("spam", 60, tmp_path / "mail")
    settings = _settings(tmp_path, post_ingest_stages=["test_pipeline:half_read_stage"])
    summary = ingest([corpus], settings=settings, workers=1, batch_size=20)
    assert summary.parsed + summary.quarantined == 60


def test_a_failing_stage_is_switched_off_and_the_ingest_goes_on(tmp_path: Path) -> None:
    corpus = _copy("spam", 60, tmp_path / "mail")
    notes: list[str] = []
    settings = _settings(tmp_path, post_ingest_stages=["test_pipeline:failing_stage"])
    summary = ingest([corpus], settings=settings, workers=2, batch_size=20, on_note=notes.append)
    failed = [n for n in notes if "failing_stage" in n]
    assert len(failed) == 1 and "ValueError: bug in a stage" in failed[0]
    assert summary.parsed + summary.quarantined == 60
    with open_store(tmp_path / "store", read_only=True) as store:
        half = store.con.execute("SELECT count(*) FROM messages WHERE campaign_id IS NOT NULL")
        assert half.fetchone()[0] == 0, "the failed stage's open transaction was rolled back"


def _ids_in(data_dir: Path, table: str) -> list[str]:
    with open_store(data_dir, read_only=True) as store:
        return [r[0] for r in store.con.execute(f"SELECT id FROM {table}").fetchall()]


def test_archived_but_unparsed_messages_are_resumed(tmp_path: Path) -> None:
    corpus = _copy("spam_2", 60, tmp_path / "mail")
    paths = sorted(corpus.iterdir())
    # What an interrupted run leaves: raw rows committed, parse results not.
    with open_store(tmp_path / "store") as store:
        rows = [
            rawstore.RawRow(RawMessage(p.read_bytes(), str(p)).id, p.read_bytes(), str(p))
            for p in paths[:25]
        ]
        rawstore.write_raw(store.con, rows)
        assert len(rawstore.pending_ids(store.con)) == 25
    summary = ingest([corpus], settings=_settings(tmp_path), workers=2, batch_size=20)
    assert summary.resumed == 25
    assert (summary.new, summary.duplicates) == (35, 25)
    c = _counts(tmp_path / "store")
    assert c["seen"] == 60 == c["messages"] + c["quarantined"] and c["pending"] == 0


def _cli_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    # Import trapline the way this test run does (installed or PYTHONPATH), plus this folder for
    # the marker stage.
    import trapline

    src = str(Path(trapline.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([src, str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


CLI = [sys.executable, "-c", "from trapline.cli.main import cli; cli()"]
# A child of a background job starts with SIGINT ignored (POSIX shells do that), and Python then
# keeps it ignored; restore the default so the child behaves as in a terminal.
CLI_INTERACTIVE = [
    sys.executable,
    "-c",
    "import signal, faulthandler; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "faulthandler.dump_traceback_later(30); "
    "from trapline.cli.main import cli; cli()",
]


def _run_and_kill(corpus: Path, data_dir: Path, marker: Path, sig: int, after_batches: int) -> int:
    """Run a real ingest, hold it in the stage of batch ``after_batches`` and send ``sig`` there."""
    env = _cli_env(
        {
            "TRAPLINE_POST_INGEST_STAGES": "test_pipeline:marker_stage",
            "TEST_PIPELINE_MARKER": str(marker),
            "TEST_PIPELINE_HOLD_AT": str(after_batches),
        }
    )
    proc = subprocess.Popen(
        [
            *CLI_INTERACTIVE,
            "--quiet",
            "--data-dir",
            str(data_dir),
            "ingest",
            str(corpus),
            "--batch-size",
            "100",
            "--workers",
            "2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: (
                proc.poll() is not None
                or (marker.exists() and len(marker.read_text().split()) >= after_batches)
            ),
            f"batch {after_batches} to be committed",
        )
        assert proc.poll() is None, "the run ended before it could be interrupted"
        if sig == signal.SIGKILL:
            # Like a power cut or the OOM killer: everything dies at once, workers included
            # (they also hold our stderr pipe open).
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.send_signal(sig)  # Ctrl-C reaches the main process; workers ignore it
            # Ctrl-C is honoured between batches, so the held stage must let the run go on.
            marker.with_suffix(".release").touch()
        _out, err = proc.communicate(timeout=60)
    finally:
        # Reap the whole process group we started (workers orphaned by SIGKILL included).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err.decode()
        assert b"interrupted" in err
        assert b"Traceback" not in err
    return proc.returncode


@pytest.mark.slow
def test_sigint_and_sigkill_mid_run_lose_nothing_and_resume(tmp_path: Path) -> None:
    corpus = tmp_path / "mail"
    _copy("spam", 500, corpus / "spam")
    _copy("spam_2", 700, corpus / "spam_2")
    clean = tmp_path / "clean"
    ingest([corpus], settings=_settings(clean), workers=2)
    expected = _counts(clean / "store")
    assert expected["seen"] == 1200

    data_dir = tmp_path / "killed"
    _run_and_kill(corpus, data_dir, tmp_path / "m1", signal.SIGINT, after_batches=2)
    partial = _counts(data_dir)
    assert 0 < partial["messages"] + partial["quarantined"] < expected["seen"]

    _run_and_kill(corpus, data_dir, tmp_path / "m2", signal.SIGKILL, after_batches=3)
    rerun = subprocess.run(
        [*CLI, "--quiet", "--data-dir", str(data_dir), "ingest", str(corpus)],
        env=_cli_env({"TRAPLINE_POST_INGEST_STAGES": ""}),
        capture_output=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr.decode()
    final = _counts(data_dir)
    assert final == expected
    assert final["seen"] == final["messages"] + final["quarantined"]


def _children(pid: int) -> list[int]:
    return [
        int(kid)
        for task in os.listdir(f"/proc/{pid}/task")
        for kid in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
    ]


def worker_killer_stage(store: Store, message_ids: list[str], settings: dict[str, Any]) -> str:
    """Kills one parse worker after the first batch, as the OOM killer would.

    Workers are forked from this process, or from a fork server when this process already ran
    rensa (see pipeline.pool.start_pool): either way they are the leaves of its process tree.
    """
    if not settings.get("_killed"):
        settings["_killed"] = True
        leaves, todo = [], _children(os.getpid())
        while todo:
            pid = todo.pop()
            kids = _children(pid)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if not kids and b"resource_tracker" not in cmdline:
                leaves.append(pid)
            todo.extend(kids)
        os.kill(leaves[0], signal.SIGKILL)
    return ""


def test_a_dead_worker_stops_the_run_cleanly_and_the_rerun_resumes(tmp_path: Path) -> None:
    from trapline.errors import IngestError

    corpus = _copy("spam_2", 400, tmp_path / "mail")
    settings = _settings(tmp_path, post_ingest_stages=["test_pipeline:worker_killer_stage"])
    with pytest.raises(IngestError, match="run the same ingest again"):
        ingest([corpus], settings=settings, workers=2, batch_size=50)
    partial = _counts(tmp_path / "store")
    assert partial["messages"] + partial["quarantined"] < 400
    again = ingest([corpus], settings=_settings(tmp_path), workers=2, batch_size=50)
    assert again.resumed + again.new == 400 - partial["messages"] - partial["quarantined"]
    final = _counts(tmp_path / "store")
    assert final["seen"] == 400 == final["messages"] + final["quarantined"]
    assert final["pending"] == 0


def test_hostile_inputs_are_each_stored_or_quarantined_and_counted(tmp_path: Path) -> None:
    """Hostile input through the whole pipeline: real mail made hostile (synthetic, on
    top of the real corpora tests), plus junk; every input is accounted for."""
    real = sorted(shared("mail", "spamassassin-2002", "spam").iterdir())
    a, b, c = (p.read_bytes() for p in real[:3])
    folder = tmp_path / "hostile"
    folder.mkdir()
    header_end = a.index(b"\n\n")
    (folder / "huge-header.eml").write_bytes(
        a[:header_end] + b"\nX-Junk: " + b"A" * 10_000_000 + a[header_end:]
    )
    (folder / "nul-bytes.eml").write_bytes(b.replace(b"\n\n", b"\n\n\x00\x00", 1) + b"\x00tail")
    (folder / "binary.bin").write_bytes(bytes(range(256)) * 400)
    (folder / "truncated.eml").write_bytes(c[: len(c) // 3])
    (folder / "no-from-line.mbox").write_bytes(c)  # an "mbox" without a From_ line
    notes: list[str] = []
    summary = ingest([folder], settings=_settings(tmp_path), workers=2, on_note=notes.append)
    assert summary.read + summary.problems >= 5
    s = _counts(tmp_path / "store")
    assert s["seen"] == s["messages"] + s["quarantined"]
    assert s["pending"] == 0
    with open_store(tmp_path / "store", read_only=True) as store:
        sources = {
            Path(r[0].split("#")[0]).name
            for r in store.con.execute(
                "SELECT source FROM messages UNION ALL SELECT source FROM quarantine"
            ).fetchall()
        }
        longest = store.con.execute("SELECT max(length(raw)) FROM hops").fetchone()[0]
    assert {"huge-header.eml", "nul-bytes.eml", "binary.bin", "truncated.eml"} <= sources
    assert longest < 1_000_000, "header values are capped before storage"


def test_parse_workers_run_with_the_raised_gc_threshold_and_frozen_parent_objects() -> None:
    import gc

    from trapline.ingest.received import DEFAULT_TRUST
    from trapline.pipeline.pool import WORKER_GC_THRESHOLD, start_pool

    pool = start_pool(2, DEFAULT_TRUST)
    assert pool is not None
    try:
        assert pool.submit(gc.get_threshold).result() == WORKER_GC_THRESHOLD
        assert pool.submit(gc.get_freeze_count).result() > 1000  # the imported parser, frozen
    finally:
        pool.shutdown()
    assert gc.get_threshold() != WORKER_GC_THRESHOLD  # the main process keeps its own settings


def test_parse_workers_yield_the_cpu_to_the_trap_and_readers() -> None:
    """An ingest's parse workers run nicer than the process that starts them, so on a busy
    machine the trap and interactive commands are scheduled first."""
    from trapline.config import DEFAULTS
    from trapline.ingest.received import DEFAULT_TRUST
    from trapline.pipeline.pool import start_pool

    assert DEFAULTS["ingest_worker_nice"] > 0
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    pool = start_pool(2, DEFAULT_TRUST, nice=3)
    assert pool is not None
    try:
        assert pool.submit(os.getpriority, os.PRIO_PROCESS, 0).result() == min(19, mine + 3)
    finally:
        pool.shutdown()
    assert os.getpriority(os.PRIO_PROCESS, 0) == mine


def test_raw_messages_cross_the_worker_pipe_unchanged() -> None:
    import pickle
    from datetime import UTC, datetime
    from multiprocessing.reduction import ForkingPickler

    import trapline.pipeline.pool  # noqa: F401  (registers the reducer)
    from trapline.model import Envelope

    when = datetime(2026, 1, 1, tzinfo=UTC)
    env = Envelope("192.0.2.7", 2525, "helo.example", "a@b.example", ("t@trap.example",), when)
    raws = [RawMessage(b"Subject: a\n\nx", "a.eml"), RawMessage(b"Subject: b\n\ny", "b#3", env)]
    back = pickle.loads(bytes(ForkingPickler.dumps(raws)))
    assert back == raws
    assert back[1].envelope == env and back[1].envelope is not env


def test_a_parse_pool_started_after_in_process_fingerprinting_does_not_hang(
    tmp_path: Path,
) -> None:
    """rensa's thread pool does not survive fork(): after this process has fingerprinted in
    process (one worker), a forked pool would hang at its first signature. The pool must start
    its workers another way then. Run in a child with a time limit, so a regression fails."""
    corpus = shared("mail", "spamassassin-2002", "spam")
    script = (
        "import sys\n"
        "from trapline.config import load_settings\n"
        "from trapline.pipeline.run import ingest\n"
        "for n, workers in enumerate((1, 2)):\n"
        f"    settings = load_settings({{'data_dir': r'{tmp_path}' + f'/s{{n}}',\n"
        "                              'post_ingest_stages': []})\n"
        f"    print(ingest([r'{corpus}'], settings=settings, workers=workers).parsed)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=_cli_env({}), capture_output=True, timeout=90
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.split() == [b"500", b"500"]
