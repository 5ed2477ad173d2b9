"""Whole real corpora through the real pipeline into a real DuckDB.

Slow-marked (seconds each, not minutes) but part of the default run: these are the tests that
say the spine holds on real data, not on fixtures.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import shared
from test_pipeline import _cli_env
from trapline.pipeline.run import ingest
from trapline.store.duckdb import open_store
from trapline.store.queries import stats
from trapline.store.raw import iter_raw, read_raw

SA_FOLDERS = ("spam", "spam_2", "easy_ham", "easy_ham_2", "hard_ham")


def _settings(data_dir: Path) -> dict[str, Any]:
    return {"data_dir": str(data_dir), "post_ingest_stages": []}


@pytest.fixture(scope="module")
def sa_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    corpus = shared("mail", "spamassassin-2002")
    data_dir = tmp_path_factory.mktemp("sa")
    first = ingest([corpus], settings=_settings(data_dir))
    second = ingest([corpus], settings=_settings(data_dir))
    return data_dir, first, second


@pytest.mark.slow
def test_spamassassin_corpus_is_stored_whole_and_only_once(sa_store: tuple[Path, Any, Any]) -> None:
    data_dir, first, second = sa_store
    assert first.read == 6046 and first.new == 6046
    assert first.parsed + first.quarantined == 6046
    assert (second.new, second.duplicates, second.parsed, second.quarantined) == (0, 6046, 0, 0)
    with open_store(data_dir, read_only=True) as store:
        s = stats(store.con)
        assert s["seen"] == 6046 == s["messages"] + s["quarantined"]
        assert s["pending"] == 0
        blank = store.con.execute(
            "SELECT count(*) FROM quarantine WHERE reason IS NULL OR reason = ''"
        ).fetchone()[0]
        assert blank == 0, "every quarantined message has a reason"
        # Every archived message has exactly one outcome.
        both = store.con.execute(
            "SELECT count(*) FROM messages m JOIN quarantine q ON q.id = m.id"
        ).fetchone()[0]
        assert both == 0


@pytest.mark.slow
def test_every_spamassassin_message_comes_back_byte_identical(
    sa_store: tuple[Path, Any, Any],
) -> None:
    data_dir = sa_store[0]
    corpus = shared("mail", "spamassassin-2002")
    files = {
        hashlib.sha256(p.read_bytes()).hexdigest(): p
        for folder in SA_FOLDERS
        for p in sorted((corpus / folder).iterdir())
    }
    with open_store(data_dir, read_only=True) as store:
        got = {row.id: row.data for row in iter_raw(store.con, sorted(files))}
        assert len(got) == len(files) == 6046
        for mid, path in files.items():
            assert got[mid] == path.read_bytes(), path
        # And the single-message path `show --raw` uses, for a sample.
        for mid in sorted(files)[::500]:
            assert read_raw(store.con, mid) == files[mid].read_bytes()


@pytest.mark.slow
def test_show_raw_through_the_real_cli_is_byte_identical(sa_store: tuple[Path, Any, Any]) -> None:
    data_dir = sa_store[0]
    corpus = shared("mail", "spamassassin-2002")
    picks = [sorted((corpus / f).iterdir())[7] for f in ("spam", "spam_2", "hard_ham")]
    for path in picks:
        data = path.read_bytes()
        prefix = hashlib.sha256(data).hexdigest()[:10]
        out = subprocess.run(
            [sys.executable, "-c", "from trapline.cli.main import cli; cli()",
             "--data-dir", str(data_dir), "show", prefix, "--raw"],
            env=_cli_env({}),
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr.decode()
        assert out.stdout == data


@pytest.mark.slow
@pytest.mark.parametrize(
    "parts",
    [
        ("edge-cases",),
        ("nazario-phishing-2005", "phishing0.mbox"),
        ("nazario-phishing-2005", "phishing1.mbox"),
        ("personal-spam-2023-2025",),
    ],
    ids=["edge-cases", "nazario0", "nazario1", "personal-2023-2025"],
)
def test_other_corpora_ingest_and_balance(parts: tuple[str, ...], tmp_path: Path) -> None:
    source = shared("mail", *parts)
    notes: list[str] = []
    summary = ingest([source], settings=_settings(tmp_path), on_note=notes.append)
    assert summary.read > 0
    assert summary.new + summary.duplicates == summary.read
    with open_store(tmp_path, read_only=True) as store:
        s = stats(store.con)
        raw_rows = store.con.execute("SELECT count(*) FROM raw").fetchone()[0]
    assert raw_rows == summary.new
    assert s["seen"] == raw_rows + s["source_problems"]
    assert s["seen"] == s["messages"] + s["quarantined"], s
    assert s["pending"] == 0
    assert summary.parsed + summary.quarantined == summary.new
