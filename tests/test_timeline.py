"""Series from the received time, gaps as gaps, change points and their attribution."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import ruptures
from click.testing import CliRunner

from trapline.analyze.changes import Params, detect, detect_groups
from trapline.analyze.segment import anscombe, binseg_many, pelt, penalty
from trapline.analyze.timeline import series
from trapline.cli.main import cli
from trapline.config import DEFAULTS
from trapline.errors import NotFound, UsageError
from trapline.store.duckdb import open_store

T0 = datetime(2008, 10, 1)


def _fill(path: Path, rows: list[tuple[datetime, str, str | None, str]]) -> None:
    """(received_at, received_at_source, campaign_id, source) rows as stored messages."""
    table = pa.table(
        {
            "id": [f"m{i:06d}" for i in range(len(rows))],
            "source": [r[3] for r in rows],
            "received_at": pa.array([r[0] for r in rows], pa.timestamp("us")),
            "received_at_source": [r[1] for r in rows],
            "date": pa.array([r[0] - timedelta(days=400) for r in rows], pa.timestamp("us")),
            "campaign_id": [r[2] for r in rows],
        }
    )
    with open_store(path) as store:
        store.con.register("_rows", table)
        store.con.execute(
            "INSERT INTO messages (id, source, size, received_at, received_at_source, date, "
            "campaign_id, ingested_at) SELECT id, source, 1, received_at, received_at_source, "
            "date, campaign_id, now() FROM _rows"
        )
        for camp in sorted({c for _, _, c, _ in rows if c}):
            store.con.execute(
                "INSERT INTO campaigns (id, root_seq, size, subjects, updated_at) "
                "VALUES (?, 0, 1, [?], now())",
                [camp, f"subject of {camp}"],
            )


def _daily(levels: list[tuple[int, int, str]], *, source: str = "a.mbox") -> list:
    """``levels``: (days, per day, campaign) blocks laid end to end from T0."""
    out, day = [], 0
    for days, per_day, camp in levels:
        for d in range(days):
            for k in range(per_day):
                at = T0 + timedelta(days=day + d, minutes=k * 1440 // max(1, per_day))
                out.append((at, "received", camp, f"{source}#{len(out)}"))
        day += days
    return out


def test_series_counts_received_time_and_marks_gaps(tmp_path: Path) -> None:
    rows = _daily([(3, 5, "c1")])
    # two silent days, then mail again from a second source: the silence is a gap
    rows += [(T0 + timedelta(days=5, hours=h), "received", "c1", "b.mbox#0") for h in range(4)]
    rows += [(T0 + timedelta(days=9), "date", "c1", "c.mbox")]  # Date: only: left out
    _fill(tmp_path, rows)
    with open_store(tmp_path, read_only=True) as store:
        s = series(store.con, freq="day")
    assert s.values() == [5, 5, 5, None, None, 4]
    assert s.no_received_time == 1
    assert [c.source for c in s.coverage] == ["a.mbox", "b.mbox"]
    data = s.as_dict()
    assert data["gaps"] == [T0 + timedelta(days=3), T0 + timedelta(days=4)]


def test_gap_in_all_sources_is_none_but_a_quiet_group_is_zero(tmp_path: Path) -> None:
    rows = _daily([(2, 4, "c1"), (2, 4, "c2")])
    rows += [(T0 + timedelta(days=6), "received", "c1", "z.mbox#0")]
    _fill(tmp_path, rows)
    with open_store(tmp_path, read_only=True) as store:
        s = series(store.con, by="campaign", freq="day")
    by_id = {g.id: s.values(s.counts[i]) for i, g in enumerate(s.groups)}
    assert by_id["c1"] == [4, 4, 0, 0, None, None, 1]
    assert by_id["c2"] == [0, 0, 4, 4, None, None, 0]


def test_step_found_on_the_day_and_attributed(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rows = []
    for d in range(60):
        for camp, rate in (("big", 60 if d < 30 else 6), ("small", 20)):
            for k in range(int(rng.poisson(rate))):
                rows.append((T0 + timedelta(days=d, seconds=k * 60), "received", camp, "x#1"))
    _fill(tmp_path, rows)
    with open_store(tmp_path, read_only=True) as store:
        s = series(store.con, by="campaign", freq="day")
    found = detect(s)
    assert [c.at for c in found] == [T0 + timedelta(days=30)]
    step = found[0]
    assert step.kind == "drop"
    assert step.relative_change == pytest.approx(-54 / 80, abs=0.06)
    assert step.attribution[0].id == "big" and step.attribution[0].share > 0.9
    assert sum(a.share for a in step.attribution) == pytest.approx(1.0, abs=1e-3)


def test_one_day_burst_is_a_burst(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    rows = []
    for d in range(40):
        for camp, rate in (("base", 30), ("spike", 150 if d == 20 else 0)):
            for k in range(int(rng.poisson(rate))):
                rows.append((T0 + timedelta(days=d, seconds=k * 30), "received", camp, "x#1"))
    _fill(tmp_path, rows)
    with open_store(tmp_path, read_only=True) as store:
        s = series(store.con, by="campaign", freq="day")
    found = detect(s)
    assert [(c.at, c.kind) for c in found] == [
        (T0 + timedelta(days=20), "burst"),
        (T0 + timedelta(days=21), "burst-end"),
    ]
    assert found[0].attribution[0].id == "spike" and found[0].attribution[0].share > 0.9
    per_group = detect_groups(s)
    assert {c.group.id for c in per_group if c.group} == {"spike"}


def test_empty_single_day_and_no_routing_say_what_to_do(tmp_path: Path) -> None:
    runner = CliRunner()
    empty = runner.invoke(cli, ["--data-dir", str(tmp_path), "timeline"])
    assert empty.exit_code == 1 and "trapline ingest" in empty.output
    assert "Traceback" not in empty.output
    _fill(tmp_path, _daily([(1, 10, "c1")]))
    one_day = runner.invoke(cli, ["--data-dir", str(tmp_path), "changes"])
    assert one_day.exit_code == 1 and "at least" in one_day.output
    assert "--freq" in one_day.output
    no_routing = runner.invoke(cli, ["--data-dir", str(tmp_path), "timeline", "--by", "asn"])
    assert no_routing.exit_code == 1 and "routing import" in no_routing.output
    with open_store(tmp_path, read_only=True) as store, pytest.raises(UsageError):
        detect(series(store.con, freq="day"))
    with open_store(tmp_path, read_only=True) as store, pytest.raises(NotFound):
        series(store.con, freq="day", since=datetime(2020, 1, 1))


def test_cli_json_shapes_and_chart(tmp_path: Path) -> None:
    rows = _daily([(10, 20, "c1"), (10, 4, "c1")])
    _fill(tmp_path, rows)
    runner = CliRunner()
    out = runner.invoke(cli, ["--data-dir", str(tmp_path), "changes", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data and set(data[0]) >= {"at", "before", "after", "relative_change", "attribution"}
    assert data[0]["at"] == "2008-10-11T00:00:00Z"
    assert all(set(a) == {"kind", "id", "name", "share"} for a in data[0]["attribution"])
    chart = tmp_path / "v.svg"
    out = runner.invoke(
        cli, ["--data-dir", str(tmp_path), "timeline", "--chart", str(chart), "--json"]
    )
    assert out.exit_code == 0, out.output
    assert chart.read_text().startswith("<svg") and "http://" not in chart.read_text().replace(
        "http://www.w3.org/2000/svg", ""
    )
    assert json.loads(chart.with_suffix(".json").read_text())["total"][:2] == [20, 20]


@pytest.mark.parametrize("seed", range(12))
def test_searches_equal_ruptures(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(12, 150))
    cuts = np.sort(rng.choice(np.arange(1, n), 3, replace=False))
    sizes = np.diff(np.r_[0, cuts, n])
    y = np.concatenate(
        [rng.poisson(lv, sz) for lv, sz in zip(rng.choice([2, 9, 40], 4), sizes, strict=True)]
    )
    z = anscombe(y)
    pen = float(penalty(z, float(DEFAULTS["changes_penalty_beta"]))[0])
    for min_size in (1, 2):
        ref = ruptures.Pelt(model="l2", min_size=min_size, jump=1).fit(z).predict(pen=pen)
        assert pelt(z, pen, min_size) == ref
        ref = ruptures.Binseg(model="l2", min_size=min_size, jump=1).fit(z).predict(pen=pen)
        assert binseg_many(np.vstack([z, z[::-1]]), np.array([pen, pen]), min_size)[0] == ref


def test_params_come_from_settings() -> None:
    p = Params.from_settings({"changes_penalty_beta": 5})
    assert p.beta == 5.0 and p.top == DEFAULTS["changes_attribution_top"]


def test_spam_only_by_default_and_ham_still_proves_coverage(tmp_path: Path) -> None:
    rows = _daily([(1, 3, "c1"), (1, 2, "c2"), (1, 3, "c1")])
    _fill(tmp_path, rows)
    with open_store(tmp_path) as store:
        # the middle day's mail was ham: no spam that day, but collection was running
        store.con.execute(
            "UPDATE messages SET label = 'ham' WHERE received_at::DATE = DATE '2008-10-02'"
        )
    with open_store(tmp_path, read_only=True) as store:
        spam = series(store.con, freq="day")
        everything = series(store.con, freq="day", label="all")
        ham = series(store.con, freq="day", label="ham")
    assert spam.values() == [3, 0, 3]
    assert everything.values() == [3, 2, 3]
    assert ham.values() == [0, 2, 0]
