"""Peak memory of the SMTP trap under 120 concurrent ~10 MB messages, this tree vs a baseline.

Each tree's trap (``start_smtp`` with its durable spool, no drain) runs in its own child process
on 127.0.0.1 with limits raised so every session is admitted at once. 120 smtplib clients (one
thread each) open a session, get their 354, wait for each other, then all send the same
~10 MB message: real SpamAssassin spam as a base64 attachment in 76-character lines (the shape
of a big spam), dot-stuffed. Peak RSS is the child's ``VmHWM``; ``rss_after_mb`` its
``VmRSS`` once every session ended. The baseline tree (``--baseline``, default the untouched
tree of the session) runs the same load in the same run. With ``--serve-cli`` the server is a
whole ``trapline serve`` of each tree instead (its drain moves the mail into the store, in the
same process or in a child of it: the figures are summed over the process and its children); the figures are taken once every 250 came back and again
(``drained_rss_mb``) after a SIGTERM-free wait for the spool to empty.

    python bench/smtp_memory.py                     # table
    python bench/smtp_memory.py --json              # one JSON object
    python bench/smtp_memory.py --serve-cli --json  # against `trapline serve`
    python bench/smtp_memory.py --baseline /tmp/main-before/src --messages 60
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SPAM = (
    Path(os.environ.get("TRAPLINE_SHARED_DATA", ROOT.parent / "shared" / "data"))
    / "mail"
    / "spamassassin-2002"
    / "spam"
)
TRAP = "traps.example.org"
MB = 1_000_000


# --- server side (child process, run with the tree under test on PYTHONPATH) ----------------


async def _serve(spool_dir: str, messages: int) -> None:
    from trapline.config import DEFAULTS, load_settings
    from trapline.traps.smtp.server import start_smtp
    from trapline.traps.smtp.spool import Spool

    wanted = {
        "data_dir": spool_dir,
        "trap_domains": [TRAP],
        "smtp_per_ip_per_minute": 10**9,
        "smtp_max_connections": 10 * messages,
        "smtp_max_sessions_per_ip": 10 * messages,
        "smtp_data_timeout_s": 900.0,
        "smtp_command_timeout_s": 900.0,
        "smtp_inflight_data_bytes": (messages + 1) * DEFAULTS["smtp_max_message_bytes"],
    }
    # The baseline may predate some limits: give it only the settings it knows.
    settings = load_settings({k: v for k, v in wanted.items() if k in DEFAULTS})
    spool = Spool(Path(spool_dir) / "spool")
    spool.start()
    server = await start_smtp(settings, spool, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes
    server.close()
    spool.close()


# --- client side --------------------------------------------------------------------------------


def big_message(size: int) -> bytes:
    """A real spam's headers and text, then real spam bytes as a base64 attachment up to about
    ``size`` bytes; CRLF lines, dot-stuffed, ending with the end-of-data mark."""
    files = sorted(p for p in SPAM.iterdir() if p.name[0].isdigit())
    head, _, text = files[0].read_bytes().replace(b"\r\n", b"\n").partition(b"\n\n")
    head_lines = [ln for ln in head.split(b"\n") if not ln.lower().startswith(b"content-")]
    parts = [
        *head_lines,
        b"MIME-Version: 1.0",
        b'Content-Type: multipart/mixed; boundary="b1"',
        b"",
        b"--b1",
        b"Content-Type: text/plain",
        b"",
        *text.split(b"\n"),
        b"--b1",
        b'Content-Type: application/octet-stream; name="offer.bin"',
        b"Content-Transfer-Encoding: base64",
        b"",
    ]
    blob = bytearray()
    while len(blob) * 4 // 3 < size:
        for path in files:
            blob += path.read_bytes()
    # base64 lines: 57 bytes in, 76 characters and a CRLF out
    encoded = base64.encodebytes(bytes(blob[: size * 57 // 78])).replace(b"\n", b"\r\n")
    lines = b"\r\n".join(parts) + b"\r\n" + encoded + b"--b1--\r\n"
    stuffed = b"\r\n".join(b"." + ln if ln.startswith(b".") else ln for ln in lines.split(b"\r\n"))
    return stuffed + b".\r\n"  # ``lines`` ended with CRLF, so this is the lone-dot line


def spooled_messages(spool: Path) -> int:
    """Message records in the spool's durable segments (drained or not), read by their heads."""
    count = 0
    for path in [*(spool / "new").glob("*.seg"), *(spool / "done").glob("*.seg")]:
        with path.open("rb") as f:
            while head := f.readline():
                _, kind, n_json, n_data = head.split()
                count += kind == b"message"
                f.seek(int(n_json) + int(n_data) + 1, os.SEEK_CUR)
    return count


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a serve's drain runs in a child process of its own)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            found += _tree(int(child))
    return found


def _memory(pid: int) -> dict[str, float]:
    """VmHWM and VmRSS in MiB, summed over ``pid`` and its children: the sum of the peaks is an
    upper bound of the peak of the sum."""
    fields = {"VmHWM": 0.0, "VmRSS": 0.0}
    for one in _tree(pid):
        try:
            status = Path(f"/proc/{one}/status").read_text()
        except OSError:  # exited meanwhile
            continue
        for line in status.splitlines():
            key, _, value = line.partition(":")
            if key in fields:
                fields[key] += int(value.split()[0]) / 1024  # kB → MiB
    return fields


def _client(port: int, body: bytes, k: int, gate: threading.Barrier, codes: list[int]) -> None:
    client = smtplib.SMTP("127.0.0.1", port, timeout=900)
    try:
        client.ehlo("bench.example")
        client.mail("bulk@sender.example")
        client.rcpt(f"m{k}@{TRAP}")
        client.putcmd("data")
        code, _ = client.getreply()
        gate.wait()  # every session in DATA before anyone sends
        if code == 354:
            client.send(body)  # already dot-stuffed and terminated
            code, _ = client.getreply()
        codes.append(code)
        client.quit()
    finally:
        client.close()


def _serve_cli(src: Path, tmp: str, messages: int) -> tuple[subprocess.Popen[str], int]:
    """``trapline serve`` of the tree in ``src`` with the bench's limits; (process, SMTP port)."""
    env = dict(os.environ, PYTHONPATH=str(src), TRAPLINE_DATA_DIR=f"{tmp}/data")
    known = subprocess.run(
        [sys.executable, "-c", "import json; from trapline.config import DEFAULTS as D; "
         "print(json.dumps({k: D[k] for k in D if k.startswith('smtp_')}))"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    defaults = json.loads(known.stdout)
    wanted = {
        "smtp_per_ip_per_minute": 10**9,
        "smtp_max_connections": 10 * messages,
        "smtp_max_sessions_per_ip": 10 * messages,
        "smtp_data_timeout_s": 900.0,
        "smtp_command_timeout_s": 900.0,
        "smtp_inflight_data_bytes": (messages + 1) * defaults["smtp_max_message_bytes"],
    }
    env.update({f"TRAPLINE_{k.upper()}": str(v) for k, v in wanted.items() if k in defaults})
    child = subprocess.Popen(
        [sys.executable, "-c", "from trapline.cli.main import cli; cli()",
         "serve", "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    for line in child.stdout:
        if m := re.match(r"smtp listening on 127\.0\.0\.1:(\d+)", line):
            threading.Thread(target=child.stdout.read, daemon=True).start()  # keep it flowing
            return child, int(m[1])
    raise RuntimeError(f"trapline serve from {src} did not start")


def run_tree(src: Path, body: bytes, messages: int, serve_cli: bool = False) -> dict[str, Any]:
    """Load one tree's trap and return its memory figures and how many messages got 250."""
    env = dict(os.environ, PYTHONPATH=str(src))
    with tempfile.TemporaryDirectory(prefix="bench-smtp-memory-") as tmp:
        if serve_cli:
            child, port = _serve_cli(src, tmp, messages)
        else:
            child = subprocess.Popen(
                [sys.executable, __file__, "--serve", tmp, "--messages", str(messages)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
            )  # fmt: skip
        try:
            assert child.stdout is not None
            port = port if serve_cli else int(child.stdout.readline())
            idle = _memory(child.pid)["VmRSS"]
            gate = threading.Barrier(messages)
            codes: list[int] = []
            started = time.perf_counter()
            threads = [
                threading.Thread(target=_client, args=(port, body, k, gate, codes))
                for k in range(messages)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds = time.perf_counter() - started
            mem = _memory(child.pid)
            if serve_cli:  # the drain's share: wait until the spool is empty (bounded)
                new = Path(tmp) / "data" / "spool" / "new"
                deadline = time.monotonic() + 300
                while list(new.glob("*.seg")) and time.monotonic() < deadline:
                    time.sleep(0.5)
                mem["drained"] = _memory(child.pid)["VmHWM"]
                child.terminate()
            else:
                assert child.stdin is not None
                child.stdin.close()
            child.wait(timeout=300)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        accepted = spooled_messages(Path(tmp) / ("data/spool" if serve_cli else "spool"))
    return {
        "peak_rss_mb": round(mem["VmHWM"], 1),
        "rss_after_mb": round(mem["VmRSS"], 1),
        "drained_peak_rss_mb": round(mem.get("drained", mem["VmHWM"]), 1),
        "idle_rss_mb": round(idle, 1),
        "ok": codes.count(250),
        "accepted": accepted,
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--messages", type=int, default=120, help="concurrent messages")
    parser.add_argument("--size-mb", type=float, default=10.0, help="message size (MB, 10^6)")
    parser.add_argument(
        "--baseline", type=Path, default=Path("/work/baseline/src"), help="baseline src dir"
    )
    parser.add_argument(
        "--serve-cli", action="store_true", help="load `trapline serve` (with its drain)"
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve, args.messages))
        return
    body = big_message(int(args.size_mb * MB) - 4096)
    mine = run_tree(ROOT / "src", body, args.messages, args.serve_cli)
    base = run_tree(args.baseline, body, args.messages, args.serve_cli)
    out = {
        "messages": args.messages,
        "message_mb": round(len(body) / MB, 2),
        "peak_rss_mb": mine["peak_rss_mb"],
        "baseline_peak_rss_mb": base["peak_rss_mb"],
        "rss_after_mb": mine["rss_after_mb"],
        "baseline_rss_after_mb": base["rss_after_mb"],
        "idle_rss_mb": mine["idle_rss_mb"],
        "baseline_idle_rss_mb": base["idle_rss_mb"],
        "accepted": mine["ok"],
        "baseline_accepted": base["ok"],
        "seconds": mine["seconds"],
        "baseline_seconds": base["seconds"],
        "peak_ratio": round(mine["peak_rss_mb"] / base["peak_rss_mb"], 3),
    }
    if args.serve_cli:  # the peak once the drain has stored everything
        out["drained_peak_rss_mb"] = mine["drained_peak_rss_mb"]
        out["baseline_drained_peak_rss_mb"] = base["drained_peak_rss_mb"]
    if mine["ok"] != mine["accepted"] or base["ok"] != base["accepted"]:
        raise SystemExit(f"250 replies and spooled messages differ: {mine} {base}")
    if args.json:
        print(json.dumps(out))
        return
    for key, value in out.items():
        print(f"{key:24} {value}")


if __name__ == "__main__":
    main()
