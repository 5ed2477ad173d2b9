"""The McColo replay end to end: built, ingested through the ordinary pipeline, analysed.

One replay per session (module fixture): 6,000 messages keep the suite fast while each day
still holds ~60 messages before the drop, so the measured step is not sampling noise.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import shared
from trapline.analyze.changes import detect
from trapline.analyze.timeline import series
from trapline.cli.main import cli
from trapline.store.duckdb import open_store

ROUTING = Path(__file__).resolve().parent.parent / "src/trapline/data/routing"
SEED, MESSAGES = 7, 6000


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    corpus = shared("mail")
    out = tmp_path_factory.mktemp("mccolo")
    data = tmp_path_factory.mktemp("store")
    _run("replay", "mccolo", "--out", str(out), "--seed", str(SEED),
         "--messages", str(MESSAGES), "--corpus", str(corpus))  # fmt: skip
    d = ["--data-dir", str(data), "-q"]
    _run(*d, "routing", "import", str(ROUTING / "ipasn_20080501_v12.dat.gz"))
    _run(*d, "ingest", str(out / "replay.mbox"))
    _run(*d, "feeds", "import", str(out / "feeds.csv"))
    _run(*d, "analyze", "campaigns")
    _run(*d, "analyze", "botnets")
    truth = json.loads((out / "truth.json").read_text())
    return {"out": out, "data": data, "truth": truth, "corpus": corpus}


def test_truth_has_exactly_the_documented_keys(replay: dict[str, Any]) -> None:
    truth = replay["truth"]
    assert set(truth) == {"drop_at", "drop_share", "mccolo_botnets", "botnet_of"}
    assert truth["drop_at"] == "2008-11-11T21:30:00Z"
    assert 0.5 < truth["drop_share"] < 0.8
    assert set(truth["mccolo_botnets"]) == {"Srizbi", "Rustock", "Mega-D", "Asprox"}
    with open_store(replay["data"], read_only=True) as store:
        ids = {r[0] for r in store.con.execute("SELECT id FROM messages").fetchall()}
    assert ids == set(truth["botnet_of"]) and len(ids) == MESSAGES


def test_every_message_says_it_is_a_replay(replay: dict[str, Any]) -> None:
    text = (replay["out"] / "replay.mbox").read_bytes()
    assert text.count(b"\nX-Trapline-Replay: synthetic McColo 2008 replay") == MESSAGES
    assert (replay["out"] / "README.md").read_text().startswith("# McColo 2008 replay (synthetic)")


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    corpus = str(shared("mail", "spamassassin-2002", "spam"))
    a, b = tmp_path / "a", tmp_path / "b"
    for out, seed in ((a, 3), (b, 3)):
        _run("replay", "mccolo", "--out", str(out), "--seed", str(seed), "--messages", "600",
             "--corpus", corpus)  # fmt: skip
    for name in ("replay.mbox", "feeds.csv", "truth.json"):
        digest = [hashlib.sha256((d / name).read_bytes()).hexdigest() for d in (a, b)]
        assert digest[0] == digest[1], name
    _run("replay", "mccolo", "--out", str(tmp_path / "c"), "--seed", "4", "--messages", "600",
         "--corpus", corpus)  # fmt: skip
    assert (tmp_path / "c/replay.mbox").read_bytes() != (a / "replay.mbox").read_bytes()


def test_the_takedown_step_is_found_sized_and_attributed(replay: dict[str, Any]) -> None:
    truth = replay["truth"]
    drop_at = datetime.fromisoformat(truth["drop_at"].replace("Z", ""))
    with open_store(replay["data"], read_only=True) as store:
        found = detect(series(store.con, by="botnet", freq="day"))
    near = [c for c in found if abs((c.at - drop_at).total_seconds()) <= 86400]
    assert len(near) == 1, found
    step = near[0]
    assert step.kind == "drop"
    assert step.relative_change is not None
    assert abs(-step.relative_change - truth["drop_share"]) <= 0.05
    mccolo = set(truth["mccolo_botnets"])
    explained = sum(
        a.share for a in step.attribution if set(a.name.split("+")) <= mccolo and a.kind == "botnet"
    )
    assert explained >= 0.8, step.attribution
