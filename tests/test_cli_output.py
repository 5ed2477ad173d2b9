"""Output people read: show, visits, campaign, query limits, 80 columns, the progress bar.
Real data: the bundled SpamAssassin sample and the shared SpamAssassin corpus."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from rich.console import Console

import trapline.cli.ingest as cli_ingest
from conftest import shared
from trapline.cli.main import cli

ENV = {"TRAPLINE_POST_INGEST_STAGES": "trapline.pipeline.adapters.asn:asn_stage"}


def _run(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--data-dir", str(data_dir), *args], env=ENV)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("out") / "demo"
    assert _run(data, "-q", "demo").exit_code == 0
    return data


def test_show_text_has_the_origin_network(demo: Path) -> None:
    rows = json.loads(
        _run(demo, "query", "select id from messages where origin_asn is not null "
             "order by id limit 1", "--json").stdout
    )  # fmt: skip
    view = json.loads(_run(demo, "show", rows[0]["id"], "--json").stdout)
    text = _run(demo, "show", rows[0]["id"]).stdout
    assert f"AS{view['origin_asn']} {view['origin_as_name']}" in text
    assert view["origin_prefix"] in text and view["routing_snapshot"] in text
    assert "None" not in text


def test_campaign_subjects_as_text_and_templates_decoded(demo: Path) -> None:
    top = json.loads(_run(demo, "campaigns", "--top", "1", "--json").stdout)[0]
    text = _run(demo, "campaign", top["id"]).stdout
    assert "['" not in text  # no Python list repr
    for subject in top["subjects"]:
        assert " ".join(subject.split()) in text
    assert "<d> digits" in text
    assert "%2F" not in text and "%3D" not in text


def test_query_limits_and_counts_on_the_same_stream(demo: Path) -> None:
    capped = _run(demo, "query", "select id from messages", "--limit", "5")
    assert "5 of 322 rows shown (--limit N or --all for more)" in capped.stdout
    assert len(re.findall(r"^ [0-9a-f]{64}", capped.stdout, re.M)) == 5
    default = _run(demo, "query", "select id from messages")
    assert "100 of 322 rows shown" in default.stdout
    every = _run(demo, "query", "select id from messages", "--all")
    assert (
        "322 rows" in every.stdout and len(re.findall(r"^ [0-9a-f]{64}", every.stdout, re.M)) == 322
    )
    as_json = json.loads(_run(demo, "query", "select id from messages", "--json").stdout)
    assert len(as_json) == 322  # machine output is never capped
    one = _run(demo, "query", "select 1 as x")
    assert one.stdout.rstrip().endswith("1 row")


def test_visits_has_headers_or_a_hint(demo: Path) -> None:
    empty = _run(demo, "visits")
    assert empty.exit_code == 0 and "hint: no honeypot visits yet" in empty.stderr


def test_stats_readable_at_80_columns(demo: Path) -> None:
    text = (
        CliRunner()
        .invoke(cli, ["--data-dir", str(demo), "stats"], env={**ENV, "COLUMNS": "80"})
        .stdout
    )
    assert max(len(line) for line in text.splitlines()) <= 80


def test_progress_bar_final_rate_is_the_summarys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=150, color_system=None)
    monkeypatch.setattr(cli_ingest, "_err", console)
    spam = shared("mail", "spamassassin-2002", "spam")
    result = CliRunner().invoke(
        cli, ["--data-dir", str(tmp_path), "ingest", str(spam)],
        env={"TRAPLINE_POST_INGEST_STAGES": ""},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = buf.getvalue()
    summary = re.search(r"(\d+) read, .* \((\d+) msgs/s\)", out)
    assert summary, out[-500:]
    frames = re.findall(r"([\d,]+) msgs · ([\d,-]+) msgs/s", out)
    assert frames and frames[-1] == (summary.group(1), summary.group(2))
    assert frames[0][0] == "0"  # the bar is up (pulsing) before the first batch is stored


def test_campaign_list_one_line_each_at_80_columns(
    demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trapline.cli.campaigns as cli_campaigns

    buf = io.StringIO()
    monkeypatch.setattr(cli_campaigns, "console", lambda **_: Console(width=80, file=buf))
    assert _run(demo, "campaigns", "--top", "5").exit_code == 0
    lines = [line for line in buf.getvalue().splitlines() if line.strip()]
    assert len(lines) == 2 + 5  # header, rule, one line per campaign
    assert max(len(line) for line in lines) <= 80


@pytest.mark.parametrize("by", ["asn", "prefix"])
def test_networks_one_line_per_network_at_80_columns(
    demo: Path, monkeypatch: pytest.MonkeyPatch, by: str
) -> None:
    import trapline.cli.routing as cli_routing

    monkeypatch.setattr(cli_routing, "_out", Console(width=80, file=io.StringIO()))
    buf = cli_routing._out.file
    assert _run(demo, "networks", "--by", by, "--top", "5").exit_code == 0
    lines = [line for line in buf.getvalue().splitlines() if line.strip()]  # type: ignore[attr-defined]
    assert len(lines) == 2 + 5 and max(len(line) for line in lines) <= 80
    assert all(re.match(r"\s*\d\s+AS\d+\s+\S", line) for line in lines[2:])  # rank, AS, a name
    # Every column fits: the last one (days) is whole in the header and on every row.
    assert lines[0].rstrip().endswith("days")
    assert all(re.search(r"\s\d+$", line.rstrip()) for line in lines[2:])
