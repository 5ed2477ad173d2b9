"""Ingest benchmark: the full pipeline with storage vs the naive stdlib baseline, same messages.

    python bench/ingest.py                      # SpamAssassin corpus repeated to >= 30,000 msgs
    python bench/ingest.py --json               # the same figures as one JSON object
    python bench/ingest.py --corpus ~/spam --min-messages 0 --no-stages

The corpus is read once (through trapline's own source reader) and written out as one file per
message, repeated until ``--min-messages``; every repeat gets a distinct ``X-Bench-Copy: N``
header line first, or the content-addressed store would (rightly) keep one copy. Then, in the
same run and on the same files:

* pipeline: ``trapline.pipeline.run.ingest`` into a fresh temporary store: reading, hashing, raw
  archive, parsing in the process pool, Arrow writes, one transaction per batch, checkpoint at
  close. This is the core pipeline and gives the top-level keys (``pipeline_msgs_per_s``,
  ``ratio``, ``peak_rss_mb``, ...);
* everything the configured ingest does on top: MinHash fingerprints in the
  parse workers (``fingerprint_at_ingest``) and the post-ingest stages (ASN
  enrichment, harvester links; ``post_ingest_stages``), into a second fresh store, reported
  under ``with_stages`` with the same keys (skip it with ``--no-stages``);
* baseline: what a user would write first: read each file, ``email.message_from_bytes(b,
  policy=email.policy.default)`` and ``get_content()`` on every leaf part, nothing stored, one
  process.

Peak memory is the peak of the summed PSS (proportional set size: a page shared by n processes
counts 1/n in each) of this process and all its descendants (the parse workers), sampled from
/proc every 200 ms during the pipeline phase. Plain RSS would count every fork-shared page once
per worker. The sampler runs inside the measured process and reading ``smaps_rollup`` walks
page tables: at one sample every 20 ms it cost the main process 0.056 ms of CPU per message
(~10% of the pipeline's throughput, measured); at 200 ms it is noise, and memory in this
pipeline is a plateau (bounded in-flight work), so the peak is still seen.
"""

from __future__ import annotations

import argparse
import contextlib
import email
import email.policy
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "mail" / "spamassassin-2002"


def _rss_kb(pid: int) -> int:
    """Proportional set size (shared pages split between sharers), else plain RSS."""
    for name, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            with open(name, encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if line.startswith(key):
                        return int(line.split()[1])
        except OSError:
            continue
    return 0


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as fh:
                kids.extend(int(x) for x in fh.read().split())
    except OSError:
        pass
    return kids


def tree_rss_mb(root: int) -> float:
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += _rss_kb(pid)
        stack.extend(_children(pid))
    return total / 1024


class PeakSampler:
    """Samples the process tree's RSS in a thread; ``peak_mb`` after ``stop``."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, tree_rss_mb(me))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, tree_rss_mb(os.getpid()))


def build_corpus(source: Path, dest: Path, min_messages: int) -> tuple[list[Path], int]:
    """Write the corpus (repeated, each copy made distinct) as one file per message."""
    from trapline.ingest.sources import SourceReader
    from trapline.model import RawMessage

    originals = [item.data for item in SourceReader([str(source)]) if isinstance(item, RawMessage)]
    if not originals:
        raise SystemExit(f"no messages found in {source}")
    paths: list[Path] = []
    total = 0
    copy = 0
    while copy == 0 or len(paths) < min_messages:
        folder = dest / f"copy{copy:03d}"
        folder.mkdir(parents=True)
        for i, data in enumerate(originals):
            if copy:
                eol = b"\r\n" if b"\r\n" in data[:2000] else b"\n"
                data = b"X-Bench-Copy: %d" % copy + eol + data
            path = folder / f"{i:06d}.eml"
            path.write_bytes(data)
            paths.append(path)
            total += len(data)
        copy += 1
    return paths, total


def _cpu() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its reaped children (the workers)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def baseline(paths: list[Path]) -> float:
    """Seconds for the naive stdlib parse of every file (read included, as for the pipeline)."""
    started = time.perf_counter()
    for path in paths:
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for part in msg.walk():
            if part.is_multipart():
                continue
            # A naive script would crash on a broken part; count the message as done instead.
            with contextlib.suppress(Exception):
                part.get_content()  # type: ignore[attr-defined]
    return time.perf_counter() - started


def _timed_ingest(
    args: argparse.Namespace, corpus: Path, store: Path, *, core: bool
) -> dict[str, Any]:
    """One pipeline run into a fresh store: the core pipeline when ``core``, else everything
    the configured ingest does (fingerprints at ingest, post-ingest stages)."""
    from trapline.config import load_settings
    from trapline.pipeline.run import ingest

    overrides: dict[str, Any] = {"data_dir": str(store)}
    if core:
        overrides.update({"post_ingest_stages": [], "fingerprint_at_ingest": False})
    settings = load_settings(overrides)
    main0, kids0 = _cpu()
    with PeakSampler() as sampler:
        started = time.perf_counter()
        summary = ingest(
            [corpus], settings=settings, workers=args.workers, batch_size=args.batch_size
        )
        seconds = time.perf_counter() - started
    main1, kids1 = _cpu()  # the pool is shut down and its workers reaped by now
    return {
        "seconds": seconds,
        "peak_mb": sampler.peak_mb,
        "main_cpu": main1 - main0,
        "workers_cpu": kids1 - kids0,
        "summary": summary,
        "store_mb": (store / "trapline.duckdb").stat().st_size / 1e6,
        "stages": list(settings.get("post_ingest_stages") or []),
        "fingerprint_at_ingest": bool(settings.get("fingerprint_at_ingest")),
        "batch_size": settings.get("batch_size"),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="trapline-bench-") as tmp:
        base = Path(tmp)
        paths, nbytes = build_corpus(Path(args.corpus), base / "corpus", args.min_messages)
        core = _timed_ingest(args, base / "corpus", base / "store", core=True)
        staged = None
        if not args.no_stages:
            staged = _timed_ingest(args, base / "corpus", base / "store-stages", core=False)
        # An even spread, not the first N: corpora are sorted by folder (ham first, then spam).
        step = max(1, len(paths) // args.baseline_limit) if args.baseline_limit else 1
        sample = paths[::step]
        base0 = time.process_time()
        baseline_s = baseline(sample)
        baseline_cpu = time.process_time() - base0
    n = len(paths)
    baseline_rate = len(sample) / baseline_s
    cores = min(os.cpu_count() or 1, (args.workers or os.cpu_count() or 1) + 1)
    ideal_baseline_s = baseline_cpu * n / len(sample)

    def figures(timed: dict[str, Any]) -> dict[str, Any]:
        rate = n / timed["seconds"]
        # Load-independent view: CPU per message, and the ratio these would give on an idle
        # machine (the pipeline's wall time is at best its total CPU spread over the cores,
        # and never less than the serial main process's CPU).
        main_cpu, workers_cpu = timed["main_cpu"], timed["workers_cpu"]
        ideal_s = max((main_cpu + workers_cpu) / cores, main_cpu)
        summary = timed["summary"]
        return {
            "pipeline_seconds": round(timed["seconds"], 2),
            "pipeline_msgs_per_s": round(rate, 1),
            "ratio": round(rate / baseline_rate, 2),
            "peak_rss_mb": round(timed["peak_mb"], 1),
            "pipeline_main_cpu_ms_per_msg": round(1000 * main_cpu / n, 3),
            "pipeline_workers_cpu_ms_per_msg": round(1000 * workers_cpu / n, 3),
            "ratio_if_idle_estimate": round(ideal_baseline_s / ideal_s, 2),
            "stored": summary.new,
            "parsed": summary.parsed,
            "quarantined": summary.quarantined,
            "store_mb": round(timed["store_mb"], 1),
            "stages": timed["stages"],
            "fingerprint_at_ingest": timed["fingerprint_at_ingest"],
            "stage_notes": list(summary.stage_notes),
        }

    out: dict[str, Any] = {
        "messages": n,
        "mb": round(nbytes / 1e6, 1),
        "baseline_messages": len(sample),
        "baseline_seconds": round(baseline_s, 2),
        "baseline_msgs_per_s": round(baseline_rate, 1),
        "baseline_cpu_ms_per_msg": round(1000 * baseline_cpu / len(sample), 3),
        **figures(core),
    }
    if staged is not None:
        out["with_stages"] = figures(staged)
    out.update(
        {
            "workers": args.workers or os.cpu_count(),
            "batch_size": args.batch_size or core["batch_size"],
            "cpu_count": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        }
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="mail source (any format)")
    parser.add_argument("--min-messages", type=int, default=30_000)
    parser.add_argument(
        "--workers", type=int, default=None, help="parse processes (default: cores)"
    )
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument(
        "--no-stages",
        action="store_true",
        help="skip the second run (fingerprints at ingest and post-ingest stages)",
    )
    parser.add_argument(
        "--baseline-limit", type=int, default=0, help="time the baseline on the first N only"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
