"""Keys, roles and sessions: writes need the right key, sensors see only their own data."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from trapline.cli.main import cli
from trapline.serve.api.auth import COOKIE
from trapline.store.duckdb import open_store
from web_helpers import WebServer, serving, start_server

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture(scope="module")
def web(web_store: tuple[Path, dict[str, Any]]) -> Iterator[WebServer]:
    with serving(web_store) as server:
        yield server


def write_routes(web: WebServer) -> list[tuple[str, str]]:
    """Every write route of the app: its routers' routes, and the spec's as a cross-check."""
    from trapline.serve.api import routes_admin, routes_read
    from trapline.serve.dashboard import pages

    out = set()
    for router, prefix in ((routes_read.router, "/api/v1"), (routes_admin.router, "/api/v1"),
                           (pages.router, "")):  # fmt: skip
        for route in router.routes:
            for method in set(getattr(route, "methods", None) or ()) & WRITE_METHODS:
                out.add((method, prefix + route.path))  # type: ignore[attr-defined]
    spec = web.server.config.app.openapi()
    in_spec = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert {w for w in in_spec if w[0] in WRITE_METHODS} <= out
    return sorted((m, p.replace("{key_id}", "k000000000000")) for m, p in out)


def test_the_app_has_the_write_routes_we_expect(web: WebServer) -> None:
    found = set(write_routes(web))
    assert {("POST", "/api/v1/keys"), ("DELETE", "/api/v1/keys/k000000000000"),
            ("POST", "/api/v1/imports"), ("POST", "/api/v1/sensor/address"),
            ("POST", "/login"), ("POST", "/logout")} <= found  # fmt: skip


@pytest.mark.parametrize("presented", [None, "tls_wrong", "Basic abc", "Bearer  x y"])
def test_every_write_route_refuses_missing_or_wrong_keys(
    web: WebServer, presented: str | None
) -> None:
    before = web.store.con.cursor().execute("SELECT count(*) FROM api_keys").fetchone()
    for method, path in write_routes(web):
        if path in ("/login", "/logout"):
            continue  # the sign-in form itself (checked below); logout only ends a session
        headers = {}
        if presented is not None:
            headers["Authorization"] = presented if " " in presented else f"Bearer {presented}"
        r = httpx.request(method, web.base + path, headers=headers, json={"role": "admin"},
                          timeout=30)  # fmt: skip
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
    after = web.store.con.cursor().execute("SELECT count(*) FROM api_keys").fetchone()
    assert before == after


def test_admin_routes_refuse_analyst_and_sensor_keys(web: WebServer) -> None:
    for role in ("analyst", "sensor"):
        for method, path in (("POST", "/api/v1/keys"), ("GET", "/api/v1/keys"),
                             ("POST", "/api/v1/imports"), ("DELETE", "/api/v1/keys/kx")):  # fmt: skip
            r = httpx.request(method, web.base + path, headers=web.headers(role),
                              json={"role": "admin"}, timeout=30)  # fmt: skip
            assert r.status_code == 403, (role, method, path)
            assert r.json()["error"]["code"] == "forbidden"


def test_reads_need_a_key_unless_anonymous_read(web: WebServer) -> None:
    assert httpx.get(web.base + "/api/v1/overview").status_code == 401
    assert (
        httpx.get(web.base + "/api/v1/overview", headers=web.headers("sensor")).status_code == 403
    )
    assert (
        httpx.get(web.base + "/api/v1/overview", headers=web.headers("analyst")).status_code == 200
    )
    # A browser without a session is sent to the sign-in page, not shown data.
    page = httpx.get(web.base + "/campaigns")
    assert page.status_code == 303 and page.headers["location"].startswith("/login")


def test_anonymous_read_opens_reads_but_never_writes(
    web_store: tuple[Path, dict[str, Any]], web: WebServer
) -> None:
    public = start_server(web.store, web.state.settings, anonymous_read=True)
    try:
        assert httpx.get(public.base + "/api/v1/overview", timeout=60).status_code == 200
        assert httpx.get(public.base + "/", timeout=60).status_code == 200
        assert httpx.get(public.base + "/api/v1/whoami").json()["role"] == "anonymous"
        r = httpx.post(public.base + "/api/v1/keys", json={"role": "admin"})
        assert r.status_code == 401
        assert (
            httpx.post(public.base + "/api/v1/imports", content=b"Subject: x\n\nx").status_code
            == 401
        )
        assert httpx.get(public.base + "/api/v1/keys").status_code == 401
        # A wrong key is refused even where anonymous reading is allowed.
        bad = httpx.get(public.base + "/api/v1/overview", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
    finally:
        public.stop()


def _visit(con: Any, vid: str, sensor: str | None, ip: str) -> None:
    con.execute(
        "INSERT INTO visits (id, seq, address, visited_at, ip, sensor_id) VALUES (?, ?, ?, ?, ?, ?)",
        [vid, int(vid[1:]), f"{vid}@traps.example.org", datetime(2026, 1, 1), ip, sensor],
    )


def test_a_sensor_reads_only_its_own_visits_and_addresses(web: WebServer) -> None:
    con = web.store.con.cursor()
    who = {role: httpx.get(web.base + "/api/v1/whoami", headers=web.headers(role)).json()
           for role in ("sensor", "sensor_b")}  # fmt: skip
    a, b = who["sensor"]["sensor_id"], who["sensor_b"]["sensor_id"]
    assert a and b and a != b
    _visit(con, "v900001", a, "198.51.100.1")
    _visit(con, "v900002", b, "198.51.100.2")
    _visit(con, "v900003", b, "198.51.100.3")
    _visit(con, "v900004", None, "198.51.100.4")  # the own honeypot's visit
    try:
        mine = httpx.get(web.base + "/api/v1/sensor/visits", headers=web.headers("sensor")).json()
        assert [v["id"] for v in mine] == ["v900001"]
        theirs = httpx.get(
            web.base + "/api/v1/sensor/visits", headers=web.headers("sensor_b")
        ).json()
        assert sorted(v["id"] for v in theirs) == ["v900002", "v900003"]
        addrs = httpx.get(
            web.base + "/api/v1/sensor/addresses", headers=web.headers("sensor")
        ).json()
        assert [x["address"] for x in addrs] == ["v900001@traps.example.org"]
        # The all-visits route, another sensor's filter, IP lookups and messages are closed to it.
        for path in (f"/api/v1/visits?sensor={b}", "/api/v1/visits", "/api/v1/ip/198.51.100.2",
                     "/api/v1/messages", "/api/v1/live", "/ip/198.51.100.2.json"):  # fmt: skip
            r = httpx.get(web.base + path, headers=web.headers("sensor"))
            assert r.status_code == 403, path
        # Analysts see every sensor's visits.
        every = httpx.get(web.base + "/api/v1/visits", headers=web.headers("analyst")).json()
        assert {"v900001", "v900002", "v900003", "v900004"} <= {v["id"] for v in every}
        # Analyst keys are not sensor keys.
        r = httpx.get(web.base + "/api/v1/sensor/visits", headers=web.headers("analyst"))
        assert r.status_code == 403
    finally:
        con.execute("DELETE FROM visits WHERE id IN ('v900001', 'v900002', 'v900003', 'v900004')")


def test_admin_makes_and_revokes_keys_over_the_api(web: WebServer) -> None:
    made = httpx.post(web.base + "/api/v1/keys", headers=web.headers("admin"),
                      json={"role": "analyst", "name": "made-over-api"})  # fmt: skip
    assert made.status_code == 201
    key = made.json()["key"]
    assert httpx.get(web.base + "/api/v1/whoami", headers={"Authorization": f"Bearer {key}"}
                     ).json()["role"] == "analyst"  # fmt: skip
    listed = httpx.get(web.base + "/api/v1/keys", headers=web.headers("admin")).text
    assert key not in listed and "made-over-api" in listed
    bad = httpx.post(web.base + "/api/v1/keys", headers=web.headers("admin"), json={"role": "root"})
    assert bad.status_code == 422 and "role" in bad.json()["error"]["message"]
    gone = httpx.delete(
        web.base + f"/api/v1/keys/{made.json()['id']}", headers=web.headers("admin")
    )
    assert gone.status_code == 200
    r = httpx.get(web.base + "/api/v1/overview", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 401


def test_keys_are_hashed_at_rest(tmp_path: Path) -> None:
    run = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "keys", "create", "--role",
                                   "admin", "--name", "ops", "--json"])  # fmt: skip
    assert run.exit_code == 0, run.output
    import json

    key = json.loads(run.output)["key"]
    listed = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "keys", "list", "--json"])
    assert key not in listed.output and '"role": "admin"' in listed.output
    with open_store(tmp_path) as store:
        store.con.execute("CHECKPOINT")
    for f in tmp_path.iterdir():
        if f.is_file():
            assert key.encode() not in f.read_bytes(), f
    with open_store(tmp_path, read_only=True) as store:
        row = store.con.execute("SELECT key_sha256 FROM api_keys").fetchone()
    import hashlib

    assert row is not None and row[0] == hashlib.sha256(key.encode()).hexdigest()


def test_sign_in_keeps_a_session_cookie_not_the_key(web: WebServer) -> None:
    with httpx.Client(base_url=web.base) as c:
        refused = c.post("/login", data={"key": "tls_wrong", "next": "/campaigns"})
        assert refused.status_code == 401 and COOKIE not in refused.cookies
        sensor = c.post("/login", data={"key": web.keys["sensor"], "next": "/"})
        assert sensor.status_code == 401
        ok = c.post("/login", data={"key": web.keys["analyst"], "next": "//evil.example/"})
        assert ok.status_code == 303 and ok.headers["location"] == "/"  # no open redirect
        cookie = ok.headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert web.keys["analyst"] not in cookie
        assert c.get("/campaigns").status_code == 200
        assert c.get("/api/v1/overview").status_code == 200
        c.post("/logout")
        assert c.get("/campaigns").status_code == 303


def test_admin_imports_a_message(web: WebServer) -> None:
    from conftest import shared

    raw = sorted(shared("mail", "personal-spam-2023-2025", "2024").glob("*.eml"))[0].read_bytes()
    r = httpx.post(web.base + "/api/v1/imports", headers=web.headers("admin"), content=raw,
                   timeout=120)  # fmt: skip
    assert r.status_code == 201, r.text
    mid = r.json()["id"]
    shown = httpx.get(web.base + f"/api/v1/messages/{mid}", headers=web.headers("analyst")).json()
    assert shown["status"] == "parsed"
    again = httpx.post(web.base + "/api/v1/imports", headers=web.headers("admin"), content=raw,
                       timeout=120)  # fmt: skip
    assert again.json() == {**again.json(), "id": mid, "new": False}


def test_pages_answer_errors_as_pages_and_twins_as_json(web: WebServer) -> None:
    with httpx.Client(base_url=web.base) as c:
        c.post("/login", data={"key": web.keys["analyst"], "next": "/"})
        page = c.get("/campaigns/c<b>nothing")
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
        assert "<b>nothing" not in page.text and "&lt;b&gt;nothing" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        twin = c.get("/campaigns/cnothing.json")
        assert twin.status_code == 404 and twin.json()["error"]["code"] == "not_found"
        bad = c.get("/ip/not-an-ip")
        assert bad.status_code == 400 and "not an IPv4" in bad.text
