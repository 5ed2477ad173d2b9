"""Every batch size stores the same thing: a property over real corpora.

A batch is gathered from several worker chunks and merged before its one write transaction; a
chunk whose messages carry no URLs once gave an Arrow column of a different type and the merge
crashed (``--batch-size 200`` on SpamAssassin ``easy_ham``). Whatever the batch size, including
1, the store must end up identical to a single-batch run.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import shared
from trapline.config import DEFAULTS
from trapline.pipeline.run import ingest
from trapline.store.duckdb import open_store

N_PLAIN, N_SPAM = 60, 30


def _has_url(data: bytes) -> bool:
    low = data.lower()
    return b"http" in low or b"www." in low


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real mail in reading order: easy_ham files without any URL first (a whole worker chunk
    of them is the case that crashed), then spam with URLs, then the malformed edge cases
    (quarantine rows in the same batches)."""
    dest = tmp_path_factory.mktemp("corpus")
    ham = shared("mail", "spamassassin-2002", "easy_ham")
    plain = [p for p in sorted(ham.iterdir()) if not _has_url(p.read_bytes())][:N_PLAIN]
    spam = [p for p in sorted(shared("mail", "spamassassin-2002", "spam").iterdir())]
    for folder, files in (("a_plain", plain), ("b_spam", spam[:N_SPAM])):
        (dest / folder).mkdir()
        for p in files:
            shutil.copyfile(p, dest / folder / p.name)
    edge = shared("mail", "edge-cases", "mail-parser")
    (dest / "c_edge").mkdir()
    for p in sorted(edge.glob("mail_*")):
        shutil.copyfile(p, dest / "c_edge" / p.name)
    return dest


def _dump(data_dir: Path) -> dict[str, Any]:
    with open_store(data_dir, read_only=True) as store:
        q = store.con.execute
        return {
            "messages": q(
                "SELECT id, subject, n_urls, n_hops FROM messages ORDER BY id"
            ).fetchall(),
            "quarantine": q("SELECT id, reason FROM quarantine ORDER BY id, reason").fetchall(),
            "signatures": q(
                "SELECT message_id, minhash, url_templates, subject_template FROM signatures "
                "ORDER BY message_id"
            ).fetchall(),
            "urls": q("SELECT message_id, url FROM urls ORDER BY ALL").fetchall(),
        }


def _run(corpus: Path, data_dir: Path, batch_size: int) -> dict[str, Any]:
    cfg = {**DEFAULTS, "data_dir": str(data_dir), "post_ingest_stages": []}
    summary = ingest([corpus], settings=cfg, workers=2, batch_size=batch_size)
    assert summary.read == summary.new
    return _dump(data_dir)


@pytest.fixture(scope="module")
def reference(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    dump = _run(corpus, tmp_path_factory.mktemp("ref"), 10_000)
    # The property is only worth something if the corpus has both kinds of batch.
    with_urls = [row for row in dump["signatures"] if row[2]]
    assert with_urls and len(with_urls) < len(dump["signatures"])
    assert len(dump["messages"]) >= N_PLAIN + N_SPAM
    return dump


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [1, 2, 100, 200])
def test_named_batch_sizes_store_the_same(
    corpus: Path, reference: dict[str, Any], tmp_path: Path, batch_size: int
) -> None:
    assert _run(corpus, tmp_path / "store", batch_size) == reference


@pytest.mark.slow
@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batch_size=st.integers(min_value=1, max_value=N_PLAIN + N_SPAM + 20))
def test_any_batch_size_stores_the_same(
    corpus: Path,
    reference: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
    batch_size: int,
) -> None:
    assert _run(corpus, tmp_path_factory.mktemp("bs"), batch_size) == reference
