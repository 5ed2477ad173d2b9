"""The dashboard inside `trapline serve --web`: its own port, the traps' data, sensors' keys."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from trap_helpers import send_one, serve_env, spam_bodies
from trapline.cli.main import cli
from trapline.store.duckdb import open_store

TRAP = "traps.example.org"


def _key(data_dir: Path, role: str, name: str) -> dict[str, Any]:
    run = CliRunner().invoke(cli, ["--data-dir", str(data_dir), "keys", "create", "--role", role,
                                   "--name", name, "--json"])  # fmt: skip
    assert run.exit_code == 0, run.output
    return dict(json.loads(run.output))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[dict[str, int], dict[str, dict[str, Any]], Path]]:
    data = tmp_path / "data"
    keys = {
        "analyst": _key(data, "analyst", "desk"),
        "a": _key(data, "sensor", "blog-a.example"),
        "b": _key(data, "sensor", "blog-b.example"),
    }
    cmd = [sys.executable, "-c", "from trapline.cli.main import cli; cli()", "serve",
           "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--web", "127.0.0.1:0",
           "--trap-domain", TRAP]  # fmt: skip
    proc = subprocess.Popen(cmd, env=serve_env(data), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    ports: dict[str, int] = {}
    log = ""
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while len(ports) < 3 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            log += line
            if m := re.match(r"(smtp|http|web) listening on 127\.0\.0\.1:(\d+)", line):
                ports[m[1]] = int(m[2])
        assert len(ports) == 3, log
        yield ports, keys, data
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


def _bearer(key: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key['key']}"}


def _wait(fetch: Any, ok: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = fetch()
        if ok(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_dashboard_beside_the_traps(served: tuple[dict[str, int], dict[str, Any], Path]) -> None:
    ports, keys, _ = served
    web = f"http://127.0.0.1:{ports['web']}"
    honeypot = f"http://127.0.0.1:{ports['http']}"
    assert len(set(ports.values())) == 3
    # One key per sensor serves both the honeypot's address API and the REST API.
    issued = {}
    for who in ("a", "b"):
        r = httpx.post(f"{honeypot}/api/sensor/v1/address", headers=_bearer(keys[who]),
                       json={"ip": f"203.0.113.{10 if who == 'a' else 20}", "path": "/contact"})  # fmt: skip
        assert r.status_code == 200, r.text
        issued[who] = r.json()
    r = httpx.post(f"{web}/api/v1/sensor/address", headers=_bearer(keys["a"]),
                   json={"ip": "203.0.113.11", "user_agent": "EmailSiphon"})  # fmt: skip
    assert r.status_code == 201, r.text
    # Spam to sensor A's first address, through the real SMTP trap.
    code, _ = send_one(ports["smtp"], [issued["a"]["address"]], spam_bodies(1)[0])
    assert code == 250
    a_visits = _wait(lambda: httpx.get(f"{web}/api/v1/sensor/visits", headers=_bearer(keys["a"])).json(),
                     lambda v: len(v) == 2)  # fmt: skip
    assert sorted(v["ip"] for v in a_visits) == ["203.0.113.10", "203.0.113.11"]
    b_visits = httpx.get(f"{web}/api/v1/sensor/visits", headers=_bearer(keys["b"])).json()
    assert [v["ip"] for v in b_visits] == ["203.0.113.20"]
    addresses = _wait(
        lambda: httpx.get(f"{web}/api/v1/sensor/addresses", headers=_bearer(keys["a"])).json(),
        lambda rows: any(r["messages"] for r in rows),
    )
    assert {r["address"]: r["messages"] for r in addresses}[issued["a"]["address"]] == 1
    assert httpx.get(f"{web}/api/v1/visits", headers=_bearer(keys["a"])).status_code == 403
    # The analyst sees the trap mail arrive in the live view.
    live = _wait(lambda: httpx.get(f"{web}/api/v1/live", headers=_bearer(keys["analyst"])).json(),
                 lambda d: d["messages"])  # fmt: skip
    assert live["messages"][0]["source"].startswith("smtp-trap:")
    assert len(live["visits"]) == 3
    # Nothing on the honeypot's port reveals the dashboard or the API.
    for path in ("/api/v1/overview", "/login", "/openapi.json", "/api/docs", "/static/app.js"):
        r = httpx.get(honeypot + path)
        assert r.status_code == 404 and "trapline" not in r.text.lower(), path


def test_cached_answers_need_no_store_turn_while_a_writer_holds_it(
    served: tuple[dict[str, int], dict[str, Any], Path],
) -> None:
    """A known key and a cached aggregate are answered from memory: a long write (an ingest's
    turn) does not hold up the dashboard's cached views."""
    ports, keys, data = served
    web = f"http://127.0.0.1:{ports['web']}"
    analyst = _bearer(keys["analyst"])
    paths = ("/api/v1/overview", "/api/v1/ip/203.0.113.10")
    for path in paths:
        assert httpx.get(web + path, headers=analyst, timeout=30).status_code == 200
    with open_store(data, wait_s=60):  # this test process now holds the write turn
        for path in paths:
            r = httpx.get(web + path, headers=analyst, timeout=10)
            assert r.status_code == 200, (path, r.text)


def test_the_dashboard_refuses_the_honeypots_address(tmp_path: Path) -> None:
    env = serve_env(tmp_path / "data")
    cmd = [sys.executable, "-c", "from trapline.cli.main import cli; cli()", "serve",
           "--smtp", "off", "--http", "127.0.0.1:18765", "--web", "127.0.0.1:18765"]  # fmt: skip
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "honeypot" in run.stderr and "127.0.0.1:8090" in run.stderr
