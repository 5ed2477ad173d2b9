"""The Spark job against the local ingest, on the real SpamAssassin corpus, in local[2].

One Spark session for the module (starting the JVM is the expensive part). The routing snapshot
is the real 2008 RouteViews table, imported once into the store whose snapshots the job uses.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from click.testing import CliRunner
from pyarrow import fs

from conftest import shared
from s3_helpers import client, s3_server, upload
from trapline.cli.main import cli
from trapline.config import load_settings
from trapline.distributed import splits
from trapline.distributed.task import DAY
from trapline.ingest.mbox import split_mbox
from trapline.model import RawMessage
from trapline.store.duckdb import open_store

# CI (.ci/run) sets TRAPLINE_REQUIRE_SPARK=1: there a missing PySpark, Java or moto fails
# the suite instead of skipping the Spark tests.
REQUIRED = os.environ.get("TRAPLINE_REQUIRE_SPARK") == "1"
JAVA = "Spark needs Java 17 (apt-get install openjdk-17-jre-headless)"
if REQUIRED and (shutil.which("java") is None or importlib.util.find_spec("pyspark") is None):
    pytest.fail(f"TRAPLINE_REQUIRE_SPARK=1: {JAVA} and pip install -e '.[test]'", pytrace=False)
pyspark = pytest.importorskip("pyspark")
if shutil.which("java") is None:
    pytest.skip(JAVA, allow_module_level=True)

# Columns that say when a row was written, not what was read (they differ between any two runs),
# and what later analyses fill in (campaigns: compared in the analysis test).
RUN_TIME = {
    "ingested_at",
    "logged_at",
    "enriched_at",
    "computed_at",
    "seq",
    "campaign_seq",
    "campaign_id",
}


def _run(data: Path, *args: str) -> Any:
    result = CliRunner().invoke(cli, ["--data-dir", str(data), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def stop_jvm(spark: Any) -> None:
    """Stop the session and the JVM this process started (it holds ~1 GB for the rest of the
    suite otherwise); only the process PySpark launched, by its handle."""
    from pyspark import SparkContext

    spark.stop()
    gateway = SparkContext._gateway
    if gateway is None:
        return
    proc = getattr(gateway, "proc", None)
    gateway.shutdown()
    SparkContext._gateway = None
    SparkContext._jvm = None
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def s3() -> Iterator[str | None]:
    """An S3 endpoint on 127.0.0.1 (``s3_helpers``); None when moto is not installed.

    Started before the Spark session, so its executors inherit the (fake) credentials and the
    switch that keeps the AWS client off the EC2 metadata address: no request leaves loopback.
    """
    try:
        import moto.server  # noqa: F401
    except ImportError:
        if REQUIRED:
            pytest.fail("TRAPLINE_REQUIRE_SPARK=1: pip install -e '.[dev]' (moto[server])")
        yield None
        return
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def spark_session(s3: str | None) -> Any:
    from trapline.distributed.spark import session

    spark = session("local[2]", "trapline-tests")
    yield spark
    stop_jvm(spark)


@pytest.fixture(scope="module")
def corpus_runs(tmp_path_factory: pytest.TempPathFactory, spark_session: Any) -> dict[str, Path]:
    """The corpus ingested twice into the same routing: locally, and by the Spark job."""
    from trapline.distributed import spark as job

    base = tmp_path_factory.mktemp("spark")
    data = base / "local"
    routing = shared("routing", "routeviews-pyasn", "ipasn_20080501_v12.dat.gz")
    _run(data, "routing", "import", str(routing))
    corpus = shared("mail", "spamassassin-2002")
    # One parse worker: the local processing order (signatures.seq) is then the reading order,
    # as in the Spark job, so campaign partitions are comparable.
    _run(data, "-q", "ingest", "--workers", "1", str(corpus))
    _run(data, "-q", "analyze", "campaigns")
    out = base / "parquet"
    summary = job.ingest(
        spark_session,
        [str(corpus)],
        str(out),
        settings=load_settings({"data_dir": str(data)}),
        data_dir=data,
        target_bytes=4 << 20,  # several tasks, so the two executors share the corpus
    )
    assert summary.splits >= 4 and summary.task_errors == 0
    assert summary.snapshots == ("ipasn_20080501_v12@2008-05-01",)
    return {"local": data, "parquet": out}


def _parquet(out: Path, table: str) -> str:
    return f"read_parquet('{out / table}/**/*.parquet', hive_partitioning = true)"


def _compare(con: duckdb.DuckDBPyConnection, table: str, out: Path) -> tuple[int, int, int]:
    cols = [
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_catalog = 'l' "
            "AND table_name = ? ORDER BY ordinal_position",
            [table],
        ).fetchall()
    ]
    keep = ", ".join(f'"{c}"' for c in cols if c not in RUN_TIME)
    local = f"SELECT {keep} FROM l.{table}"
    remote = f"SELECT {keep} FROM {_parquet(out, table)}"
    (n_local,) = con.execute(f"SELECT count(*) FROM ({local})").fetchone() or (0,)
    (only_local,) = con.execute(
        f"SELECT count(*) FROM ({local} EXCEPT ALL {remote})"
    ).fetchone() or (0,)
    (only_remote,) = con.execute(
        f"SELECT count(*) FROM ({remote} EXCEPT ALL {local})"
    ).fetchone() or (0,)
    return n_local, only_local, only_remote


@pytest.mark.slow
def test_spark_job_equals_the_local_ingest_row_for_row(corpus_runs: dict[str, Path]) -> None:
    out = corpus_runs["parquet"]
    con = duckdb.connect()
    con.execute(f"ATTACH '{corpus_runs['local'] / 'trapline.duckdb'}' AS l (READ_ONLY)")
    # Every table the ingest fills, every column but the write times: ids, origin IPs, ASNs,
    # prefixes and snapshots (messages, ip_routing), fingerprints (signatures), raw bytes.
    for table in (
        "messages",
        "raw",
        "hops",
        "urls",
        "recipients",
        "attachments",
        "signatures",
        "ip_routing",
    ):
        n, only_local, only_spark = _compare(con, table, out)
        assert n > 0 and only_local == 0 and only_spark == 0, (table, n, only_local, only_spark)
    (mapped,) = con.execute(
        f"SELECT count(*) FROM {_parquet(out, 'messages')} WHERE origin_asn IS NOT NULL"
    ).fetchone() or (0,)
    assert mapped > 4000  # the 2008 table maps most origins of 2002 mail
    # The files carry exactly the store's types (the partition column is only in the path).
    for table in ("messages", "signatures", "raw"):
        want = con.execute(f"DESCRIBE l.{table}").fetchall()
        got = con.execute(
            f"DESCRIBE SELECT * FROM read_parquet('{out / table}/*/*.parquet', hive_partitioning = false)"
        ).fetchall()
        assert [(c[0], c[1]) for c in got] == [(c[0], c[1]) for c in want], table
    days = {p.name for p in (out / "messages").iterdir()}
    local_days = con.execute(
        "SELECT DISTINCT coalesce(strftime(received_at, '%Y-%m-%d'), "
        "'__HIVE_DEFAULT_PARTITION__') FROM l.messages"
    ).fetchall()
    assert days == {f"received_day={d}" for (d,) in local_days} and len(days) > 100


def test_mbox_ranges_split_into_the_same_messages_as_the_whole_file() -> None:
    path = shared("mail", "nazario-phishing-2005", "phishing1.mbox")
    plan = splits.plan([str(path)], 200_000)
    assert len(plan.splits) > 3 and all(s.is_range for s in plan.splits)
    data = path.read_bytes()
    whole = [r.data for r in split_mbox([data], "x", mode="mbox") if isinstance(r, RawMessage)]
    pieces = [
        r.data for s in plan.splits for r in splits.read_split(s) if isinstance(r, RawMessage)
    ]
    assert pieces == whole and len(whole) == 456


def test_bad_input_is_quarantined_and_the_job_completes(tmp_path: Path, spark_session: Any) -> None:
    from trapline.distributed import spark as job

    inputs = tmp_path / "in"
    inputs.mkdir()
    spam = shared("mail", "spamassassin-2002", "spam")
    for f in sorted(spam.iterdir())[:30]:
        shutil.copy(f, inputs / f.name)
    good = (sorted(spam.iterdir())[30]).read_bytes()
    (inputs / "empty.eml").write_bytes(b"")
    (inputs / "junk.bin").write_bytes(bytes(range(256)) * 64)  # binary, no headers
    (inputs / "cut.eml.gz").write_bytes(gzip.compress(good)[:200])  # truncated archive
    (inputs / "twice.eml").write_bytes(
        (inputs / sorted(p.name for p in inputs.iterdir())[0]).read_bytes()
    )
    out = tmp_path / "out"
    summary = job.ingest(
        spark_session, [str(inputs)], str(out), settings=load_settings({}), target_bytes=20_000
    )
    assert summary.task_errors == 0
    assert summary.messages == 30 and summary.duplicates == 1
    con = duckdb.connect()
    reasons = dict(
        con.execute(
            f"SELECT reason, count(*) FROM read_parquet('{out}/quarantine/*.parquet') GROUP BY 1"
        ).fetchall()
    )
    assert reasons.get("empty-file") == 1 and reasons.get("truncated-archive") == 1
    assert sum(reasons.values()) == summary.quarantined + summary.problems >= 3
    (raw_n,) = con.execute(f"SELECT count(*) FROM {_parquet(out, 'raw')}").fetchone() or (0,)
    assert raw_n == summary.messages + summary.quarantined  # nothing parsed is lost
    manifest = json.loads((out / "_trapline.json").read_text())
    assert manifest["tables"]["messages"]["rows"] == 30


def _few(tmp_path: Path, n: int = 3) -> Path:
    """A folder of ``n`` real spam messages, for runs that check options, not the ingest."""
    inputs = tmp_path / "few"
    inputs.mkdir()
    for f in sorted(shared("mail", "spamassassin-2002", "spam").iterdir())[:n]:
        shutil.copy(f, inputs / f.name)
    return inputs


def test_spark_conf_reaches_the_session_and_a_running_session_is_kept(
    spark_session: Any, tmp_path: Path
) -> None:
    """``--conf`` settings are set on the session the command runs in; a session that ran
    before the command (here the tests') is left running after it."""
    key = "spark.sql.shuffle.partitions"
    before = spark_session.conf.get(key)
    try:
        result = _run(
            tmp_path / "store",
            "spark",
            "ingest",
            str(_few(tmp_path)),
            "--out",
            str(tmp_path / "out"),
            "--conf",
            f"{key}=3",
            "--conf",
            "spark.trapline.test=a=b",
        )
        assert "3 read, 3 stored" in result.output and "no routing snapshot" in result.output
        assert spark_session.conf.get(key) == "3"
        assert spark_session.conf.get("spark.trapline.test") == "a=b"  # split at the first =
        assert spark_session.range(5).count() == 5  # still running
    finally:
        spark_session.conf.set(key, before)


def test_the_spark_submit_entry_takes_the_cli_commands_and_the_configured_store(
    spark_session: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """``job.py`` (what spark-submit runs) is ``trapline spark ingest|analyze``: same options,
    the configured store by default, ``--data-dir`` also after the command; in the running
    session (spark-submit's, here the tests')."""
    from trapline.distributed import job

    store = tmp_path / "store"
    _run(
        store,
        "routing",
        "import",
        str(shared("routing", "routeviews-pyasn", "ipasn_20080501_v12.dat.gz")),
    )
    monkeypatch.setenv("TRAPLINE_DATA_DIR", str(store))
    out = tmp_path / "out"
    args = ["ingest", str(_few(tmp_path)), "--out", str(out), "--label", "ham", "--no-dedupe"]
    assert job.main([*args, "--split-mb", "1", "--conf", "spark.sql.shuffle.partitions=8"]) == 0
    printed = capsys.readouterr().out
    assert "3 read, 3 stored" in printed and "no routing snapshot" not in printed
    manifest = json.loads((out / "_trapline.json").read_text())
    assert manifest["routing_snapshots"] == ["ipasn_20080501_v12@2008-05-01"]
    labels = (
        duckdb.connect()
        .execute(f"SELECT DISTINCT label FROM read_parquet('{out}/messages/*/*.parquet')")
        .fetchall()
    )
    assert labels == [("ham",)]
    monkeypatch.delenv("TRAPLINE_DATA_DIR")
    results = tmp_path / "results"
    assert job.main(["analyze", str(out), "--out", str(results), "--data-dir", str(store)]) == 0
    assert "0 networks ranked" in capsys.readouterr().out  # spam only, and these are ham
    assert (results / "networks.json").exists()
    assert job.main(["ingest", str(out), "--out", str(out)]) == 1  # an error, said in one line
    assert "not empty" in capsys.readouterr().err
    assert spark_session.range(3).count() == 3  # the running session stays up


@pytest.fixture(scope="module")
def attached(corpus_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new store with the routing of the local one, reading the Spark dataset in place."""
    data = tmp_path_factory.mktemp("attached") / "store"
    routing = shared("routing", "routeviews-pyasn", "ipasn_20080501_v12.dat.gz")
    _run(data, "routing", "import", str(routing))
    result = _run(data, "attach", "parquet", str(corpus_runs["parquet"]), "--json")
    rows = {a["table"]: a["rows"] for a in json.loads(result.stdout)}
    assert rows["messages"] == 6046 and rows["hops"] > 6046
    return data


def test_attach_parquet_lets_local_commands_read_the_spark_output(
    corpus_runs: dict[str, Path], attached: Path
) -> None:
    data = attached
    local = json.loads(_run(corpus_runs["local"], "stats", "--json").stdout)
    remote = json.loads(_run(data, "stats", "--json").stdout)
    for key in ("messages", "top_networks", "date_range"):
        if key in local:
            assert remote[key] == local[key], key
    nets_local = json.loads(_run(corpus_runs["local"], "networks", "--top", "10", "--json").stdout)
    nets_remote = json.loads(_run(data, "networks", "--top", "10", "--json").stdout)
    assert [n["asn"] for n in nets_remote] == [n["asn"] for n in nets_local]
    assert [n["score"] for n in nets_remote] == [n["score"] for n in nets_local]
    with open_store(data, read_only=True) as store:
        (n,) = store.con.execute("SELECT count(*) FROM messages").fetchone() or (0,)
    assert n == 6046
    # A store that already holds mail is not overlaid.
    busy = CliRunner().invoke(
        cli,
        ["--data-dir", str(corpus_runs["local"]), "attach", "parquet", str(corpus_runs["parquet"])],
    )
    assert busy.exit_code == 1 and "already holds" in busy.output


def _dashboard(client: httpx.Client, mid: str, asn: int) -> dict[str, Any]:
    """What the dashboard's API shows of a store, minus what only analyses fill in."""
    overview = client.get("/api/v1/overview").json()
    totals = {k: v for k, v in overview["totals"].items() if k not in ("campaigns", "botnets")}
    detail = client.get(f"/api/v1/messages/{mid}").json()
    detail.pop("ingested_at")
    found, cursor = [], None
    while True:  # keyset pages through every message of the network
        params: dict[str, Any] = {"asn": asn, "limit": 40, "count": 1}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/v1/messages", params=params).json()
        found += [(m["id"], page["total"]) for m in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    return {
        "totals": totals,
        "volume": overview["volume"],
        "top_networks": overview["top_networks"],
        "networks": client.get("/api/v1/networks", params={"top": 20}).json(),
        "network": {  # its dossier, but campaigns: only the local store has clustered them
            k: v
            for k, v in client.get(f"/api/v1/networks/AS{asn}").json().items()
            if k not in ("generated_at", "campaigns")
        },
        "message": detail,
        "raw": client.get(f"/api/v1/messages/{mid}/raw").content,
        "search": found,
        "timeline": client.get("/api/v1/timeline", params={"by": "asn", "freq": "week"}).json(),
    }


def test_dashboard_shows_an_attached_spark_dataset_as_the_local_store(
    corpus_runs: dict[str, Path], attached: Path
) -> None:
    """The web server over the attached dataset answers as over the store the local ingest
    filled: overview, networks, message detail, search pages, timeline; pages render."""
    from playwright.sync_api import sync_playwright

    from web_helpers import start_server

    with open_store(attached, read_only=True) as store:
        # The top network's newest message with hops: the first of its list page.
        mid, asn = store.con.execute(
            "SELECT id, origin_asn FROM messages WHERE n_hops > 2 AND origin_asn IN (SELECT "
            "origin_asn FROM messages GROUP BY 1 ORDER BY count(*) DESC LIMIT 1) "
            "ORDER BY received_at DESC NULLS LAST, id DESC LIMIT 1"
        ).fetchone() or ("", 0)
    seen: dict[str, dict[str, Any]] = {}
    for name, folder in (("local", corpus_runs["local"]), ("spark", attached)):
        store = open_store(folder)
        server = start_server(store, load_settings({"data_dir": str(folder)}))
        try:
            with httpx.Client(
                base_url=server.base, headers=server.headers("analyst"), timeout=600
            ) as client:
                seen[name] = _dashboard(client, mid, asn)
                for path, text in (
                    ("/", "6,046"),
                    ("/networks", f"AS{asn}"),
                    (f"/messages/{mid}", seen[name]["message"]["origin_ip"]),
                    (f"/messages?asn={asn}", f'href="/messages/{mid}"'),
                ):
                    page = client.get(path)
                    assert page.status_code == 200 and text in page.text, (name, path)
            if name == "spark":
                _overview_renders(sync_playwright, server.base, server.keys["analyst"])
        finally:
            server.stop()
            store.close()
    spark, local = seen["spark"], seen["local"]
    assert spark["totals"]["messages"] == 6046 and len(spark["search"]) > 40
    for key in local:
        assert spark[key] == local[key], key


def _overview_renders(playwright: Any, base: str, key: str) -> None:
    """The overview in headless Chromium: signed in, chart drawn, no console errors."""
    with playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
        )
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(base + "/")
            page.fill("input[name=key]", key)
            page.click("button[type=submit]")
            page.wait_for_url(base + "/")
            page.wait_for_selector(".chart canvas", timeout=30_000)
            box = page.locator(".chart canvas").first.bounding_box()
            assert box is not None and box["width"] > 200 and box["height"] > 100
            assert errors == [], errors
        finally:
            browser.close()


def test_spark_analysis_equals_the_local_analyses(
    corpus_runs: dict[str, Path], spark_session: Any, tmp_path: Path
) -> None:
    from trapline.analyze.networks import network_scores
    from trapline.analyze.timeline import series
    from trapline.distributed import analyze
    from trapline.store.queries import plain_value

    data = corpus_runs["local"]
    settings = load_settings({"data_dir": str(data)})
    out = tmp_path / "results"
    result = analyze.run(
        spark_session, str(corpus_runs["parquet"]), str(out), settings=settings, data_dir=data
    )
    # Network ranking: network_scores itself, its SQL run by Spark through the dialect layer.
    with open_store(data, read_only=True) as store:
        local_nets = [s.as_dict() for s in network_scores(store, settings)]
        local_daily = plain_value(series(store.con, by="asn", freq="day").as_dict())
        # The timeline module's own SQL on Spark, through the dialect layer, for another shape.
        spark_weekly = series(analyze.dataset_connection(spark_session, store), freq="week")
        local_weekly = series(store.con, freq="week")
        local_members = store.con.execute(
            "SELECT id, campaign_id FROM messages WHERE campaign_id IS NOT NULL"
        ).fetchall()
    assert len(local_nets) > 100
    assert json.loads(json.dumps(result.networks, default=str)) == json.loads(
        json.dumps(local_nets, default=str)
    )
    assert json.loads((out / "networks.json").read_text())[0]["asn"] == local_nets[0]["asn"]
    # Timeline: analyze.timeline.series on both engines; same periods, counts and gaps.
    assert json.loads((out / "timeline.json").read_text()) == json.loads(json.dumps(local_daily))
    assert result.timeline["by"] == "asn" and len(result.timeline["groups"]) > 100
    assert result.timeline["gaps"] and None in result.timeline["total"]  # gaps stay gaps
    assert spark_weekly.as_dict() == local_weekly.as_dict()
    assert spark_weekly.no_received_time == local_weekly.no_received_time
    con = duckdb.connect()
    # Campaigns: the same partition, and the same ids (the root member's id).
    spark_members = con.execute(
        f"SELECT message_id, campaign_id FROM read_parquet('{out}/campaign_members/*.parquet')"
    ).fetchall()
    assert len(spark_members) == len(local_members) == result.clustered

    def partition(rows: list[tuple[str, str]]) -> set[frozenset[str]]:
        groups: dict[str, set[str]] = {}
        for mid, cid in rows:
            groups.setdefault(cid, set()).add(mid)
        return {frozenset(g) for g in groups.values()}

    assert partition(spark_members) == partition(local_members)
    assert sorted(spark_members) == sorted(local_members)
    assert result.campaigns == len({c for _, c in local_members}) < len(local_members)


def test_object_store_paths_fail_with_what_to_do(spark_session: Any) -> None:
    """Without a connector or a known scheme, each path fails with what to do."""
    from trapline.distributed import spark as job
    from trapline.errors import ObjectStoreError, SourceError

    # Spark reads s3a:// through Hadoop: without hadoop-aws, say which package to add.
    with pytest.raises(ObjectStoreError, match=r"--packages org\.apache\.hadoop:hadoop-aws:\d"):
        job.read_parquet(spark_session, "s3a://bucket/trapline/messages")
    with pytest.raises(ObjectStoreError, match="cannot write nosuch://bucket/out"):
        job.check_output("nosuch://bucket/out")
    # Inputs: a scheme pyarrow has no filesystem for is refused before Spark starts.
    result = CliRunner().invoke(cli, ["spark", "ingest", "nosuch://bucket/spam/", "--out", "x"])
    assert result.exit_code == 1
    assert "cannot open nosuch:// URIs" in result.output and "s3a://" in result.output
    with pytest.raises(SourceError, match=r"2009-\*/\*\.mbox: nothing matches the pattern"):
        splits.plan([f"file://{shared('mail')}/2009-*/*.mbox"], 1 << 20)


# --- inputs given as URIs ------------------------------------------------------------------------

BUCKET = "trapline-test"


def _mbox_head(path: Path, messages: int) -> bytes:
    """The first ``messages`` messages of a real mbox, cut at a separator line."""
    data = path.read_bytes()
    cuts = [m.start() + 1 for m in re.finditer(rb"\n\nFrom ", data)]
    return data[: cuts[messages - 1] + 1]


def _nested_corpus(base: Path) -> Path:
    """Real mail in a dated layout: a gzipped mbox, a plain mbox cut into ranges, .eml files
    whose names have spaces and punctuation, and a hidden file a pattern must not match."""
    nazario = shared("mail", "nazario-phishing-2005")
    for month in ("2008-01", "2008-02", "2008-03"):
        (base / month).mkdir(parents=True)
    (base / "2008-01" / "a.mbox.gz").write_bytes(
        gzip.compress(_mbox_head(nazario / "phishing0.mbox", 20))
    )
    (base / "2008-02" / "b.mbox").write_bytes(_mbox_head(nazario / "phishing1.mbox", 30))
    for f in sorted(shared("mail", "personal-spam-2023-2025", "2023").iterdir())[:5]:
        shutil.copy(f, base / "2008-03" / f.name)
    (base / "2008-03" / ".hidden.eml").write_bytes(b"not mail")
    return base


SPLIT = 80_000  # bytes per task: the plain mbox is cut into ranges read by offset


def _table(out: str, name: str, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """A table of a job's output (a folder or an s3a:// URI), its rows in a stable order,
    without write times and source names (which name the input as given)."""
    import pyarrow.dataset as ds
    from pyarrow import fs

    from trapline.distributed.task import filesystem_for
    from trapline.objectstores import ObjectStores

    filesystem, base = filesystem_for(out, ObjectStores.from_settings(settings))
    table = ds.dataset(
        f"{base}/{name}",
        filesystem=filesystem or fs.LocalFileSystem(),
        format="parquet",
        partitioning="hive",
    ).to_table()
    drop = {"ingested_at", "logged_at", "enriched_at", "computed_at", "source"}
    rows = table.select([c for c in table.column_names if c not in drop]).to_pylist()
    return sorted(rows, key=lambda r: json.dumps(r, default=str, sort_keys=True))


@pytest.fixture(scope="module")
def nested(tmp_path_factory: pytest.TempPathFactory, spark_session: Any) -> dict[str, Any]:
    """The nested corpus, and the job's output for it given as local paths (the shell's
    expansion of the pattern, in its order)."""
    from trapline.distributed import spark as job

    base = tmp_path_factory.mktemp("nested")
    corpus = _nested_corpus(base / "spam")
    paths = [str(p) for month in sorted(corpus.iterdir()) for p in sorted(month.glob("[!.]*"))]
    out = base / "local-out"
    summary = job.ingest(
        spark_session, paths, str(out), settings=load_settings({}), target_bytes=SPLIT
    )
    assert summary.messages == 55 and summary.problems == 0 and summary.splits == 5
    return {"corpus": corpus, "out": str(out), "summary": summary}


def _same_as_local(nested: dict[str, Any], out: str, settings: dict[str, Any], prefix: str) -> None:
    local = load_settings({})
    for name in ("messages", "raw", "hops", "recipients", "urls", "signatures"):
        got, want = _table(out, name, settings), _table(nested["out"], name, local)
        assert len(want) > 0 and got == want, name
    # Sources name the input as given: the URI instead of the path, item numbers the same.
    con = duckdb.connect()
    local_sources = con.execute(
        f"SELECT source FROM read_parquet('{nested['out']}/messages/*/*.parquet') ORDER BY id"
    ).fetchall()
    import pyarrow.dataset as ds

    from trapline.distributed.task import filesystem_for
    from trapline.objectstores import ObjectStores

    filesystem, base = filesystem_for(out, ObjectStores.from_settings(settings))
    if filesystem is None:
        from pyarrow import fs

        filesystem = fs.LocalFileSystem()
    remote = ds.dataset(f"{base}/messages", filesystem=filesystem, format="parquet").to_table()
    remote_sources = sorted(
        zip(remote["id"].to_pylist(), remote["source"].to_pylist(), strict=True)
    )
    root = str(nested["corpus"])
    assert [s for _, s in remote_sources] == [prefix + s[len(root) :] for (s,) in local_sources]
    assert any(re.search(r"2008-02/b\.mbox@[1-9][0-9]*#0$", s) for _, s in remote_sources)


@pytest.mark.slow
def test_file_uri_patterns_read_the_same_messages_as_local_paths(
    nested: dict[str, Any], spark_session: Any, tmp_path: Path
) -> None:
    """``file://`` URIs go through pyarrow (listing, patterns, ranged reads of the mbox) and
    give, row for row, what the job gives for the same files named as local paths."""
    from trapline.distributed import spark as job

    root = nested["corpus"]
    for pattern, n in (("2008-*/*", 55), ("2008-0[12]/*.mbox*", 50), ("*/?.mbox.gz", 20)):
        plan = splits.plan([f"file://{root}/{pattern}"], SPLIT)
        got = sum(1 for s in plan.splits for r in splits.read_split(s) if isinstance(r, RawMessage))
        assert got == n, pattern
    out = tmp_path / "uri-out"
    summary = job.ingest(
        spark_session,
        [f"file://{root}/2008-*/*"],
        str(out),
        settings=load_settings({}),
        target_bytes=SPLIT,
    )
    assert summary.splits == nested["summary"].splits and summary.messages == 55
    _same_as_local(nested, str(out), load_settings({}), f"file://{root}")
    # A folder URI is walked by the local walker's rules: hidden files skipped, not matched.
    plan = splits.plan([f"file://{root}/"], SPLIT)
    assert len(plan.splits) == 5 and plan.skipped == (f"file://{root}/2008-03/.hidden.eml",)


def test_spark_analyze_reads_a_uri_dataset_without_the_tables_it_has_no_rows_for(
    nested: dict[str, Any], spark_session: Any, tmp_path: Path
) -> None:
    """The job writes a table folder only when the table has rows (no routing snapshot: no
    ip_routing/; clean input: no quarantine/): a URI dataset analyzes all the same, those
    tables empty with the store's columns. A folder with no tables is a usage error."""
    from trapline.analyze.timeline import RECEIVED
    from trapline.distributed import analyze
    from trapline.distributed.task import TABLES, memory_store
    from trapline.errors import UsageError

    out = Path(nested["out"])
    absent = sorted(set(TABLES) - {p.name for p in out.iterdir()})
    assert {"ip_routing", "quarantine"} <= set(absent)
    data = tmp_path / "store"
    open_store(data).close()
    settings = load_settings({"data_dir": str(data)})
    result = analyze.run(
        spark_session, f"file://{out}", str(tmp_path / "results"), settings=settings, data_dir=data
    )
    (dated,) = duckdb.connect().execute(
        f"SELECT count(*) FROM read_parquet('{out}/messages/*/*.parquet') WHERE {RECEIVED}"
    ).fetchone() or (0,)
    assert result.networks == [] and result.timeline["by"] == "none"  # nothing routed
    assert sum(n or 0 for n in result.timeline["total"]) == dated > 40  # dated by a Received line
    assert 0 < result.campaigns < result.clustered <= 55
    schema = memory_store()
    for name in absent:
        view = spark_session.table(name)
        want = [c[0] for c in schema.con.execute(f'DESCRIBE "{name}"').fetchall()]
        assert view.columns == want and view.count() == 0, name
    schema.close()
    (tmp_path / "nothing").mkdir()
    with pytest.raises(UsageError, match="holds no table folders"):
        analyze.run(
            spark_session,
            f"file://{tmp_path}/nothing",
            str(tmp_path / "r2"),
            settings=settings,
            data_dir=data,
        )


def _s3_settings(endpoint: str) -> dict[str, Any]:
    return load_settings({"s3_endpoint": endpoint, "s3_region": "us-east-1"})


@pytest.mark.slow
def test_s3a_patterns_read_and_write_through_an_s3_server_on_loopback(
    nested: dict[str, Any], s3: str | None, spark_session: Any, tmp_path: Path
) -> None:
    """The user story against moto's S3 emulation on 127.0.0.1 (not AWS; no network): the
    pattern is listed at the driver, every executor opens its objects with pyarrow's S3
    client, and the dataset is written to the bucket; the rows are those of the local run."""
    if s3 is None:
        pytest.skip("moto[server] is not installed (pip install -e '.[dev]')")
    from trapline.distributed import spark as job

    upload(s3, nested["corpus"], BUCKET, "spam")
    settings = _s3_settings(s3)
    out = f"s3a://{BUCKET}/trapline"
    summary = job.ingest(
        spark_session, [f"s3a://{BUCKET}/spam/2008-*/*"], out, settings=settings, target_bytes=SPLIT
    )
    assert summary.splits == nested["summary"].splits and summary.messages == 55
    assert summary.task_errors == 0
    _same_as_local(nested, out, settings, f"s3a://{BUCKET}/spam")
    with client(s3).open_input_stream(f"{BUCKET}/trapline/_trapline.json") as fh:
        manifest = json.loads(fh.read())
    assert manifest["tables"]["messages"]["rows"] == 55
    # ... and a local store reads the bucket's dataset in place (`attach parquet s3a://`).
    data = tmp_path / "attached"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TRAPLINE_S3_ENDPOINT", s3)
        _run(data, "attach", "parquet", out)
    stats = json.loads(_run(data, "stats", "--json").stdout)
    assert stats["messages"] == 55


def test_an_s3a_output_is_refused_when_it_holds_anything_and_cleared_with_force(
    s3: str | None, spark_session: Any, tmp_path: Path
) -> None:
    """As for a folder: a prefix that holds objects is refused; ``--force`` replaces an earlier
    output, its table folders deleted first, so no stale part survives the new run."""
    if s3 is None:
        pytest.skip("moto[server] is not installed (pip install -e '.[dev]')")
    from trapline.distributed import spark as job
    from trapline.errors import UsageError

    settings = _s3_settings(s3)
    bucket = client(s3)
    bucket.create_dir(f"{BUCKET}/other")
    with bucket.open_output_stream(f"{BUCKET}/other/notes.txt") as fh:
        fh.write(b"not ours")
    inputs = [str(_few(tmp_path))]
    with pytest.raises(UsageError, match=r"other is not empty; choose a new folder$"):
        job.ingest(spark_session, inputs, f"s3a://{BUCKET}/other", settings=settings, force=True)
    out = f"s3a://{BUCKET}/again"
    assert job.ingest(spark_session, inputs, out, settings=settings).messages == 3
    stale = f"{BUCKET}/again/messages/{DAY}=1999-01-01/part-00099.parquet"
    with bucket.open_output_stream(stale) as fh:
        fh.write(b"an earlier run's part")
    with pytest.raises(UsageError, match=r"again is not empty; .* or pass --force to"):
        job.ingest(spark_session, inputs, out, settings=settings)
    assert job.ingest(spark_session, inputs, out, settings=settings, force=True).messages == 3
    assert bucket.get_file_info(stale).type == fs.FileType.NotFound
    assert len(_table(out, "messages", settings)) == 3
    assert bucket.get_file_info(f"{BUCKET}/other/notes.txt").type == fs.FileType.File


def test_an_input_gone_before_its_task_reads_it_is_quarantined(
    tmp_path: Path, s3: str | None
) -> None:
    """Listed at planning, gone at reading (deleted, or permission withdrawn): the task
    records it in quarantine with the reason and stores the rest, locally and from a bucket."""
    import pyarrow.parquet as pq

    from trapline.distributed import task
    from trapline.objectstores import ObjectStores, locate

    corpus = _nested_corpus(tmp_path / "spam")
    stores = [("file", f"file://{corpus}", load_settings({}))]
    if s3 is not None:
        upload(s3, corpus, BUCKET, "gone")
        stores.append(("s3a", f"s3a://{BUCKET}/gone", _s3_settings(s3)))
    for kind, root, settings in stores:
        plan = splits.plan([f"{root}/2008-0[13]/*"], 1 << 20, ObjectStores.from_settings(settings))
        (split,) = plan.splits  # a.mbox.gz and the .eml files, one task
        filesystem, path = locate(f"{root}/2008-01/a.mbox.gz", ObjectStores.from_settings(settings))
        filesystem.delete_file(path)
        out = tmp_path / f"out-{kind}"
        ctx = task.TaskContext(str(out), (), settings)
        result = task.ingest_split(0, split, ctx)
        assert result.error is None and result.messages == 5 and result.problems == 1, kind
        rows = pq.read_table(out / "quarantine").to_pylist()
        assert [(r["source"], r["reason"]) for r in rows] == [
            (f"{root}/2008-01/a.mbox.gz", "vanished")
        ], kind


def test_a_uri_folder_is_walked_by_the_local_walkers_rules(tmp_path: Path) -> None:
    """Maildirs (cur/new one message per file, tmp skipped, .Folders walked), non-mail names
    and hidden files: the walk of a store listing equals ``maildir.walk`` of the same tree."""
    from trapline.distributed.uris import entries
    from trapline.ingest.maildir import walk

    spam = sorted(shared("mail", "spamassassin-2002", "spam").iterdir())[:12]
    root = tmp_path / "tree"
    layout = {
        "Maildir/cur/1.host:2,S": spam[0],
        "Maildir/new/2.host": spam[1],
        "Maildir/tmp/3.host": spam[2],
        "Maildir/.Junk/cur/4.host:2,": spam[3],
        "Maildir/.Junk/new/.hidden": spam[4],
        "Maildir/dovecot-uidlist": spam[5],
        "Maildir/new/sub/5": spam[6],
        "b/README.md": spam[7],
        "b/c/x.eml": spam[8],
        "b/.git/y": spam[9],
        "a.mbox": spam[10],
        "LICENSE": spam[11],
    }
    for rel, src in layout.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / rel)
    (root / "Maildir" / ".Junk" / "tmp").mkdir()
    want_skipped: list[str] = []
    want = [(e.path, e.single, e.size) for e in walk(str(root), want_skipped)]
    got_skipped: list[str] = []
    got = [(e.path, e.single, e.size) for e in entries(f"file://{root}", None, got_skipped)]
    assert len(want) == 5 and any(single for _, single, _ in want)
    assert got == [(f"file://{p}", single, size) for p, single, size in want]
    assert sorted(got_skipped) == sorted(f"file://{p}" for p in want_skipped)
