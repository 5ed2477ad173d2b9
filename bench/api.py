"""API benchmark: the overview aggregate, a message search and IP lookups on >= 1M messages.

The store: real spam (SpamAssassin spam + spam_2, both Nazario phishing mboxes, the 2023-25
personal spam) ingested, mapped with the 2008 RouteViews table and clustered into campaigns,
then grown to ``--messages`` with SQL: each copy of a real message keeps its subject, sender,
network and campaign, moves in time by whole days and comes from another host of the same /24;
its URLs are copied with it (bodies and hops are not). The server is ``trapline web`` in its own
process (read-only store, loopback); load comes from ``wrk`` (Debian) with a Lua script that
rotates through real ASNs and IPs. The reference for the search is datasette serving the same
messages table exported to SQLite, asked the same question (``origin_asn = X``, newest first,
50 rows; ``_nocount``/``_nofacet`` so it does no more work than trapline's API).

Usage: python bench/api.py [--messages 1000000] [--seconds 8] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("TRAPLINE_SHARED_DATA", ROOT.parent / "shared" / "data"))
MAIL = DATA / "mail"
ROUTING = DATA / "routing" / "routeviews-pyasn"
SOURCES = (
    MAIL / "spamassassin-2002" / "spam",
    MAIL / "spamassassin-2002" / "spam_2",
    MAIL / "nazario-phishing-2005" / "phishing0.mbox",
    MAIL / "nazario-phishing-2005" / "phishing1.mbox",
    MAIL / "personal-spam-2023-2025",
)
SQLITE_COLUMNS = (
    "id", "received_at", "subject", "from_addr", "from_domain", "origin_ip", "origin_asn",
    "origin_prefix", "campaign_id", "n_urls", "n_attachments", "size",
)  # fmt: skip


def trapline(data_dir: Path, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "trapline", "--data-dir", str(data_dir), "-q", *args]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def build_base(data_dir: Path) -> None:
    """Ingest the real corpora, map them as of their date, cluster them."""
    trapline(data_dir, "routing", "import", str(ROUTING / "ipasn_20080501_v12.dat.gz"))
    trapline(data_dir, "routing", "import", str(ROUTING / "asnames.json"))
    trapline(data_dir, "ingest", *map(str, SOURCES))
    trapline(
        data_dir, "feeds", "import", str(DATA / "blocklists" / "spamhaus-drop-history" / "monthly")
    )
    trapline(data_dir, "enrich")
    trapline(data_dir, "analyze", "campaigns")


def grow(data_dir: Path, target: int) -> int:
    """Copy the real messages (and their URLs) until the store holds >= ``target`` messages."""
    import duckdb

    con = duckdb.connect(str(data_dir / "trapline.duckdb"))
    try:
        (n,) = con.execute("SELECT count(*) FROM messages").fetchone() or (0,)
        copies = max(0, -(-target // max(1, n)) - 1)
        con.execute("SET preserve_insertion_order = false")
        # Copy k of message m: id sha256(m.id || '#' || k), k days later, host (last octet) moved.
        con.execute(
            f"""
            CREATE TEMP TABLE copies AS
            SELECT m.id AS src, sha256(m.id || '#' || k::VARCHAR) AS id, k
            FROM messages m, range(1, {copies + 1}) r(k)
            """
        )
        cols = [r[0] for r in con.execute("DESCRIBE messages").fetchall()]
        moved = {
            "id": "c.id",
            "received_at": "m.received_at + to_days(c.k::INTEGER)",
            "date": "m.date + to_days(c.k::INTEGER)",
            "body_text": "NULL",
            "source": "'bench-copy'",
            "origin_ip": "CASE WHEN m.origin_ip LIKE '%.%.%.%' THEN "
            "regexp_replace(m.origin_ip, '\\.\\d+$', '.' || ((hash(c.id) % 254) + 1)::VARCHAR) "
            "ELSE m.origin_ip END",
        }
        select = ", ".join(moved.get(c, f"m.{c}") for c in cols)
        con.execute(
            f"INSERT INTO messages ({', '.join(cols)}) SELECT {select} "
            "FROM copies c JOIN messages m ON m.id = c.src"
        )
        ucols = [r[0] for r in con.execute("DESCRIBE urls").fetchall()]
        uselect = ", ".join("c.id" if c == "message_id" else f"u.{c}" for c in ucols)
        con.execute(
            f"INSERT INTO urls ({', '.join(ucols)}) SELECT {uselect} "
            "FROM copies c JOIN urls u ON u.message_id = c.src"
        )
        con.execute("CHECKPOINT")
        (total,) = con.execute("SELECT count(*) FROM messages").fetchone() or (0,)
        return int(total)
    finally:
        con.close()


def export_sqlite(data_dir: Path, path: Path) -> None:
    """The messages table (the searched columns) as SQLite, for datasette."""
    import duckdb

    con = duckdb.connect(str(data_dir / "trapline.duckdb"), read_only=True)
    out = sqlite3.connect(path)
    out.execute(
        "CREATE TABLE messages (id TEXT PRIMARY KEY, received_at TEXT, subject TEXT, "
        "from_addr TEXT, from_domain TEXT, origin_ip TEXT, origin_asn INTEGER, "
        "origin_prefix TEXT, campaign_id TEXT, n_urls INTEGER, n_attachments INTEGER, size INTEGER)"
    )
    cols = [
        "strftime(received_at, '%Y-%m-%dT%H:%M:%S')" if c == "received_at" else c
        for c in SQLITE_COLUMNS
    ]
    cur = con.execute(f"SELECT {', '.join(cols)} FROM messages")
    marks = ", ".join("?" * len(SQLITE_COLUMNS))
    while rows := cur.fetchmany(50_000):
        out.executemany(f"INSERT INTO messages VALUES ({marks})", rows)
    out.commit()
    out.close()
    con.close()


def start(cmd: list[str], ready: str, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        if ready in line:
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError(f"{cmd[0]} did not start")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


LUA = """
local paths = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1], {%s})
end
"""


def wrk(base: str, paths: list[str], seconds: float, headers: dict[str, str]) -> dict[str, float]:
    """p50/p99 latency (ms) and requests/s from wrk, 2 threads, 4 connections."""
    lua = LUA % (
        ", ".join(json.dumps(p) for p in paths),
        ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()),
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(lua)
    try:
        run = subprocess.run(
            ["wrk", "-t2", "-c4", f"-d{int(seconds)}s", "--latency", "-s", fh.name, base],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    finally:
        os.unlink(fh.name)
    out = run.stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m is None:
            raise RuntimeError(f"no {label}% in wrk output:\n{out}")
        return float(m[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m[2]]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors[1]} error responses:\n{out}")
    return {"p50_ms": ms("50"), "p99_ms": ms("99"), "rps": float(rps[1]) if rps else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--workdir", type=Path, default=None, help="Keep the stores here.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="trapline-bench-api-"))
    data = work / "data"
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
    t0 = time.monotonic()
    if not (data / "trapline.duckdb").exists():
        build_base(data)
        say(f"base store built in {time.monotonic() - t0:.0f}s")
    total = grow(data, args.messages)
    say(f"store holds {total:,} messages ({time.monotonic() - t0:.0f}s)")
    sqlite_path = work / "messages.db"
    if not sqlite_path.exists():
        export_sqlite(data, sqlite_path)
        say(f"exported to SQLite ({time.monotonic() - t0:.0f}s)")

    import duckdb

    con = duckdb.connect(str(data / "trapline.duckdb"), read_only=True)
    asns = [int(r[0]) for r in con.execute(
        "SELECT origin_asn FROM messages WHERE origin_asn IS NOT NULL GROUP BY 1 "
        "ORDER BY count(*) DESC LIMIT 20").fetchall()]  # fmt: skip
    ips = [str(r[0]) for r in con.execute(
        "SELECT DISTINCT origin_ip FROM messages WHERE origin_ip IS NOT NULL "
        "ORDER BY hash(origin_ip) LIMIT 1000").fetchall()]  # fmt: skip
    con.close()
    with duckdb.connect(str(data / "trapline.duckdb")) as rw:
        from trapline.serve.api.keys import create_key
        from trapline.store.duckdb import Store

        store = object.__new__(Store)
        store.con = rw
        key = create_key(store, "analyst", "bench").key
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    port, ds_port = free_port(), free_port()
    web = start([sys.executable, "-m", "trapline", "--data-dir", str(data), "web",
                 f"127.0.0.1:{port}"], "web listening", env)  # fmt: skip
    datasette = start(["datasette", "serve", str(sqlite_path), "--host", "127.0.0.1", "--port",
                       str(ds_port), "--setting", "sql_time_limit_ms", "20000"],
                      "Uvicorn running", env)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {key}"}
    try:
        # Warm: the aggregates and the IP index are computed once per store version.
        with httpx.Client(headers=auth, timeout=300) as c:
            for path in (
                "/api/v1/overview",
                f"/api/v1/ip/{ips[0]}",
                f"/api/v1/messages?asn={asns[0]}",
            ):
                c.get(base + path).raise_for_status()
            deadline = time.monotonic() + 600
            while not c.get(base + "/api/v1/status").json()["search_index"]["ready"]:
                if time.monotonic() > deadline:
                    raise RuntimeError("the search index was not built in 10 minutes")
                time.sleep(1)
        httpx.get(f"http://127.0.0.1:{ds_port}/messages/messages.json?_size=1", timeout=300)
        overview = wrk(base, ["/api/v1/overview"], args.seconds, auth)
        search_paths = [f"/api/v1/messages?asn={a}&limit=50" for a in asns]
        search = wrk(base, search_paths, args.seconds, auth)
        ip = wrk(base, [f"/api/v1/ip/{x}" for x in ips], args.seconds, auth)
        ds_paths = [f"/messages/messages.json?origin_asn={a}&_sort_desc=received_at&_size=50"
                    "&_nocount=1&_nofacet=1" for a in asns]  # fmt: skip
        ds = wrk(f"http://127.0.0.1:{ds_port}", ds_paths, args.seconds, {})
    finally:
        for proc in (web, datasette):
            proc.terminate()
            proc.wait(timeout=60)
    result = {
        "overview_p99_ms": round(overview["p99_ms"], 2),
        "search_p99_ms": round(search["p99_ms"], 2),
        "ip_p99_ms": round(ip["p99_ms"], 2),
        "ip_rps": round(ip["rps"], 1),
        "datasette_search_p99_ms": round(ds["p99_ms"], 2),
    }
    if args.json:
        print(json.dumps(result))
        return
    say(f"messages: {total:,}")
    for name, r in (
        ("overview", overview),
        ("search", search),
        ("ip", ip),
        ("datasette search", ds),
    ):
        say(
            f"{name:<17} p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms  {r['rps']:8.1f} req/s"
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
