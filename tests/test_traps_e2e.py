"""End to end: `trapline serve` in a child process on ephemeral loopback ports, a harvester that
scrapes the honeypot and mails the address, the store linking spam to the visit, a bounded load
test and a SIGKILL in the middle of it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from trap_helpers import (
    TrapProcess,
    inet_sockets,
    send_one,
    serve_env,
    spam_bodies,
    spooled_message_ids,
)
from trapline.store.duckdb import open_store

TRAP = "traps.example.org"
HARVESTER_UA = "Mozilla/4.0 (compatible; EmailSiphon 1.0)"
ADDRESS_RE = re.compile(r"[A-Za-z0-9._%+-]+@traps\.example\.org")  # what a harvester greps for
# 50 clients from one address (127.0.0.1): lift the per-IP limits a real trap keeps.
LOAD_SETTINGS = {
    "smtp_per_ip_per_minute": 1_000_000,
    "smtp_max_sessions_per_ip": 1000,
    "smtp_inflight_data_bytes": 50 * 10 * 1024 * 1024,  # all 50 clients in DATA at once
}


@pytest.fixture(autouse=True)
def _no_server_outlives_its_test() -> Iterator[None]:
    """Whatever a test does (fails, skips), every ``trapline serve`` it started is stopped."""
    before = len(TrapProcess.started)
    yield
    leaked = [p for p in TrapProcess.started[before:] if p.kill_if_running()]
    del TrapProcess.started[before:]
    assert not leaked, f"{len(leaked)} serve processes were still running after the test"


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from trapline.cli.main import cli; cli()", *args],
        env=serve_env(data_dir), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _assert_no_outbound(proc: TrapProcess) -> None:
    """Every TCP socket the server holds is a loopback listener or a connection *to* one of its
    listening ports: it never opened a connection of its own."""
    ours = {proc.smtp_port, proc.http_port}
    socks = inet_sockets(proc.pid)
    assert any(s[4] == "LISTEN" and s[1] == proc.smtp_port for s in socks)
    for local_ip, local_port, remote_ip, _remote_port, state in socks:
        assert local_ip in ("127.0.0.1", "::ffff:127.0.0.1"), socks
        assert state != "SYN_SENT", socks
        if state != "LISTEN":
            assert local_port in ours, f"outbound connection to {remote_ip}: {socks}"


def test_harvester_is_linked_to_the_spam_its_address_drew(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bodies = spam_bodies(3)  # every skip condition before any process starts
    proc = TrapProcess(data, {}).start()
    try:
        base = f"http://127.0.0.1:{proc.http_port}"
        with httpx.Client(headers={"user-agent": HARVESTER_UA}) as web:
            assert "Disallow: /staff/" in web.get(f"{base}/robots.txt").text
            page = web.get(f"{base}/staff/")  # robots.txt forbids it; harvesters go anyway
            assert page.status_code == 200
        harvested = sorted(set(ADDRESS_RE.findall(page.text)))
        assert len(harvested) == 1, harvested  # one visit, one address, several hiding styles
        address = harvested[0]
        code, _ = send_one(proc.smtp_port, [address], bodies[0], helo="bulk.example.net")
        assert code == 250
        with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=30) as client:
            client.ehlo("relay-probe")
            client.mail("probe@spam.example")
            code, _ = client.rcpt("victim@gmail.com")
            assert code == 550  # relay refused
            code, _ = client.rcpt(f"info@{TRAP}")  # a guessed name: dictionary attack
            assert code == 250
            assert client.data(bodies[1])[0] == 250
            _assert_no_outbound(proc)  # checked while a session is open
        if shutil.which("swaks"):
            swaks = subprocess.run(
                ["swaks", "--server", "127.0.0.1", "--port", str(proc.smtp_port), "--to", address,
                 "--from", "bulk@sender.example", "--helo", "swaks.example.net", "--data", "-"],
                input=bodies[2].decode("latin-1"), capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert swaks.returncode == 0, swaks.stdout + swaks.stderr
        _assert_no_outbound(proc)
        # While serve runs, commands read the store and see the trap mail within seconds.
        expected_live = 2 if shutil.which("swaks") else 1
        deadline = time.monotonic() + 30
        while True:
            live = _cli(data, "visits", "--harvesters", "--json")
            assert live.returncode == 0 and "Traceback" not in live.stderr, live.stderr
            rows = json.loads(live.stdout)
            if rows and rows[0]["messages"] == expected_live:
                break
            assert time.monotonic() < deadline, live.stdout
            time.sleep(0.2)
        online = json.loads(_cli(data, "address", "decode", address, "--json").stdout)
        assert online["valid"] and online["store"] == "ok" and online["visit_id"]
    finally:
        log = proc.stop(signal.SIGTERM)
    assert re.search(r"^smtp listening on 127\.0\.0\.1:\d+", log, re.M)
    assert re.search(r"^http listening on 127\.0\.0\.1:\d+", log, re.M)
    expected = 2 if shutil.which("swaks") else 1

    with open_store(data) as store:
        con = store.con
        visit = con.execute(
            "SELECT id, ip, user_agent, path, ignored_robots, read_robots FROM visits WHERE address = ?",
            [address],
        ).fetchone()
        assert visit is not None
        visit_id = visit[0]
        assert visit[1:] == ("127.0.0.1", HARVESTER_UA, "/staff/", True, True)
        linked = con.execute(
            "SELECT m.id, m.origin_ip, m.received_at_source FROM messages m WHERE m.trap_visit_id = ?",
            [visit_id],
        ).fetchall()
        assert len(linked) == expected
        assert {(r[1], r[2]) for r in linked} == {("127.0.0.1", "trap")}  # peer IP = ground truth
        rcpt = con.execute(
            "SELECT count(*) FROM recipients WHERE kind = 'rcpt' AND trap_visit_id = ?", [visit_id]
        ).fetchone()
        assert rcpt == (expected,)
        attack = con.execute(
            "SELECT addr, reason, sender_ip, mail_from FROM dictionary_attacks"
        ).fetchall()
        assert attack == [(f"info@{TRAP}", "unparseable", "127.0.0.1", "probe@spam.example")]
        relay = con.execute("SELECT rcpt_to, mail_from FROM relay_attempts").fetchall()
        assert relay == [("victim@gmail.com", "probe@spam.example")]
        assert con.execute("SELECT count(*) FROM smtp_sessions").fetchone()[0] >= 2  # type: ignore[index]

    ranked = _cli(data, "visits", "--harvesters", "--json")
    assert ranked.returncode == 0, ranked.stderr
    rows = json.loads(ranked.stdout)
    assert rows[0]["ip"] == "127.0.0.1" and rows[0]["messages"] == expected
    assert rows[0]["addresses"] == 1 and rows[0]["visits"] == 1
    assert rows[0]["first_spam_delay_s"] >= 0
    decoded = _cli(data, "address", "decode", address.upper() + ".", "--json")
    assert decoded.returncode == 0, decoded.stderr
    info = json.loads(decoded.stdout)
    assert info["valid"] and info["visit_id"] == visit_id
    assert info["ip"] == "127.0.0.1" and info["user_agent"] == HARVESTER_UA and info["visited_at"]
    forged = _cli(data, "address", "decode", f"anna.smith.bababdabadfabab@{TRAP}", "--json")
    assert forged.returncode == 1 and json.loads(forged.stdout)["valid"] is False


def _blast(
    port: int,
    bodies: list[bytes],
    clients: int,
    per_client: int,
    acked: list[str],
    stop: threading.Event,
) -> None:
    """``clients`` concurrent smtplib sessions, each sending ``per_client`` messages; records the
    id the server gave in every 250."""
    lock = threading.Lock()

    def one(k: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
                client.ehlo(f"bot{k}.example.net")
                for i in range(per_client):
                    if stop.is_set():
                        return
                    client.mail(f"bulk{k}@sender.example")
                    client.rcpt(f"load{k}.{i}@{TRAP}")
                    code, text = client.data(bodies[(k * per_client + i) % len(bodies)])
                    if code == 250:
                        with lock:
                            acked.append(text.decode().rsplit(" ", 1)[-1])
        except (OSError, smtplib.SMTPException):
            return  # the server was killed under us: only what got 250 counts

    threads = [threading.Thread(target=one, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _stored_ids(data: Path) -> list[str]:
    with open_store(data) as store:
        return [r[0] for r in store.con.execute("SELECT id FROM raw").fetchall()]


def test_load_50_clients_2000_messages_every_250_is_stored(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bodies = spam_bodies(100)
    proc = TrapProcess(data, LOAD_SETTINGS).start()
    acked: list[str] = []
    try:
        _blast(
            proc.smtp_port,
            bodies,
            clients=50,
            per_client=40,
            acked=acked,
            stop=threading.Event(),
        )
    finally:
        proc.stop(signal.SIGTERM, timeout=120)
    assert len(acked) == 2000
    stored = _stored_ids(data)
    assert len(stored) == 2000
    prefixes = {s[:16] for s in stored}
    assert all(a in prefixes for a in acked)
    assert not list((data / "spool" / "new").glob("*.seg"))  # fully drained on shutdown


def test_sigkill_mid_load_loses_no_acknowledged_message(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = LOAD_SETTINGS
    bodies = spam_bodies(100)
    proc = TrapProcess(data, settings).start()
    acked: list[str] = []
    stop = threading.Event()
    blaster = threading.Thread(target=_blast, args=(proc.smtp_port, bodies, 50, 40, acked, stop))
    blaster.start()
    deadline = time.monotonic() + 120
    while len(acked) < 600 and blaster.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]  # no goodbye, no flush
    proc.proc.wait(timeout=30)  # type: ignore[union-attr]
    stop.set()
    blaster.join(timeout=120)
    acked_at_kill = list(acked)
    assert 600 <= len(acked_at_kill) < 2000  # the kill really happened mid-run

    restarted = TrapProcess(data, settings).start()  # recovers: drains the spool first
    restarted.stop(signal.SIGTERM, timeout=120)
    stored = _stored_ids(data)
    prefixes = {s[:16] for s in stored}
    missing = [a for a in acked_at_kill if a not in prefixes]
    assert not missing, f"{len(missing)} acknowledged messages lost"
    # exactly once: every message record that reached the spool is in raw once, none twice
    spooled = spooled_message_ids(data)
    assert len(spooled) == len(set(spooled)) and set(spooled) == set(stored)
    assert not list((data / "spool" / "new").glob("*.seg"))

    again = TrapProcess(data, settings).start()  # a further restart changes nothing
    again.stop(signal.SIGTERM, timeout=120)
    assert sorted(_stored_ids(data)) == sorted(stored)


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_serve_shuts_down_cleanly_on_signals(tmp_path: Path, signame: str) -> None:
    body = spam_bodies(1)[0]
    proc = TrapProcess(tmp_path / "data", {}).start()
    assert send_one(proc.smtp_port, [f"x@{TRAP}"], body)[0] == 250
    log = proc.stop(getattr(signal, signame))
    assert proc.proc is not None and proc.proc.returncode == 0, log
    assert "1 messages drained" in log
    locked = _cli(tmp_path / "data", "visits", "--json")
    assert locked.returncode == 0  # the store is free again after shutdown


EXTRA_SERVICE = """
import asyncio
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from trapline.serve.runner import Running, register_http_routes, register_service

async def start(ctx, host, port):
    async def echo(reader, writer):
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(echo, host, port)
    bound = server.sockets[0].getsockname()
    async def stop():
        server.close()
        await server.wait_closed()
    return Running("echo", bound[0], bound[1], stop)

async def ping(request):
    return PlainTextResponse("pong")

register_service("echo", start, "echo_listen")
register_http_routes([Route("/api/ping", ping)])
"""


def test_other_areas_plug_services_and_routes_into_serve(tmp_path: Path) -> None:
    (tmp_path / "extra_service.py").write_text(EXTRA_SERVICE)
    pythonpath = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH", "")) if p)
    proc = TrapProcess(
        tmp_path / "data",
        {"serve_modules": "extra_service", "echo_listen": "127.0.0.1:0"},
        extra_env={"PYTHONPATH": pythonpath},
    ).start()
    try:
        assert proc.proc is not None and proc.proc.stdout is not None
        line = proc.proc.stdout.readline()
        port = int(re.match(r"echo listening on 127\.0\.0\.1:(\d+)", line)[1])  # type: ignore[index]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"hello\n")
            assert sock.recv(100) == b"hello\n"
        assert httpx.get(f"http://127.0.0.1:{proc.http_port}/api/ping").text == "pong"
    finally:
        proc.stop(signal.SIGTERM)


def test_services_can_be_switched_off(tmp_path: Path) -> None:
    run = subprocess.Popen(
        [sys.executable, "-c", "from trapline.cli.main import cli; cli()", "serve", "--smtp", "127.0.0.1:0", "--http", "off"],
        env=serve_env(tmp_path / "data"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert run.stdout is not None
    first = run.stdout.readline()
    assert first.startswith("smtp listening on 127.0.0.1:")
    run.send_signal(signal.SIGTERM)
    rest, _ = run.communicate(timeout=60)
    assert "http listening" not in rest and run.returncode == 0
