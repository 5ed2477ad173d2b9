"""One store, many users: `trapline serve` keeps catching mail while commands read, ingest and
analyse the same data dir (real processes, real sockets on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import shared, wait_for
from trap_helpers import TrapProcess, send_one, serve_env, spam_bodies, spooled_message_ids
from trapline.store.access import reading

HARVESTER_UA = "Mozilla/4.0 (compatible; EmailSiphon 1.0)"


def _cli(
    data: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trapline", *args],
        env=env or serve_env(data), capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _harvest(http_port: int, domain: str, n: int) -> list[str]:
    """``n`` trap addresses, each from its own honeypot page view (one visit each)."""
    pattern = re.compile(r"[A-Za-z0-9._%+-]+@" + re.escape(domain))
    out: list[str] = []
    with httpx.Client(headers={"user-agent": HARVESTER_UA}) as web:
        while len(out) < n:
            page = web.get(f"http://127.0.0.1:{http_port}/staff/").text
            found = sorted(set(pattern.findall(page)))
            assert len(found) == 1, found
            out.append(found[0])
    return out


def _stored(data: Path) -> dict[str, int]:
    with reading(data) as store:
        con = store.con

        def one(sql: str) -> int:
            row = con.execute(sql).fetchone()
            return int(row[0]) if row else 0

        return {
            "raw": one("SELECT count(*) FROM raw"),
            "messages": one("SELECT count(*) FROM messages"),
            "quarantined": one("SELECT count(*) FROM quarantine WHERE id IS NOT NULL"),
            "trap": one("SELECT count(*) FROM raw WHERE source LIKE 'smtp-trap:%'"),
            "trap_unlinked": one(
                "SELECT count(*) FROM messages WHERE source LIKE 'smtp-trap:%' "
                "AND trap_visit_id IS NULL"
            ),
        }


def test_commands_read_and_write_while_serve_runs(tmp_path: Path) -> None:
    bodies = spam_bodies(40)  # skips before any process starts when the corpus is absent
    folder = tmp_path / "mail"
    folder.mkdir()
    for i, body in enumerate(bodies[20:]):
        (folder / f"{i:02d}.eml").write_bytes(body)
    data = tmp_path / "data"
    proc = TrapProcess(data, {"trap_domains": "traps.test", "serve_report_interval_s": 1}).start()
    try:
        (address,) = _harvest(proc.http_port, "traps.test", 1)
        acked = 0
        for body in bodies[:10]:
            acked += send_one(proc.smtp_port, [address], body)[0] == 250
        ingest = _cli(data, "ingest", str(folder))
        assert ingest.returncode == 0, ingest.stderr
        for body in bodies[10:20]:
            acked += send_one(proc.smtp_port, [address], body)[0] == 250
        # reads see trap mail within seconds: poll `stats` until all of it is there
        deadline = time.monotonic() + 30
        while True:
            stats = _cli(data, "stats", "--json")
            assert stats.returncode == 0, stats.stderr
            if json.loads(stats.stdout)["messages"] >= acked + 20:
                break
            assert time.monotonic() < deadline, stats.stdout
            time.sleep(0.2)
        query = _cli(
            data, "query", "select id from messages where trap_visit_id is not null", "--json"
        )
        assert query.returncode == 0, query.stderr
        rows = json.loads(query.stdout)
        assert len(rows) == acked == 20
        shown = _cli(data, "show", rows[0]["id"][:12], "--json")
        assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == rows[0]["id"]
        campaigns = _cli(data, "analyze", "campaigns")
        assert campaigns.returncode == 0, campaigns.stderr
        status = _cli(data, "status", "--json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)["serve"]
        assert report["running"] and report["pid"] == proc.pid
        ports = {s["name"]: s["port"] for s in report["services"]}
        assert ports == {"smtp": proc.smtp_port, "http": proc.http_port}
        counters = report["counters"]
        assert counters["accepted"] == 20 and counters["drained"] == 20 and counters["new"] == 20
        assert counters["stages_run"] >= 1
        assert "drain lag" in _cli(data, "status").stdout
    finally:
        log = proc.stop(signal.SIGTERM)
    assert re.search(
        r"serve: \d+ accepted, \d+ drained \(\d+ new\), \d+ stage runs, drain lag", log
    )
    assert _stored(data)["messages"] == 40
    assert json.loads(_cli(data, "status", "--json").stdout)["serve"]["running"] is False


def test_every_listed_command_works_while_trap_mail_keeps_arriving(tmp_path: Path) -> None:
    """The commands the store must serve beside a running trap, each run while a sender keeps
    mail coming: reads answer, writes wait their turn, none fails for a lock."""
    pyasn = shared("routing", "routeviews-pyasn")
    drop = shared("blocklists", "spamhaus-drop-history", "monthly")
    spam = shared("mail", "spamassassin-2002", "spam")
    bodies = spam_bodies(20)  # skips before any process starts when the corpus is absent
    data = tmp_path / "data"
    proc = TrapProcess(data, {"trap_domains": "traps.test", "smtp_per_ip_per_minute": 1_000_000})
    proc.start()
    stop = threading.Event()
    acked: list[int] = []

    def sender(address: str) -> None:
        i = 0
        while not stop.is_set():
            acked.append(send_one(proc.smtp_port, [address], bodies[i % len(bodies)])[0])
            i += 1
            stop.wait(0.05)

    def ok(*args: str) -> str:
        run = _cli(data, *args)
        assert run.returncode == 0, (args, run.stderr[-500:])
        return run.stdout

    try:
        (address,) = _harvest(proc.http_port, "traps.test", 1)
        thread = threading.Thread(target=sender, args=(address,))
        thread.start()
        ok("routing", "import", str(pyasn / "ipasn_20080501_v12.dat.gz"))
        ok("routing", "import", str(pyasn / "asnames.json"))
        ok("ingest", str(spam))
        ok("feeds", "import", str(drop))
        ok("enrich")
        ok("analyze", "campaigns")
        ok("analyze", "botnets")
        assert json.loads(ok("stats", "--json"))["messages"] > 500
        top = json.loads(ok("networks", "--top", "5", "--json"))
        assert top
        asn = next(row["asn"] for row in top if row.get("asn"))
        assert json.loads(ok("campaigns", "--top", "5", "--json"))
        ok("botnets", "--json")
        assert json.loads(ok("visits", "--json"))
        assert json.loads(ok("address", "decode", address, "--json"))["visit_id"]
        ok("dossier", f"AS{asn}", "--out", str(tmp_path / "dossier.html"))
        assert (tmp_path / "dossier.html").stat().st_size > 1000
        looked = json.loads(ok("routing", "lookup", "208.66.192.5", "--json"))
        assert looked[0]["asn"] == 26780
        trap = json.loads(ok("query", "select id from messages where source like "
                             "'smtp-trap:%' limit 1", "--json"))  # fmt: skip
        assert trap and json.loads(ok("show", trap[0]["id"], "--json"))["id"] == trap[0]["id"]
    finally:
        stop.set()
        proc.stop(signal.SIGTERM)
    assert acked and set(acked) == {250}


def test_the_trap_domains_serve_used_are_known_without_a_config_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = TrapProcess(data, {"trap_domains": "traps.test"}).start()
    try:
        (address,) = _harvest(proc.http_port, "traps.test", 1)
    finally:
        proc.stop(signal.SIGTERM)
    # no trap_domains setting now: the default (another domain) is all the config says
    decoded = _cli(data, "address", "decode", address, "--json")
    assert decoded.returncode == 0, decoded.stdout + decoded.stderr
    info = json.loads(decoded.stdout)
    assert info["valid"] and info["domain"] == "traps.test" and info["store"] == "ok"


def test_a_second_serve_refuses_before_touching_the_spool(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = TrapProcess(data, {}).start()
    try:
        # a message the running serve is still receiving sits in spool/tmp
        receiving = data / "spool" / "tmp" / "00000000000000000001-1-000001.seg"
        receiving.write_bytes(b"half a segment")
        second = subprocess.run(
            [sys.executable, "-m", "trapline", "serve", "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0"],
            env=serve_env(data), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 1
        assert f"already runs on {data}" in second.stderr and f"pid {first.pid}" in second.stderr
        assert receiving.read_bytes() == b"half a segment"
        assert send_one(first.smtp_port, ["x@traps.example.org"], spam_bodies(1)[0])[0] == 250
    finally:
        first.stop(signal.SIGTERM)


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _drain_pid(data: Path) -> int:
    got = _cli(data, "status", "--json")
    assert got.returncode == 0, got.stderr
    pid = json.loads(got.stdout)["serve"]["drain_pid"]
    assert isinstance(pid, int)
    return pid


def test_the_drain_runs_in_its_own_process_and_dies_with_a_killed_serve(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bodies = spam_bodies(2)
    first = TrapProcess(data, {}).start()
    try:
        drain = _drain_pid(data)
        assert drain != first.pid and _running(drain)
        assert send_one(first.smtp_port, ["a@traps.example.org"], bodies[0])[0] == 250
        wait_for(lambda: _stored(data)["trap"] == 1, "the drain to store the first message")
        first.stop(signal.SIGKILL)
        wait_for(lambda: not _running(drain), "the drain to die with its serve")
    finally:
        first.kill_if_running()
    second = TrapProcess(data, {}).start()
    try:
        assert send_one(second.smtp_port, ["b@traps.example.org"], bodies[1])[0] == 250
        wait_for(lambda: _stored(data)["trap"] == 2, "the restarted serve to store the second")
    finally:
        second.stop(signal.SIGTERM)


def test_a_drain_process_that_dies_is_replaced_and_the_mail_still_arrives(tmp_path: Path) -> None:
    """The out-of-memory killer may pick the drain: serve starts a new one, nothing is lost."""
    data = tmp_path / "data"
    bodies = spam_bodies(3)
    proc = TrapProcess(data, {}).start()
    try:
        first = _drain_pid(data)
        assert send_one(proc.smtp_port, ["a@traps.example.org"], bodies[0])[0] == 250
        wait_for(lambda: _stored(data)["trap"] == 1, "the first message in the store")
        os.kill(first, signal.SIGKILL)
        assert send_one(proc.smtp_port, ["b@traps.example.org"], bodies[1])[0] == 250
        wait_for(lambda: _drain_pid(data) != first, "a new drain process", timeout=60)
        assert _running(_drain_pid(data))
        assert send_one(proc.smtp_port, ["c@traps.example.org"], bodies[2])[0] == 250
        wait_for(lambda: _stored(data)["trap"] == 3, "every message in the store")
        log = proc.stop(signal.SIGTERM)
    finally:
        proc.kill_if_running()
    assert "the drain process exited (code -9)" in log
    assert "stopped; 3 messages drained into the store (3 new)" in log


def test_sigterm_to_the_whole_process_group_still_drains_everything_and_exits(
    tmp_path: Path,
) -> None:
    """``timeout``, a terminal's Ctrl-C and service managers signal the group, drain included:
    the drain leaves stopping to serve, which drains what it accepted and exits."""
    data = tmp_path / "data"
    bodies = spam_bodies(5)
    proc = TrapProcess(data, {}, prefix=("setsid",)).start()  # its own group, not pytest's
    try:
        drain = _drain_pid(data)
        for k, body in enumerate(bodies):
            assert send_one(proc.smtp_port, [f"m{k}@traps.example.org"], body)[0] == 250
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.proc is not None
        out, _ = proc.proc.communicate(timeout=120)
        assert proc.proc.returncode == 0, proc.log + out
        assert "stopped;" in out and not _running(drain)
    finally:
        proc.kill_if_running()
    stored = _stored(data)
    assert stored["trap"] == 5 and stored["messages"] == 5


# --- the load test the store design answers to --------------------------------------------------

LOAD_SECONDS = 60
CLIENTS = 20


def _run_load(tmp_path: Path, *, kill_serve_at: float | None) -> None:
    """20 SMTP clients send real spam to harvested addresses for 60 s while `ingest` of the
    SpamAssassin corpus, then `analyze campaigns`, run beside `serve`, and `stats`, `query` and
    `show` run every second. With ``kill_serve_at``, serve is SIGKILLed then and restarted."""
    corpus = shared("mail", "spamassassin-2002")
    bodies = spam_bodies(200)
    data = tmp_path / "data"
    settings = {"trap_domains": "traps.test", "smtp_per_ip_per_minute": 1_000_000}
    proc = TrapProcess(data, settings).start()
    procs: list[subprocess.Popen[str]] = []
    stop = threading.Event()
    acked: list[str] = []
    lock = threading.Lock()
    codes: list[tuple[str, int, str]] = []
    ports = {"smtp": proc.smtp_port}

    def client(k: int, address: str) -> None:
        i = 0
        while not stop.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=30) as smtp:
                    smtp.ehlo(f"bot{k}.example.net")
                    while not stop.is_set():
                        smtp.mail(f"bulk{k}@sender.example")
                        smtp.rcpt(address)
                        code, text = smtp.data(bodies[(k * 7 + i) % len(bodies)])
                        i += 1
                        if code == 250:
                            with lock:
                                acked.append(text.decode().rsplit(" ", 1)[-1])
            except (OSError, smtplib.SMTPException):
                time.sleep(0.2)  # serve was killed: reconnect once it is back

    def reader() -> None:
        while not stop.is_set():
            for args in (
                ("stats", "--json"),
                ("query", "select id from messages limit 1", "--json"),
            ):
                got = _cli(data, *args)
                codes.append((args[0], got.returncode, got.stderr[-300:]))
                if args[0] == "query" and got.returncode == 0 and json.loads(got.stdout):
                    mid = json.loads(got.stdout)[0]["id"]
                    shown = _cli(data, "show", mid, "--json")
                    codes.append(("show", shown.returncode, shown.stderr[-300:]))
            stop.wait(1.0)

    threads: list[threading.Thread] = []
    try:
        addresses = _harvest(proc.http_port, "traps.test", CLIENTS)
        threads = [threading.Thread(target=client, args=(k, a)) for k, a in enumerate(addresses)]
        threads.append(threading.Thread(target=reader))
        for t in threads:
            t.start()
        started = time.monotonic()
        ingest = subprocess.Popen(
            [sys.executable, "-m", "trapline", "ingest", str(corpus)],
            env=serve_env(data), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs.append(ingest)
        killed = False
        while time.monotonic() - started < LOAD_SECONDS:
            if (
                kill_serve_at is not None
                and not killed
                and time.monotonic() - started > kill_serve_at
            ):
                proc.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
                proc.proc.wait()  # type: ignore[union-attr]
                killed = True
                proc = TrapProcess(data, settings).start()
                ports["smtp"] = proc.smtp_port
            time.sleep(0.2)
        out, err = ingest.communicate(timeout=600)
        codes.append(("ingest", ingest.returncode, err[-300:]))
        new = int(re.search(r"(\d+) new", out + err).group(1))  # type: ignore[union-attr]
        campaigns = _cli(data, "analyze", "campaigns")
        codes.append(("analyze", campaigns.returncode, campaigns.stderr[-300:]))
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        proc.stop(signal.SIGTERM, timeout=300)
    failed = [c for c in codes if c[1] != 0]
    assert not failed, failed[:5]
    assert {c[0] for c in codes} >= {"stats", "query", "show", "ingest", "analyze"}
    got = _stored(data)
    with reading(data) as store:
        trap_ids = [
            r[0] for r in store.con.execute(
                "SELECT id FROM raw WHERE source LIKE 'smtp-trap:%'"
            ).fetchall()
        ]  # fmt: skip
    spooled = spooled_message_ids(data)
    assert len(acked) > 0 and len(set(acked)) == len(acked)
    prefixes = {i[:16] for i in trap_ids}
    assert [a for a in acked if a not in prefixes] == []  # no acknowledged message lost
    assert len(spooled) == len(set(spooled)) and set(spooled) == set(trap_ids)  # each once
    if kill_serve_at is None:
        assert got["trap"] == len(acked)  # nothing was spooled without its 250
        assert got["trap_unlinked"] == 0  # every trap message is linked to its visit
    assert got["raw"] == got["trap"] + new
    assert got["messages"] + got["quarantined"] == got["raw"]


@pytest.mark.slow
def test_a_minute_of_trap_mail_while_ingest_analyze_and_reads_run(tmp_path: Path) -> None:
    _run_load(tmp_path, kill_serve_at=None)


@pytest.mark.slow
def test_serve_sigkilled_under_that_load_and_restarted_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    _run_load(tmp_path, kill_serve_at=LOAD_SECONDS / 3)


def test_serve_counts_in_status_survive_no_serve(tmp_path: Path) -> None:
    """Without a serve, status says so and names no writer."""
    got = _cli(tmp_path, "status", "--json")
    assert got.returncode == 0
    report = json.loads(got.stdout)
    assert report["serve"] == {"running": False} and report["store_writer"] is None
    assert os.path.basename(report["data_dir"]) == tmp_path.name
