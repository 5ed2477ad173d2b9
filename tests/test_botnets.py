"""Botnets: the generator's bot sets come back; one shared open relay does not merge them."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import shared
from trapline.analyze.botnets import analyze_botnets, list_botnets
from trapline.analyze.campaigns import analyze_campaigns
from trapline.config import load_settings
from trapline.store.duckdb import open_store
from trapline.testing.evaluate import score
from trapline.testing.spamgen import RELAY_IP, SpamGenerator, load_base_spams, pick_distinct
from trapline.testing.spamstore import store_generated

N_BOTNETS = 5


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SpamGenerator, list[Any]]:
    bases = pick_distinct(load_base_spams([shared("mail", "spamassassin-2002", "spam")]))
    gen = SpamGenerator(bases, n_campaigns=35, n_botnets=N_BOTNETS, seed=21, relay_share=0.03)
    msgs = list(gen.messages(3500))
    path = tmp_path_factory.mktemp("botnets")
    with open_store(path) as store:
        store_generated(store.con, msgs)
        analyze_campaigns(store, load_settings({"data_dir": str(path)}))
    return path, gen, msgs


def _run(path: Path, **overrides: Any) -> list[dict[str, Any]]:
    settings = load_settings({"data_dir": str(path), **overrides})
    with open_store(path) as store:
        analyze_botnets(store, settings)
        return list_botnets(store.con, max_hosts=10_000)


def test_botnet_inference_recovers_the_bot_sets(
    world: tuple[Path, SpamGenerator, list[Any]],
) -> None:
    path, gen, msgs = world
    botnets = _run(path)
    assert len(botnets) == N_BOTNETS
    for true_bots in gen.bots:
        used = {m.origin_ip for m in msgs if m.origin_ip in set(true_bots)}
        matches = [b for b in botnets if used & set(b["hosts"])]
        assert len(matches) == 1  # every bot set maps to exactly one inferred botnet ...
        assert set(matches[0]["hosts"]) - {RELAY_IP} == used  # ... with exactly its bots
    with open_store(path, read_only=True) as store:
        got = dict(store.con.execute(
            "SELECT m.id, bc.botnet_id FROM messages m "
            "LEFT JOIN botnet_campaigns bc ON bc.campaign_id = m.campaign_id"
        ).fetchall())  # fmt: skip
    quality = score([m.botnet for m in msgs], [got[m.id] or m.id for m in msgs])
    assert quality.ari >= 0.95, quality


def test_one_shared_open_relay_does_not_merge_botnets(
    world: tuple[Path, SpamGenerator, list[Any]],
) -> None:
    path, _, _ = world
    botnets = _run(path)
    with_relay = [b for b in botnets if RELAY_IP in b["hosts"]]
    assert len(with_relay) >= 2  # the relay carried mail of several botnets ...
    assert len(botnets) == N_BOTNETS  # ... and still joined none of them
    # The rule is what holds them apart: link on a single shared host and the relay merges.
    loose = _run(path, botnet_min_shared_hosts=1, botnet_min_overlap=0.0)
    assert len(loose) < N_BOTNETS


def test_session_fingerprints_link_campaigns_without_shared_ips(tmp_path: Path) -> None:
    """Trap mail: bots on fresh IPs but the same SMTP dialect join through session shapes."""
    con_rows = []
    for camp in ("c1", "c2"):
        for i in range(6):
            mid = f"{camp}-{i}".ljust(64, "0")
            env = {
                "peer_ip": f"10.{len(camp)}.{i}.{ord(camp[1])}",
                "session_fingerprint": f"fp{i % 3}",
            }
            con_rows.append((mid, camp, json.dumps(env)))
    when = datetime(2026, 1, 1)
    with open_store(tmp_path) as store:
        for mid, camp, env in con_rows:
            store.con.execute(
                "INSERT INTO raw (id, size, codec, data, source, ingested_at, envelope) "
                "VALUES (?, 1, 'none', ''::BLOB, 'trap', ?, ?)",
                [mid, when, env],
            )
            store.con.execute(
                "INSERT INTO messages (id, size, received_at, origin_ip, campaign_id, ingested_at) "
                "VALUES (?, 1, ?, ?, ?, ?)",
                [mid, when, json.loads(env)["peer_ip"], camp, when],
            )
        for camp in ("c1", "c2"):
            store.con.execute(
                "INSERT INTO campaigns (id, root_seq, size, first_seen, last_seen, updated_at) "
                "VALUES (?, ?, 6, ?, ?, ?)",
                [camp, 1 if camp == "c1" else 2, when, when, when],
            )
        store.con.execute("INSERT INTO botnet_family_map VALUES ('host', 'smtp:fp1', 'Cutwail')")
        # Feeds (issue "networks"): a bot IP listed with a family, and that family's C&C.
        for kind, indicator, family in (
            ("cc", "203.0.113.9", "Cutwail"),
            ("cc", "192.0.2.77", "Storm"),
            ("harvester", json.loads(con_rows[0][2])["peer_ip"], "Pushdo"),
        ):
            store.con.execute(
                "INSERT INTO feed_indicators (kind, indicator, indicator_type, first_seen, "
                "last_seen, n_sightings, family) VALUES (?, ?, 'ip', ?, ?, 1, ?)",
                [kind, indicator, when, when, family],
            )
        run = analyze_botnets(store, load_settings({"data_dir": str(tmp_path)}))
        botnets = list_botnets(store.con)
    assert run.botnets == 1
    assert botnets[0]["campaigns"] == ["c1", "c2"]
    assert botnets[0]["id"] == "b1"  # named after its oldest campaign
    assert "smtp:fp0" in botnets[0]["hosts"]
    assert botnets[0]["families"] == ["Cutwail", "Pushdo"]  # explicit map + feed family
    assert [c["indicator"] for c in botnets[0]["cc_indicators"]] == ["203.0.113.9"]


def test_botnets_cli_json(world: tuple[Path, SpamGenerator, list[Any]]) -> None:
    from trapline.cli.main import cli

    path, _, msgs = world
    runner = CliRunner()
    res = runner.invoke(cli, ["--data-dir", str(path), "analyze", "botnets"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["--data-dir", str(path), "botnets", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert {"id", "campaigns", "hosts", "messages", "share_by_day"} <= set(rows[0])
    assert sum(r["messages"] for r in rows) <= len(msgs)
    assert all(0 < d["share"] <= 1 for r in rows for d in r["share_by_day"])
