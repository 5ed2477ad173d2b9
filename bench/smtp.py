"""SMTP trap throughput with a durable (fsync'd) spool vs aiosmtpd's bare ``Sink`` handler.

Runs each server in its own child process on 127.0.0.1 and drives it from this process with an
asyncio SMTP client: 1 client, then 50 concurrent clients, real SpamAssassin spam bodies. Latency
is MAIL FROM → final 250 per message. The same load against ``Sink`` (no storage at all) in the
same run is the upper bound; ``ratio_*`` = trap / sink (target ≥ 0.5 at 50 clients).

    python bench/smtp.py            # table
    python bench/smtp.py --json     # one JSON object
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPAM = (
    Path(os.environ.get("TRAPLINE_SHARED_DATA", ROOT.parent / "shared" / "data"))
    / "mail"
    / "spamassassin-2002"
    / "spam"
)
TRAP = "traps.example.org"


# --- server side (child process) ----------------------------------------------------------------


async def _serve(kind: str, spool_dir: str) -> None:
    loop = asyncio.get_running_loop()
    spool = None
    if kind == "trap":
        from trapline.config import load_settings
        from trapline.traps.smtp.server import start_smtp
        from trapline.traps.smtp.spool import Spool

        settings = load_settings(
            {
                "data_dir": spool_dir,
                "trap_domains": [TRAP],
                "smtp_per_ip_per_minute": 10**9,
                "smtp_max_connections": 1000,
            }
        )
        spool = Spool(Path(spool_dir) / "spool")
        spool.start()
        server = await start_smtp(settings, spool, "127.0.0.1", 0)
    else:
        from aiosmtpd.handlers import Sink
        from aiosmtpd.smtp import SMTP

        handler = Sink()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="sink", loop=loop), "127.0.0.1", 0
        )
    print(server.sockets[0].getsockname()[1], flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # run until the parent closes our stdin
    server.close()
    if spool is not None:
        spool.close()
        print(json.dumps({"commits": spool.commits}), flush=True)


# --- client side --------------------------------------------------------------------------------


def load_bodies(n: int = 200) -> list[bytes]:
    """Real spam, CRLF line endings, dot-stuffed (RFC 5321 §4.5.2), lines ≤ 998 octets so the
    bare aiosmtpd server accepts every one too."""
    out = []
    for path in sorted(SPAM.iterdir()):
        if not path.name[0].isdigit():
            continue
        lines = path.read_bytes().replace(b"\r\n", b"\n").split(b"\n")
        if max(len(line) for line in lines) > 998:
            continue
        body = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)
        out.append(body + b"\r\n.\r\n")
        if len(out) == n:
            break
    return out


async def _reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server hung up")
        if line[3:4] != b"-":
            return line


async def _client(
    port: int, bodies: list[bytes], count: int, k: int, latencies: list[float]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await _reply(reader)
    writer.write(b"EHLO bench.example\r\n")
    await _reply(reader)
    for i in range(count):
        t0 = time.perf_counter()
        writer.write(b"MAIL FROM:<bulk@sender.example>\r\n")
        assert (await _reply(reader)).startswith(b"250")
        writer.write(f"RCPT TO:<b{k}.{i}@{TRAP}>\r\n".encode())
        assert (await _reply(reader)).startswith(b"250")
        writer.write(b"DATA\r\n")
        assert (await _reply(reader)).startswith(b"354")
        writer.write(bodies[(k * 7 + i) % len(bodies)])
        line = await _reply(reader)
        assert line.startswith(b"250"), line
        latencies.append(time.perf_counter() - t0)
    writer.write(b"QUIT\r\n")
    await _reply(reader)
    writer.close()


async def _load(port: int, bodies: list[bytes], clients: int, total: int) -> dict[str, float]:
    latencies: list[float] = []
    per = total // clients
    t0 = time.perf_counter()
    await asyncio.gather(*[_client(port, bodies, per, k, latencies) for k in range(clients)])
    elapsed = time.perf_counter() - t0
    ms = sorted(x * 1000 for x in latencies)
    return {
        "msgs_per_s": len(ms) / elapsed,
        "p50_ms": statistics.median(ms),
        "p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        "messages": len(ms),
    }


def run_against(
    kind: str, bodies: list[bytes], plan: list[tuple[int, int]]
) -> tuple[dict[int, dict[str, float]], dict[str, int]]:
    with tempfile.TemporaryDirectory(prefix=f"bench-smtp-{kind}-") as tmp:
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, "--dir", tmp],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline())
        results = {
            clients: asyncio.run(_load(port, bodies, clients, total)) for clients, total in plan
        }
        child.stdin.close()
        tail = child.stdout.read()
        child.wait(timeout=60)
        extra = json.loads(tail.strip().splitlines()[-1]) if tail.strip() else {}
        if kind == "trap":
            extra["spooled_files"] = len(list((Path(tmp) / "spool" / "new").glob("*.seg")))
    return results, extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--serve", choices=["trap", "sink"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--messages", type=int, default=2000, help="messages for the 50-client run")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve, args.dir))
        return
    bodies = load_bodies()
    plan = [(1, max(50, args.messages // 8)), (50, args.messages)]
    trap, trap_extra = run_against("trap", bodies, plan)
    sink, _ = run_against("sink", bodies, plan)
    out = {
        "msgs_per_s_1": round(trap[1]["msgs_per_s"], 1),
        "p50_ms_1": round(trap[1]["p50_ms"], 2),
        "p99_ms_1": round(trap[1]["p99_ms"], 2),
        "msgs_per_s_50": round(trap[50]["msgs_per_s"], 1),
        "p50_ms_50": round(trap[50]["p50_ms"], 2),
        "p99_ms_50": round(trap[50]["p99_ms"], 2),
        "sink_msgs_per_s_1": round(sink[1]["msgs_per_s"], 1),
        "sink_p99_ms_1": round(sink[1]["p99_ms"], 2),
        "sink_msgs_per_s_50": round(sink[50]["msgs_per_s"], 1),
        "sink_p99_ms_50": round(sink[50]["p99_ms"], 2),
        "ratio_1": round(trap[1]["msgs_per_s"] / sink[1]["msgs_per_s"], 3),
        "ratio_50": round(trap[50]["msgs_per_s"] / sink[50]["msgs_per_s"], 3),
        "messages_1": int(trap[1]["messages"]),
        "messages_50": int(trap[50]["messages"]),
        "spool_segments": trap_extra.get(
            "commits"
        ),  # fsync'd files: fewer than messages = group commit
        "target_ratio_50": 0.5,
    }
    if args.json:
        print(json.dumps(out))
        return
    for key, value in out.items():
        print(f"{key:>20}  {value}")


if __name__ == "__main__":
    main()
