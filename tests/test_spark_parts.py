"""The parts of the Spark scale-out that need no JVM: packaging, planning, messages."""

from __future__ import annotations

import importlib.metadata
import itertools
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def _closure(requirements: list[str]) -> set[str]:
    """Distribution names a pip install of ``requirements`` brings in (installed metadata)."""
    seen: set[str] = set()
    todo = [(Requirement(r), frozenset(Requirement(r).extras)) for r in requirements]
    while todo:
        req, extras = todo.pop()
        name = req.name.lower().replace("_", "-")
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            declared = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in declared:
            sub = Requirement(text)
            if sub.marker is None or any(
                sub.marker.evaluate({"extra": e}) for e in (extras or {""})
            ):
                todo.append((sub, frozenset(sub.extras)))
    return {k.split("[", 1)[0] for k in seen}


@pytest.mark.parametrize("extra", ["spark", "test"])
def test_the_spark_extra_installs_what_spark_analyze_needs(extra: str) -> None:
    """``pip install 'trapline[spark]'`` alone runs ``spark analyze``: its Arrow tables become
    Spark DataFrames through pandas (``dialect.frame``), which no core dependency pulls in."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = _closure(project["dependencies"] + project["optional-dependencies"][extra])
    assert {"pyspark", "pandas", "pyarrow", "py4j"} <= names, sorted(names)


def test_session_defaults_leave_what_spark_submit_or_conf_set() -> None:
    """The one-machine tuning applies to local masters and never over a setting made before
    (spark-submit ``--conf``, spark-defaults.conf) or given (``--conf``); UTC always."""
    from trapline.distributed.spark import session_options

    submitted = {
        "spark.sql.shuffle.partitions": "2000",
        "spark.ui.enabled": "true",
        "spark.executor.extraJavaOptions": "-Xss4m",
    }
    got = session_options(None, submitted, {})
    assert "spark.sql.shuffle.partitions" not in got and "spark.ui.enabled" not in got
    assert got["spark.executor.extraJavaOptions"] == "-Xss4m -Duser.timezone=UTC"
    assert got["spark.sql.session.timeZone"] == "UTC"
    assert "spark.sql.shuffle.partitions" not in session_options("yarn", {}, {})
    local = session_options("local[2]", {}, {})
    assert local["spark.sql.shuffle.partitions"] == "8" and local["spark.ui.enabled"] == "false"
    assert local["spark.driver.extraJavaOptions"] == "-Duser.timezone=UTC"
    given = session_options(
        "local[2]",
        {"spark.ui.enabled": "true"},
        {"spark.sql.shuffle.partitions": "3", "spark.driver.extraJavaOptions": "-Xmx2g"},
    )
    assert given["spark.sql.shuffle.partitions"] == "3" and "spark.ui.enabled" not in given
    assert given["spark.driver.extraJavaOptions"] == "-Xmx2g -Duser.timezone=UTC"
    kept = session_options(None, {"spark.driver.extraJavaOptions": "-Duser.timezone=UTC"}, {})
    assert "spark.driver.extraJavaOptions" not in kept


@pytest.mark.parametrize("command", ["ingest", "analyze"])
def test_a_spark_setting_without_a_value_is_a_usage_error(command: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from trapline.cli.main import cli

    given = ["--conf", "spark.executor.memory=4g", "--conf", "spark.ui.enabled"]
    args = ["--data-dir", str(tmp_path), "spark", command, str(tmp_path), "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, [*args, *given])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--conf': 'spark.ui.enabled' is not KEY=VALUE" in result.output


def test_the_job_path_script_runs_as_spark_submit_runs_it() -> None:
    """``spark job-path`` names a script that runs on its own (its folder, with its spark.py
    and task.py, shadows nothing) and takes the CLI's options."""
    import subprocess
    import sys

    from click.testing import CliRunner

    from trapline.cli.main import cli

    path = CliRunner().invoke(cli, ["spark", "job-path"]).output.strip()
    assert path.endswith("distributed/job.py") and Path(path).is_file()
    done = subprocess.run(
        [sys.executable, path, "ingest", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for option in ("--no-dedupe", "--label", "--conf", "--split-mb", "--force"):
        assert option in done.stdout, option


def test_the_spark_tests_fail_without_java_when_ci_requires_them(tmp_path: Path) -> None:
    """Without Java the Spark tests skip on a workstation, but fail under .ci/run, which sets
    TRAPLINE_REQUIRE_SPARK=1: CI cannot pass with no Spark coverage."""
    import subprocess
    import sys

    from trapline.config import load_settings

    assert "export TRAPLINE_REQUIRE_SPARK=1" in (ROOT / ".ci" / "run").read_text()
    with pytest.MonkeyPatch.context() as m:
        m.setenv("TRAPLINE_REQUIRE_SPARK", "1")
        load_settings({})  # a variable of the tests, not a setting: commands still run
    no_java = tmp_path / "bin"
    no_java.mkdir()  # an empty PATH: no java on it
    env = {k: v for k, v in os.environ.items() if k != "TRAPLINE_REQUIRE_SPARK"}
    env["PATH"] = str(no_java)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/test_spark.py",
    ]
    skipped = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert skipped.returncode == 5 and "1 skipped" in skipped.stdout, skipped.stdout  # 5: none ran
    env["TRAPLINE_REQUIRE_SPARK"] = "1"
    failed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert failed.returncode not in (0, 5), failed.stdout
    assert "TRAPLINE_REQUIRE_SPARK=1: Spark needs Java 17" in failed.stdout


def test_mbox_cuts_follow_the_splitters_postmark_length_limit(tmp_path: Path) -> None:
    """A "From ... 2004" line longer than a postmark may be, after a blank line, is body text
    to the local splitter, so the planner must not cut there either: the pieces of a file cut
    into many tasks split into the very messages of the whole file."""
    from conftest import shared
    from trapline.distributed import splits
    from trapline.ingest.mbox import MAX_POSTMARK, is_postmark, split_mbox
    from trapline.model import RawMessage

    data = shared("mail", "nazario-phishing-2005", "phishing1.mbox").read_bytes()
    starts = [0, *[m.start() + 2 for m in re.finditer(rb"\n\nFrom ", data)][:6]]
    messages = [data[a:b] for a, b in itertools.pairwise(starts)]  # each ends in a blank line
    long = b"From attacker Sat Nov 27 15:33:27 2004 " + b"x" * MAX_POSTMARK
    assert not is_postmark(long) and is_postmark(long[:MAX_POSTMARK])
    # Into the body of every message but the last: after a blank line, as a separator stands.
    crafted = b"".join(m + long + b"\nbody text\n\n" for m in messages[:-1]) + messages[-1]
    path = tmp_path / "crafted.mbox"
    path.write_bytes(crafted)
    whole = [r.data for r in split_mbox([crafted], "x", mode="mbox") if isinstance(r, RawMessage)]
    plan = splits.plan([str(path)], 2_000)
    pieces = [
        r.data for s in plan.splits for r in splits.read_split(s) if isinstance(r, RawMessage)
    ]
    assert len(whole) == len(messages) == 6 and len(plan.splits) > 3
    assert pieces == whole


def test_without_pyspark_or_java_the_session_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from trapline.distributed.spark import SparkUnavailable, session

    with monkeypatch.context() as m:
        m.setitem(sys.modules, "pyspark", None)  # import pyspark now fails: as not installed
        m.setitem(sys.modules, "pyspark.sql", None)
        with pytest.raises(SparkUnavailable, match=r"pip install 'trapline\[spark\]'"):
            session("local[1]")
    # Every command of PATH but java, and no JAVA_HOME: PySpark's launcher fails; in a child,
    # so this process keeps no half-started gateway.
    no_java = tmp_path / "bin"
    no_java.mkdir()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        for tool in Path(folder).glob("*") if folder and Path(folder).is_dir() else ():
            if tool.name != "java" and not (no_java / tool.name).exists():
                (no_java / tool.name).symlink_to(tool)
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(no_java)
    code = (
        "from trapline.distributed.spark import session, SparkUnavailable\n"
        "try:\n    session('local[1]')\nexcept SparkUnavailable as exc:\n    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert "it needs Java 17 (apt-get install openjdk-17-jre-headless)" in done.stdout, (
        done.stdout + done.stderr
    )


def test_a_split_that_cannot_be_read_fails_neither_pass_of_the_job(tmp_path: Path) -> None:
    """The dedupe pass and the ingest pass of a task that raises (here a URI no filesystem
    serves, past the planner's check) end normally; the ingest records it in quarantine."""
    import pyarrow.parquet as pq

    from trapline.config import load_settings
    from trapline.distributed import task
    from trapline.distributed.splits import Split

    split = Split(("nosuch://bucket/a.eml",), (False,))
    assert task.split_ids(3, split) == []
    result = task.ingest_split(3, split, task.TaskContext(str(tmp_path), (), load_settings({})))
    assert result.error is not None and "cannot open nosuch://" in result.error
    rows = pq.read_table(tmp_path / "quarantine").to_pylist()
    assert [r["reason"] for r in rows] == ["task-error"]


def _rows(out: Path, name: str) -> list[dict[str, Any]]:
    import json

    import pyarrow.dataset as ds

    table = ds.dataset(out / name, format="parquet", partitioning="hive").to_table()
    drop = {"ingested_at", "logged_at", "enriched_at", "computed_at"}
    rows = table.select([c for c in table.column_names if c not in drop]).to_pylist()
    return sorted(rows, key=lambda r: json.dumps(r, default=str, sort_keys=True))


def test_a_whole_compressed_file_is_stored_chunk_by_chunk_with_the_same_rows(
    tmp_path: Path,
) -> None:
    """A task holds one chunk of mail at a time: a .mbox.gz (never cut) bigger than a chunk
    is written as several parts whose rows, reading order (seq) included, are one part's."""
    import gzip

    from conftest import shared
    from trapline.config import load_settings
    from trapline.distributed import splits, task

    data = shared("mail", "nazario-phishing-2005", "phishing0.mbox").read_bytes()
    cut = [m.start() + 1 for m in re.finditer(rb"\n\nFrom ", data)][59]
    path = tmp_path / "sixty.mbox.gz"
    path.write_bytes(gzip.compress(data[: cut + 1]))
    (split,) = splits.plan([str(path)], 1 << 10).splits
    settings = load_settings({})
    results = {}
    for name, chunk in (("whole", task.CHUNK_BYTES), ("chunked", 40_000)):
        ctx = task.TaskContext(str(tmp_path / name), (), settings, chunk_bytes=chunk)
        results[name] = task.ingest_split(7, split, ctx)
    whole, chunked = results["whole"], results["chunked"]
    assert whole.error is None and chunked.error is None
    assert (whole.read, whole.messages) == (chunked.read, chunked.messages) == (60, 60)
    assert whole.rows == chunked.rows and whole.problems == chunked.problems == 0
    parts = {p.name for p in (tmp_path / "chunked" / "raw").rglob("*.parquet")}
    assert len(parts) > 3 and "part-00007-0001.parquet" in parts
    assert len({p.name for p in (tmp_path / "whole" / "raw").rglob("*.parquet")}) == 1
    for table in ("raw", "messages", "hops", "urls", "recipients", "signatures"):
        a, b = _rows(tmp_path / "whole", table), _rows(tmp_path / "chunked", table)
        assert a and a == b, table
    seqs = sorted(r["seq"] for r in _rows(tmp_path / "chunked", "signatures"))
    assert seqs == [(7 << task.SEQ_SHIFT) + i for i in range(60)]
