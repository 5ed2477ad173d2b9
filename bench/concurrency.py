"""Concurrency benchmark: the trap's accept rate and read latency, alone and while an ingest runs.

    python bench/concurrency.py                 # human-readable
    python bench/concurrency.py --json          # one JSON object (the keys the store issue names)

One ``trapline serve`` (a child process, ephemeral loopback ports) on a fresh data dir. Two
phases of ``--seconds`` each, measured the same way in the same run:

* alone: ``--clients`` SMTP clients (smtplib) send real spam from the SpamAssassin corpus as
  fast as the trap accepts it, while a reader process reads the store every 100 ms the way a
  command does (take a read turn, open read-only, a ``stats``-like count and top-origins query,
  close; its own process, as a command is, not threads sharing the clients' interpreter);
* during ingest: the same, while ``trapline ingest`` of the SpamAssassin corpus (6,046 messages)
  runs in another process on the same data dir. The phase starts when that ingest has begun
  writing and counts only reads made while it is still running.

``--rounds`` (default 3) repeats all of it on a fresh serve and data dir and pools the reads: a
phase holds 40-60 reads, and the 99th percentile of so few is their maximum, not a p99.
``smtp_msgs_per_s_*`` is 250 replies per second over the phase (mean of the rounds);
``read_p99_ms_*`` is the 99th percentile of the read windows' wall time (including waiting for
a turn) over every round's reads. Targets: the trap
keeps at least half its rate during the ingest, and reads stay under 500 ms p99.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "mail" / "spamassassin-2002"


def _env(data: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    env["TRAPLINE_DATA_DIR"] = str(data)
    env["TRAPLINE_SMTP_PER_IP_PER_MINUTE"] = "100000000"
    return env


def _start_serve(data: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "trapline", "serve", "--smtp", "127.0.0.1:0", "--http", "off"],
        env=_env(data), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if m := re.match(r"smtp listening on 127\.0\.0\.1:(\d+)", line):
            return proc, int(m[1])
    raise RuntimeError("serve did not start")


def _bodies(n: int) -> list[bytes]:
    files = sorted(p for p in (CORPUS / "spam").iterdir() if p.name[0].isdigit())
    return [p.read_bytes() for p in files[:n]]


def _smtp_load(port: int, bodies: list[bytes], clients: int, stop: threading.Event) -> list[int]:
    counts = [0] * clients

    def one(k: int) -> None:
        i = k
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
            smtp.ehlo(f"bench{k}.example.net")
            while not stop.is_set():
                smtp.mail(f"bench{k}@sender.example")
                smtp.rcpt(f"rcpt{k}.{i}@traps.example.org")
                if smtp.data(bodies[i % len(bodies)])[0] == 250:
                    counts[k] += 1
                i += clients

    threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(60)
    return counts


def _read_once(data: Path) -> float:
    from trapline.store.access import reading

    started = time.perf_counter()
    with reading(data) as store:
        store.con.execute("SELECT count(*) FROM messages").fetchall()
        store.con.execute(
            "SELECT origin_ip, count(*) FROM messages GROUP BY 1 ORDER BY 2 DESC LIMIT 10"
        ).fetchall()
    return (time.perf_counter() - started) * 1000


def _reader_main(data: Path) -> None:
    """The reader process: one read every 100 ms; prints ``start_time latency_ms`` per read."""
    while True:
        started = time.time()
        took = _read_once(data)
        print(f"{started:.6f} {took:.3f}", flush=True)
        time.sleep(0.1)


def _start_reader(data: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--reader", str(data)],
        env=_env(data), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def _reads_between(reader: subprocess.Popen[str], start: float, end: float) -> list[float]:
    """Stop the reader; the latencies of the reads it began between ``start`` and ``end``."""
    reader.terminate()
    out, _ = reader.communicate(timeout=60)
    reads = (line.split() for line in out.splitlines() if line.strip())
    return [float(ms) for t, ms in reads if start <= float(t) <= end]


def _phase(
    data: Path, port: int, bodies: list[bytes], clients: int, seconds: float,
    while_alive: subprocess.Popen[str] | None,
) -> tuple[float, list[float]]:  # fmt: skip
    stop = threading.Event()
    result: list[list[int]] = []
    sender = threading.Thread(target=lambda: result.append(_smtp_load(port, bodies, clients, stop)))
    started = time.perf_counter()
    sender.start()
    reader = _start_reader(data)
    began = time.time()
    while time.perf_counter() - started < seconds:
        if while_alive is not None and while_alive.poll() is not None:
            break  # the ingest finished: the rest would be measured alone
        time.sleep(0.05)
    stop.set()
    ended = time.time()
    elapsed = time.perf_counter() - started
    reads = _reads_between(reader, began, ended)
    sender.join(120)
    return sum(result[0]) / elapsed, reads


def _p(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@dataclass(frozen=True, slots=True)
class _Round:
    alone_rate: float
    alone_reads: list[float]
    busy_rate: float
    busy_reads: list[float]
    ingest_running: bool


def _round(bodies: list[bytes], clients: int, seconds: float) -> _Round:
    """One serve on a fresh data dir: both phases; rates, read latencies, and whether the
    ingest outlasted its phase."""
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp:
        data = Path(tmp) / "data"
        serve, port = _start_serve(data)
        ingest: subprocess.Popen[str] | None = None
        try:
            # a store to read from before the first phase
            _phase(data, port, bodies, clients, 2.0, None)
            alone_rate, alone_reads = _phase(data, port, bodies, clients, seconds, None)
            ingest = subprocess.Popen(
                [sys.executable, "-m", "trapline", "ingest", str(CORPUS)],
                env=_env(data), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            time.sleep(1.0)  # past start-up: the ingest is reading and writing
            busy_rate, busy_reads = _phase(data, port, bodies, clients, seconds, ingest)
            ingest_running = ingest.poll() is None
            ingest.communicate(timeout=900)
        finally:
            if ingest is not None and ingest.poll() is None:
                ingest.kill()
                ingest.wait()
            serve.send_signal(signal.SIGTERM)
            serve.communicate(timeout=300)
    return _Round(alone_rate, alone_reads, busy_rate, busy_reads, ingest_running)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument(
        "--rounds", type=int, default=3,
        help="fresh serve + both phases this many times; the reads of all rounds are pooled",
    )  # fmt: skip
    ap.add_argument("--reader", type=Path, help=argparse.SUPPRESS)  # the reader process
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    if args.reader is not None:
        _reader_main(args.reader)
        return
    bodies = _bodies(200)
    rounds = [_round(bodies, args.clients, args.seconds) for _ in range(args.rounds)]
    alone_reads = [ms for r in rounds for ms in r.alone_reads]
    busy_reads = [ms for r in rounds for ms in r.busy_reads]
    alone_rate = statistics.fmean(r.alone_rate for r in rounds)
    busy_rate = statistics.fmean(r.busy_rate for r in rounds)
    ingest_running = all(r.ingest_running for r in rounds)
    out = {
        "smtp_msgs_per_s_alone": round(alone_rate, 1),
        "smtp_msgs_per_s_during_ingest": round(busy_rate, 1),
        "read_p99_ms_alone": round(_p(alone_reads, 99), 1),
        "read_p99_ms_during_ingest": round(_p(busy_reads, 99), 1),
    }
    if args.json:
        print(json.dumps(out))
        return
    print(
        f"SMTP accepted: {out['smtp_msgs_per_s_alone']} msgs/s alone, "
        f"{out['smtp_msgs_per_s_during_ingest']} during ingest "
        f"({busy_rate / alone_rate:.0%} kept); mean of {len(rounds)} rounds"
    )
    print(
        f"reads: p50 {_p(alone_reads, 50):.1f} / p99 {out['read_p99_ms_alone']} / max "
        f"{max(alone_reads):.1f} ms alone ({len(alone_reads)} reads), p50 {_p(busy_reads, 50):.1f}"
        f" / p99 {out['read_p99_ms_during_ingest']} / max {max(busy_reads):.1f} ms during ingest "
        f"({len(busy_reads)} reads)"
        + ("" if ingest_running else "; an ingest ended before its phase did")
    )


if __name__ == "__main__":
    main()
