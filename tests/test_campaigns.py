"""Campaigns: real copies join, unrelated spam does not, incremental == scratch, stable ids."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import ROOT, SHARED_DATA, shared
from trapline.analyze.campaign_report import campaign_detail, list_campaigns, resolve_campaign
from trapline.analyze.campaigns import analyze_campaigns
from trapline.analyze.lsh import cluster_matrix
from trapline.config import load_settings
from trapline.fingerprint.signature import FingerprintInput, fingerprint_batch
from trapline.fingerprint.templates import template_hash
from trapline.store.duckdb import open_store
from trapline.testing.evaluate import score
from trapline.testing.spamgen import (
    GenMessage,
    SpamGenerator,
    load_base_spams,
    pick_distinct,
    read_base_spam,
)
from trapline.testing.spamstore import store_generated


@pytest.fixture(scope="module")
def bases() -> list[Any]:
    folder = shared("mail", "spamassassin-2002", "spam")
    return pick_distinct(load_base_spams([folder]))


def _labels(con: Any, msgs: list[GenMessage]) -> list[str]:
    got = dict(con.execute("SELECT id, campaign_id FROM messages").fetchall())
    return [got[m.id] for m in msgs]


def _personalise(raw: bytes, name: str, addr: str, host: str) -> bytes:
    """A spam engine's copy of a real message: new recipient name/address, rotated URLs."""
    text = raw.decode("latin-1")
    text = re.sub(r"(?im)^To:.*$", f"To: {name} <{addr}>", text, count=1)
    text = text.replace("ricardo1", name)
    text = re.sub(r"https?://[^\s\"<>]+", f"http://{host}/c.php?u={name}7731", text)
    return text.encode("latin-1")


def test_real_copies_with_other_names_and_rotated_urls_join_unrelated_do_not(
    tmp_path: Path,
) -> None:
    from trapline.pipeline.run import ingest

    folder = shared("mail", "spamassassin-2002", "spam")
    advert = next(folder.glob("00010.*")).read_bytes()  # real "Dear ricardo1" advert
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.eml").write_bytes(_personalise(advert, "maria", "maria@example.org", "x1.deals.biz"))
    (src / "b.eml").write_bytes(_personalise(advert, "oskar", "oskar@example.net", "qq.best.info"))
    (src / "c.eml").write_bytes(next(folder.glob("00018.*")).read_bytes())  # 419 letter
    (src / "d.eml").write_bytes(next(folder.glob("00138.*")).read_bytes())  # "Teach and Grow Rich"
    settings = load_settings({"data_dir": str(tmp_path / "data")})
    ingest([src], settings=settings, workers=1)
    with open_store(tmp_path / "data") as store:
        run = analyze_campaigns(store, settings)
        rows = dict(store.con.execute("SELECT source, campaign_id FROM messages").fetchall())
    by_name = {Path(k).name: v for k, v in rows.items()}
    assert run.clustered == 4
    assert by_name["a.eml"] == by_name["b.eml"]
    assert len({by_name["a.eml"], by_name["c.eml"], by_name["d.eml"]}) == 3


def test_incremental_runs_equal_a_rebuild_and_keep_ids(tmp_path: Path, bases: list[Any]) -> None:
    gen = SpamGenerator(bases, n_campaigns=30, n_botnets=4, seed=11)
    msgs = list(gen.messages(2500))
    settings = load_settings({"data_dir": str(tmp_path)})
    with open_store(tmp_path) as store:
        for day in range(5):  # five "days" of mail, clustered as they arrive
            store_generated(store.con, msgs[day * 500 : (day + 1) * 500])
            run = analyze_campaigns(store, settings)
            assert run.clustered == 500 and not run.rebuilt
        incremental = _labels(store.con, msgs)
        again = analyze_campaigns(store, settings)
        assert again.clustered == 0  # nothing new: nothing done
        rebuilt = analyze_campaigns(store, settings, rebuild=True)
        assert rebuilt.rebuilt and rebuilt.clustered == 2500
        scratch = _labels(store.con, msgs)
    assert incremental == scratch  # same partition AND same ids
    assert score(incremental, scratch).ari == 1.0
    quality = score([m.campaign for m in msgs], scratch)
    assert quality.f1 >= 0.95, quality


def test_merge_keeps_the_older_id_and_records_the_younger(tmp_path: Path, bases: list[Any]) -> None:
    gen = SpamGenerator(bases, n_campaigns=2, n_botnets=1, seed=5, image_share=0.0)
    msgs = list(gen.messages(60))
    a = [m for m in msgs if m.campaign == 0][:10]
    b = [m for m in msgs if m.campaign == 1][:10]
    settings = load_settings({"data_dir": str(tmp_path)})
    with open_store(tmp_path) as store:
        store_generated(store.con, a)
        analyze_campaigns(store, settings)
        store_generated(store.con, b)
        analyze_campaigns(store, settings)
        ids = _labels(store.con, a + b)
        id_a, id_b = ids[0], ids[-1]
        assert id_a != id_b and len(set(ids)) == 2
        # A copy of B's text that carries A's tracking-URL template, sent in A's time window.
        link = replace(b[0], id="f" * 64, urls=a[0].urls, received_at=a[0].received_at)
        store_generated(store.con, [link])
        run = analyze_campaigns(store, settings)
        assert run.merges == 1
        after = set(_labels(store.con, [*a, *b, link]))
        assert after == {id_a}
        assert resolve_campaign(store.con, id_b) == id_a
        detail = campaign_detail(store.con, id_a[:8])
        assert detail["size"] == 21 and detail["merged_from"] == [id_b]


def test_hand_labelled_real_groups() -> None:
    groups = json.loads((ROOT / "tests/data/campaigns/labels.json").read_text())["groups"]
    paths = [(g["id"], SHARED_DATA / "mail" / p) for g in groups for p in g["files"]]
    if not paths[0][1].exists():
        pytest.skip("shared data not available")
    spams = [read_base_spam(p) for _, p in paths]
    fps = fingerprint_batch(
        [
            FingerprintInput(s.path, s.text, s.subject, tuple((u, None) for u in s.urls))
            for s in spams
        ]
    )
    hashes = [[template_hash(t) for t in ts] for ts in fps.url_templates]
    roots = cluster_matrix(fps.matrix, np.full(len(spams), -1, np.int64), hashes)
    quality = score([g for g, _ in paths], roots)
    assert quality.precision >= 0.95 and quality.recall >= 0.9, quality


def test_cli_lists_and_shows_campaigns(tmp_path: Path, bases: list[Any]) -> None:
    from trapline.cli.main import cli

    msgs = list(SpamGenerator(bases, n_campaigns=8, n_botnets=2, seed=3).messages(400))
    with open_store(tmp_path) as store:
        store_generated(store.con, msgs)
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path)]
    res = runner.invoke(cli, [*base, "analyze", "campaigns", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["clustered"] == 400
    res = runner.invoke(cli, [*base, "campaigns", "--top", "3", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert len(rows) == 3 and rows[0]["size"] >= rows[1]["size"] >= rows[2]["size"]
    for key in ("id", "size", "first_seen", "last_seen", "subjects", "origin_ips"):
        assert key in rows[0]
    res = runner.invoke(cli, [*base, "campaigns", "--since", "2099-01-01", "--json"])
    assert res.exit_code == 0 and json.loads(res.output) == []
    last = max(r["last_seen"] for r in rows)[:10]
    res = runner.invoke(cli, [*base, "campaigns", "--since", last, "--json"])
    assert all(r["last_seen"][:10] >= last for r in json.loads(res.output))
    res = runner.invoke(cli, [*base, "campaign", rows[0]["id"][:10]])
    assert res.exit_code == 0 and rows[0]["id"] in res.output
    res = runner.invoke(cli, [*base, "campaign", "cnothere"])
    assert res.exit_code == 1 and "no campaign" in res.output
    with open_store(tmp_path, read_only=True) as store:
        assert list_campaigns(store.con, top=100, min_size=2)


def test_incremental_equals_rebuild_on_real_corpora(tmp_path: Path) -> None:
    """Two real corpora ingested on two "days": same campaigns as one rebuild over both."""
    from trapline.pipeline.run import ingest

    spam = shared("mail", "spamassassin-2002", "spam")
    spam_2 = shared("mail", "spamassassin-2002", "spam_2")
    settings = load_settings({"data_dir": str(tmp_path)})
    runs = []
    for folder in (spam, spam_2):
        ingest([folder], settings=settings, workers=1)
        with open_store(tmp_path) as store:
            runs.append(analyze_campaigns(store, settings))
    with open_store(tmp_path) as store:
        day_by_day = dict(store.con.execute("SELECT id, campaign_id FROM messages").fetchall())
        analyze_campaigns(store, settings, rebuild=True)
        rebuilt = dict(store.con.execute("SELECT id, campaign_id FROM messages").fetchall())
        sizes = [r[0] for r in store.con.execute("SELECT size FROM campaigns").fetchall()]
    assert [r.clustered for r in runs] == [500, 1396]
    assert day_by_day == rebuilt
    assert sum(sizes) == 1896 and max(sizes) < 100  # no run-away merge of unrelated spam
