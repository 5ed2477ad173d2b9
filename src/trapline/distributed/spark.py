"""The ingest as a Spark job: tasks placed by Spark, each running the local ingest core.

The driver plans splits (``splits.plan``), finds messages read more than once (a pass that only
hashes), broadcasts one ``TaskContext`` (trust boundary, settings, the routing snapshots of the
``--data-dir`` store) and runs ``task.ingest_split`` on every split in ``mapPartitions``. Each
task writes its own Parquet files; the driver adds the plan's source problems and a manifest.
PySpark is imported here only: everything else in ``trapline.distributed`` runs without it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trapline import __version__, objectstores
from trapline.distributed import splits, task
from trapline.errors import ObjectStoreError, TraplineError, UsageError
from trapline.export.tables import LAYOUT, MANIFEST
from trapline.objectstores import ObjectStores


class SparkUnavailable(TraplineError):
    """PySpark (and Java 17) are needed for this command: pip install 'trapline[spark]'."""


@dataclass(slots=True, frozen=True)
class SparkIngestSummary:
    out: str
    splits: int
    read: int
    duplicates: int
    messages: int
    quarantined: int
    problems: int
    task_errors: int
    rows: dict[str, int]
    snapshots: tuple[str, ...]

    def line(self) -> str:
        return (
            f"{self.read:,} read, {self.messages:,} stored, {self.duplicates:,} duplicates, "
            f"{self.quarantined:,} quarantined, {self.problems:,} source problems in "
            f"{self.splits} tasks -> {self.out}"
        )


# For one machine: no web UI or progress bars, few shuffle partitions, reused Python workers.
LOCAL_TUNING = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.python.worker.reuse": "true",
}
# Stored times are UTC: day partitions and timeline buckets are cut in UTC on every engine.
TIME_ZONE = "spark.sql.session.timeZone"
JAVA_OPTIONS = ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions")
JAVA_UTC = "-Duser.timezone=UTC"


def session_options(
    master: str | None, preset: Mapping[str, str], given: Mapping[str, str]
) -> dict[str, str]:
    """What the session builder sets: ``given`` (``--conf``) over trapline's defaults, the
    one-machine tuning only for local masters and only for keys nothing set before (``preset``:
    spark-submit's ``--conf``, spark-defaults.conf, a running session); UTC always, added to
    the JVM options already there."""
    local = bool(master) and str(master).startswith("local")
    options = {k: v for k, v in LOCAL_TUNING.items() if local and k not in preset}
    options[TIME_ZONE] = "UTC"
    options.update(given)
    for key in JAVA_OPTIONS:
        current = options.get(key, preset.get(key, ""))
        if "-Duser.timezone=" not in current:
            options[key] = f"{current} {JAVA_UTC}".strip()
    return options


def _preset() -> dict[str, str]:
    """Settings made before trapline's when the JVM is already up (spark-submit started this
    process, or a session runs); empty when the builder is about to launch it."""
    from pyspark import SparkConf, SparkContext

    if SparkContext._jvm is None:
        if "PYSPARK_GATEWAY_PORT" not in os.environ:
            return {}
        SparkContext._ensure_initialized()  # connect to spark-submit's JVM (pyspark >= 1.0)
    return dict(SparkConf().getAll())  # the JVM's spark.* properties: --conf, defaults file


def _session_class() -> Any:
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise SparkUnavailable() from exc
    return SparkSession


def session(
    master: str | None = None, app_name: str = "trapline", conf: Mapping[str, str] | None = None
) -> Any:
    """A SparkSession (``master`` None: spark-submit's, else e.g. ``local[2]``); ``conf`` is
    set over trapline's defaults (``session_options``)."""
    builder = _session_class().builder.appName(app_name)
    if master:
        builder = builder.master(master)
    try:
        for key, value in session_options(master, _preset(), conf or {}).items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
    except Exception as exc:  # no Java, or Java too old: say what to install
        raise SparkUnavailable(
            f"Spark could not start ({type(exc).__name__}: {str(exc)[:200]}); it needs Java 17 "
            "(apt-get install openjdk-17-jre-headless) and pip install 'trapline[spark]'"
        ) from exc
    spark.sparkContext.setLogLevel("ERROR")
    return spark


@contextmanager
def running(
    master: str | None = None, conf: Mapping[str, str] | None = None, app_name: str = "trapline"
) -> Iterator[Any]:
    """A session for one command, stopped after it unless it ran before (a notebook's, a
    test's, one that called this library)."""
    before = _session_class().getActiveSession()
    spark = session(master, app_name, conf)
    try:
        yield spark
    finally:
        if before is None:
            spark.stop()


# Spark's words for a table folder the job did not write (it writes one only for rows).
_ABSENT = re.compile(r"PATH_NOT_FOUND|Path does not exist|UNABLE_TO_INFER_SCHEMA")


def read_parquet(spark: Any, path: str, absent_ok: bool = False) -> Any:
    """``spark.read.parquet(path)``, with a missing object-store connector said plainly;
    None for a folder that does not exist (or holds no Parquet) when ``absent_ok``."""
    try:
        return spark.read.parquet(path)
    except Exception as exc:
        if absent_ok and _ABSENT.search(str(exc)):
            return None
        raise object_store_error(spark, path, exc) from exc


def object_store_error(spark: Any, path: str, exc: Exception) -> TraplineError:
    """What to do when Spark (Hadoop) cannot open ``path``."""
    text = str(exc)
    scheme = path.split("://", 1)[0] if "://" in path else "file"
    if scheme in ("s3a", "s3", "s3n") and (
        "S3AFileSystem" in text or "No FileSystem for scheme" in text
    ):
        hadoop = _hadoop_version(spark)
        return ObjectStoreError(
            f"Spark cannot read {scheme}:// paths without the hadoop-aws connector: add "
            f"--packages org.apache.hadoop:hadoop-aws:{hadoop} to spark-submit (or set "
            f"spark.jars.packages to it), use s3a:// URIs, and give credentials in "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_REGION)"
        )
    if "No FileSystem for scheme" in text:
        return ObjectStoreError(
            f"Spark has no connector for {scheme}:// ({path}): add the Hadoop connector jar for "
            "that store to spark.jars.packages, or copy the dataset to a local folder"
        )
    first = next((ln for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    return ObjectStoreError(f"Spark could not read {path}: {first[:300]}")


def _hadoop_version(spark: Any) -> str:
    try:
        return str(spark.sparkContext._jvm.org.apache.hadoop.util.VersionInfo.getVersion())
    except Exception:
        return "<Spark's Hadoop version>"


def check_output(out: str, stores: ObjectStores | None = None) -> None:
    """Fail before any task runs when an object-store ``out`` cannot be written."""
    if "://" not in out:
        return
    try:
        filesystem, base = task.filesystem_for(out, stores)
        filesystem.create_dir(base, recursive=True)
    except Exception as exc:  # pyarrow: unknown scheme, no network, no credentials
        raise ObjectStoreError(
            f"cannot write {out}: {str(exc).splitlines()[0][:300]}; for s3a:// give credentials "
            "in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and AWS_REGION (the s3_endpoint "
            "setting for other S3 services), or write to a local folder"
        ) from exc


def check_inputs(inputs: Sequence[str], stores: ObjectStores | None = None) -> None:
    """Fail before Spark starts when an input URI names a store pyarrow cannot open."""
    for given in inputs:
        if objectstores.is_uri(given):
            objectstores.locate(given, stores)


def _routing(data_dir: Path | None) -> tuple[Any, tuple[str, ...]]:
    """The routing snapshots of the ``--data-dir`` store (none when it has no store yet)."""
    if data_dir is None or not (data_dir / "trapline.duckdb").exists():
        return None, ()
    from trapline.store.duckdb import open_store
    from trapline.store.routing import load_routing

    with open_store(data_dir, read_only=True) as store:
        routing = load_routing(store)
    ids = tuple(s.info.snapshot_id for s in routing.snapshots)
    return (routing if ids else None), ids


def _check_out(out: str, force: bool, stores: ObjectStores) -> None:
    """Refuse an ``out`` that holds anything, unless ``--force`` and it is an earlier output:
    then its table folders go (stale parts would mix in), in a folder as under a URI."""
    from pyarrow import fs

    filesystem, base = task.filesystem_for(out, stores)
    if filesystem is None:
        filesystem, base = fs.LocalFileSystem(), os.path.abspath(base)
    try:
        info = filesystem.get_file_info(base)
        if info.type == fs.FileType.File:
            raise UsageError(f"{out} is a file; give a folder (or URI prefix) for the tables")
        found = (
            []
            if info.type == fs.FileType.NotFound
            else filesystem.get_file_info(fs.FileSelector(base, recursive=False))
        )
        if not found:
            return
        earlier = any(f.base_name == MANIFEST for f in found)
        if not (force and earlier):
            hint = " or pass --force to replace the earlier output" if earlier else ""
            raise UsageError(f"{out} is not empty; choose a new folder{hint}")
        for f in found:
            if f.base_name in task.TABLES and f.type == fs.FileType.Directory:
                filesystem.delete_dir(f.path)
    except OSError as exc:  # pyarrow: no permission, store out of reach
        raise ObjectStoreError(
            f"cannot list or clear {out}: {str(exc).splitlines()[0][:300]}"
        ) from exc


def _duplicates(
    sc: Any, indexed: list[tuple[int, splits.Split]], stores: ObjectStores
) -> dict[str, tuple[int, int]]:
    """id -> (task, position) of the first copy, for ids that occur more than once."""
    if len(indexed) == 0:
        return {}
    pairs = sc.parallelize(indexed, len(indexed)).flatMap(
        lambda x: task.split_ids(x[0], x[1], stores)
    )
    firsts = (
        pairs.map(lambda t: (t[0], ((t[1], t[2]), 1)))
        .reduceByKey(lambda a, b: (min(a[0], b[0]), a[1] + b[1]))
        .filter(lambda kv: kv[1][1] > 1)
        .map(lambda kv: (kv[0], kv[1][0]))
    )
    return dict(firsts.collect())


def _run_tasks(items: Iterator[tuple[int, splits.Split]], ctx: Any) -> Iterator[dict[str, Any]]:
    for index, split in items:
        yield asdict(task.ingest_split(index, split, ctx.value))


def ingest(
    spark: Any,
    inputs: Sequence[str],
    out: str,
    *,
    settings: dict[str, Any],
    data_dir: Path | None = None,
    trust: Sequence[str] = (),
    target_bytes: int = 64 << 20,
    dedupe: bool = True,
    force: bool = False,
    label: str = "spam",
) -> SparkIngestSummary:
    """Run the ingest job over ``inputs`` and write the Parquet layout under ``out``."""
    from trapline.pipeline.pool import fingerprint_at_ingest

    stores = ObjectStores.from_settings(settings)
    check_inputs(inputs, stores)
    check_output(out, stores)
    _check_out(out, force, stores)
    plan = splits.plan([str(p) for p in inputs], target_bytes, stores)
    routing, snapshot_ids = _routing(data_dir)
    sc = spark.sparkContext
    indexed = list(enumerate(plan.splits))
    keep = _duplicates(sc, indexed, stores) if dedupe else {}
    ctx = task.TaskContext(
        out, tuple(trust), dict(settings), routing, fingerprint_at_ingest(settings), label, keep
    )
    shared = sc.broadcast(ctx)
    results: list[dict[str, Any]] = []
    if indexed:
        rdd = sc.parallelize(indexed, len(indexed))
        results = rdd.mapPartitions(lambda items: _run_tasks(items, shared)).collect()
    shared.unpersist()
    rows: dict[str, int] = {}
    for r in results:
        for name, n in r["rows"].items():
            rows[name] = rows.get(name, 0) + n
    if plan.problems:
        store = task.memory_store()
        from trapline.store.writer import write_problems

        write_problems(store.con, list(plan.problems))
        written = task.write_tables(store, "plan", out, only=("quarantine",), stores=stores)
        for name, n in written.items():
            rows[name] = rows.get(name, 0) + n
        store.close()
    summary = SparkIngestSummary(
        out=out,
        splits=len(indexed),
        read=sum(r["read"] for r in results),
        duplicates=sum(r["duplicates"] for r in results),
        messages=sum(r["messages"] for r in results),
        quarantined=sum(r["quarantined"] for r in results),
        problems=sum(r["problems"] for r in results) + len(plan.problems),
        task_errors=sum(1 for r in results if r["error"]),
        rows=rows,
        snapshots=snapshot_ids,
    )
    _write_manifest(out, summary, plan, stores)
    return summary


def _write_manifest(
    out: str, summary: SparkIngestSummary, plan: splits.Plan, stores: ObjectStores
) -> None:
    doc = {
        "layout": LAYOUT,
        "written_by": f"trapline {__version__} (spark ingest)",
        "partitioning": {"column": task.DAY, "null": task.NO_DAY, "unpartitioned": ["quarantine"]},
        "tables": {name: {"rows": n} for name, n in sorted(summary.rows.items())},
        "routing_snapshots": list(summary.snapshots),
        "counts": {k: v for k, v in asdict(summary).items() if isinstance(v, int)},
        "skipped_files": len(plan.skipped),
    }
    text = json.dumps(doc, indent=2) + "\n"
    filesystem, base = task.filesystem_for(out, stores)
    if filesystem is None:
        os.makedirs(base, exist_ok=True)
        Path(base, MANIFEST).write_text(text, encoding="utf-8")
    else:
        with filesystem.open_output_stream(f"{base}/{MANIFEST}") as fh:
            fh.write(text.encode())
