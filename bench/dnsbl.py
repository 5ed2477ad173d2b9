"""DNSBL throughput and latency: trapline's server vs rbldnsd serving the exported zone.

Builds a store with 1M distinct listed sender addresses (synthetic origins of synthetic spam rows,
inserted with SQL), loads it through the DNSBL's own listing path, exports the same list as an
rbldnsd ip4set, and drives both servers with ``dnsperf`` (UDP, half the queries for listed
addresses) in the same run, alternating rounds:

- peak: ``dnsperf -c 4 -q 100`` for ``--seconds``; the best round of each server is its ``qps``;
- latency: trapline at half its peak rate (``-Q``), ``-v`` per-query latencies → ``p99_ms``;
- ``rss_mb``: resident memory of every trapline server process with 1M listings loaded.

dnsperf and the servers share this machine's cores, so the figures are lower bounds for both; the
ratio is what compares. ``--json`` prints exactly qps, p99_ms, rbldnsd_qps, ratio, rss_mb; the
details (rounds, load times, machine load) go to stderr.

    python bench/dnsbl.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ZONE = "senders.bench.example.org"
MULT = 2654435761  # odd: i -> i * MULT mod 2^32 is a bijection, so addresses never repeat


def _ip(value: int) -> str:
    return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


def _addr(i: int) -> int:
    return (i * MULT + 0x9E3779B9) & 0xFFFFFFFF


def build_store(data_dir: Path, n: int) -> float:
    from trapline.store.duckdb import open_store

    started = time.perf_counter()
    with open_store(data_dir) as store:
        store.con.execute(
            f"""INSERT INTO messages (id, size, received_at, received_at_source, origin_ip, ingested_at)
            SELECT 'bench' || i, 1000, TIMESTAMP '2026-01-01' + to_seconds(i % 86400), 'received',
                   concat_ws('.', (a >> 24), (a >> 16) & 255, (a >> 8) & 255, a & 255), now()
            FROM (SELECT i, ((i * {MULT} + {0x9E3779B9}) % 4294967296)::BIGINT AS a
                  FROM range({n}) t(i))"""
        )
    return time.perf_counter() - started


def query_file(path: Path, n_listed: int, count: int) -> None:
    import random

    rng = random.Random(7)
    lines = []
    for k in range(count):
        # Half hit (a listed index), half miss (an index past the listed range: never listed).
        i = rng.randrange(n_listed) if k % 2 == 0 else n_listed + rng.randrange(n_listed)
        a = _addr(i)
        lines.append(f"{a & 255}.{(a >> 8) & 255}.{(a >> 16) & 255}.{a >> 24}.{ZONE} A")
    path.write_text("\n".join(lines) + "\n")


def free_port() -> int:
    for _ in range(50):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            u.close()
            t.close()
    raise RuntimeError("no free port")


def start_trapline(data_dir: Path, workers: int) -> tuple[subprocess.Popen[str], int, float]:
    port = free_port()
    env = {**os.environ, "TRAPLINE_DATA_DIR": str(data_dir)}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "trapline", "-q", "dnsbl", "--listen", f"127.0.0.1:{port}",
         "--zone", "bench.example.org", "--max-age", "0", "--workers", str(workers),
         "--reload", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening" not in line:
        raise RuntimeError(f"trapline dnsbl did not start: {line}{proc.stdout.read()}")
    # Keep reading its output so the server never blocks on a full pipe.
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    # Worker processes build their index after the parent says it listens: wait for them.
    wait_answering(port, workers)
    return proc, port, time.perf_counter() - started


def wait_answering(port: int, workers: int) -> None:
    import dns.message
    import dns.query

    q = dns.message.make_query(f"2.0.0.127.{ZONE}", "A")
    deadline = time.monotonic() + 300
    ok = 0
    while ok < 40 * workers and time.monotonic() < deadline:
        try:
            dns.query.udp(q, "127.0.0.1", port=port, timeout=0.5)
            ok += 1
        except Exception:
            ok = 0
            time.sleep(0.5)


def start_rbldnsd(folder: Path) -> tuple[subprocess.Popen[str], int, float]:
    port = free_port()
    cmd = ["rbldnsd", "-n", "-b", f"127.0.0.1/{port}", f"{ZONE}:ip4set:senders.zone"]
    if os.geteuid() == 0:
        cmd[1:1] = ["-u", "rbldns"]
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "started" in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, port, time.perf_counter() - started
    raise RuntimeError("rbldnsd did not start")


def dnsperf(port: int, queries: Path, seconds: float, *extra: str) -> str:
    out = subprocess.run(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l", str(seconds),
         "-t", "2", *extra],
        capture_output=True, text=True, timeout=seconds + 60,
    )  # fmt: skip
    return out.stdout + out.stderr


def qps_of(report: str) -> float:
    m = re.search(r"Queries per second:\s+([\d.]+)", report)
    if not m:
        raise RuntimeError(f"dnsperf said:\n{report}")
    return float(m[1])


def lost_of(report: str) -> str:
    m = re.search(r"Queries lost:\s+(\d+ \([\d.]+%\))", report)
    return m[1] if m else "?"


def latencies_ms(report: str) -> list[float]:
    # -v lines: "> NOERROR bench... A 0.000123" (rcode, query, latency in seconds)
    out = []
    for line in report.splitlines():
        if line.startswith(">"):
            parts = line.split()
            try:
                out.append(float(parts[-1]) * 1000)
            except ValueError:
                continue
    return out


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children (worker processes), in MB."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--listings", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200_000, help="distinct queries in the file")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of one dnsperf round")
    parser.add_argument("--rounds", type=int, default=2, help="peak rounds per server")
    parser.add_argument("--workers", type=int, default=1, help="trapline answering processes")
    args = parser.parse_args()
    if not (shutil.which("dnsperf") and shutil.which("rbldnsd")):
        sys.exit("needs dnsperf and rbldnsd (apt-get install dnsperf rbldnsd)")
    from trapline.config import load_settings
    from trapline.export.rbldnsd import export_rbldnsd
    from trapline.serve.dnsbl.run import read_only_source

    def note(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    note(f"load average before: {os.getloadavg()}, cores: {os.cpu_count()}")
    folder = Path(tempfile.mkdtemp(prefix="trapline-bench-dnsbl-"))
    os.chmod(folder, 0o755)  # rbldnsd reads its zone as an unprivileged user
    procs: list[subprocess.Popen[str]] = []
    try:
        data_dir = folder / "data"
        note(
            f"store: {args.listings} listed senders inserted in {build_store(data_dir, args.listings):.1f} s"
        )
        settings = load_settings(
            {
                "data_dir": str(data_dir),
                "dnsbl_zones": ["bench.example.org"],
                "dnsbl_max_age_days": 0,
            }
        )
        t = time.perf_counter()
        listing = read_only_source(settings)()
        note(f"listings read from the store in {time.perf_counter() - t:.1f} s")
        export_rbldnsd(listing, settings, folder / "senders.zone")
        del listing
        queries = folder / "queries.txt"
        query_file(queries, args.listings, args.queries)

        tl, tl_port, tl_start = start_trapline(data_dir, args.workers)
        procs.append(tl)
        rb, rb_port, rb_start = start_rbldnsd(folder)
        procs.append(rb)
        memory = rss_mb(tl.pid)
        note(f"trapline up in {tl_start:.1f} s ({args.workers} workers, {memory:.0f} MB RSS); "
             f"rbldnsd up in {rb_start:.1f} s ({rss_mb(rb.pid):.0f} MB RSS)")  # fmt: skip
        ours: list[float] = []
        theirs: list[float] = []
        for r in range(args.rounds):
            for name, port, sink in (("trapline", tl_port, ours), ("rbldnsd", rb_port, theirs)):
                report = dnsperf(port, queries, args.seconds, "-c", "4", "-q", "100")
                sink.append(qps_of(report))
                note(f"round {r + 1} {name}: {sink[-1]:.0f} q/s, lost {lost_of(report)}, "
                     f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
        peak = max(ours)
        report = dnsperf(tl_port, queries, args.seconds, "-c", "1", "-Q", str(int(peak / 2)), "-v")
        lat = sorted(latencies_ms(report))
        p99 = lat[int(0.99 * (len(lat) - 1))] if lat else float("nan")
        note(f"latency at {int(peak / 2)} q/s: {len(lat)} answers, median "
             f"{statistics.median(lat) if lat else float('nan'):.3f} ms, p99 {p99:.3f} ms, "
             f"lost {lost_of(report)}")  # fmt: skip
        memory = max(memory, rss_mb(tl.pid))
        result = {
            "qps": round(peak),
            "p99_ms": round(p99, 3),
            "rbldnsd_qps": round(max(theirs)),
            "ratio": round(peak / max(theirs), 3),
            "rss_mb": round(memory, 1),
        }
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(folder, ignore_errors=True)
    note(f"load average after: {os.getloadavg()}")
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>12} {value}")


if __name__ == "__main__":
    main()
