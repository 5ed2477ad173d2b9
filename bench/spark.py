"""Spark ingest benchmark: the job in local[1] and local[2] next to the local process-pool ingest.

    python bench/spark.py                 # SpamAssassin repeated to >= 100,000 messages
    python bench/spark.py --json          # one JSON object: local_msgs_per_s, spark1_msgs_per_s,
                                          # spark2_msgs_per_s
    python bench/spark.py --min-messages 20000

The corpus is written once as one file per message, repeated until ``--min-messages``, each copy
made distinct by an ``X-Bench-Copy: N`` header (bench/ingest.py's builder), and the bundled 2008
routing snapshot is imported into a store whose snapshots both sides use. Then, in the same run,
on the same files and doing the same work (read, hash, dedupe, raw archive, parse, MinHash
fingerprints, ASN enrichment):

* local: ``trapline.pipeline.run.ingest`` with two parse workers into a fresh store;
* spark1 / spark2: ``trapline.distributed.spark.ingest`` with master ``local[1]`` / ``local[2]``
  writing Parquet. The JVM start is not timed (a cluster has it running); the job is, from
  planning to the manifest, its dedupe pass included.

Details (seconds, CPU, load average, ratios) go to stderr; stdout has only the JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "mail" / "spamassassin-2002"


def _routing_store(data: Path) -> None:
    from trapline.store.duckdb import open_store
    from trapline.store.routing import import_bundled_routing

    with open_store(data) as store:
        import_bundled_routing(store)


def _local(corpus: Path, data: Path, workers: int) -> float:
    from trapline.config import load_settings
    from trapline.pipeline.run import ingest

    settings = load_settings({"data_dir": str(data)})
    started = time.perf_counter()
    ingest([corpus], settings=settings, workers=workers)
    return time.perf_counter() - started


def _spark(
    corpus: Path, data: Path, out: Path, master: str, split_mb: int
) -> tuple[float, Any, int]:
    """Seconds, the job's summary, and the task slots the session really had (the second
    session of a run reuses the JVM: its master must still be the one asked for)."""
    from trapline.config import load_settings
    from trapline.distributed import spark as job

    session = job.session(master, "trapline-bench")
    slots = int(session.sparkContext.defaultParallelism)
    if session.sparkContext.master != master:
        raise SystemExit(f"asked for {master}, the session runs {session.sparkContext.master}")
    try:
        started = time.perf_counter()
        summary = job.ingest(
            session,
            [str(corpus)],
            str(out),
            settings=load_settings({"data_dir": str(data)}),
            data_dir=data,
            target_bytes=split_mb << 20,
        )
        return time.perf_counter() - started, summary, slots
    finally:
        session.stop()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ingest import build_corpus

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="trapline-bench-spark-") as tmp:
        base = Path(tmp)
        paths, nbytes = build_corpus(Path(args.corpus), base / "corpus", args.min_messages)
        n = len(paths)
        routing, local_data = base / "spark-store", base / "local-store"
        _routing_store(routing)  # the same snapshot on both sides, imported into each store
        _routing_store(local_data)
        local_s = _local(base / "corpus", local_data, args.workers)
        spark1_s, s1, slots1 = _spark(
            base / "corpus", routing, base / "out1", "local[1]", args.split_mb
        )
        spark2_s, s2, slots2 = _spark(
            base / "corpus", routing, base / "out2", "local[2]", args.split_mb
        )
    result = {
        "local_msgs_per_s": round(n / local_s, 1),
        "spark1_msgs_per_s": round(n / spark1_s, 1),
        "spark2_msgs_per_s": round(n / spark2_s, 1),
    }
    details = {
        "messages": n,
        "bytes": nbytes,
        "seconds": {"local": local_s, "spark1": spark1_s, "spark2": spark2_s},
        "spark2_over_spark1": round(spark1_s / spark2_s, 3),
        "spark2_over_local": round(local_s / spark2_s, 3),
        "stored": {"spark1": s1.messages, "spark2": s2.messages},
        "tasks": s2.splits,
        "task_slots": {"spark1": slots1, "spark2": slots2},
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    print(json.dumps(details, indent=2), file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    parser.add_argument("--min-messages", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2, help="local parse workers")
    parser.add_argument("--split-mb", type=int, default=64, help="input bytes per Spark task")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value:,.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
