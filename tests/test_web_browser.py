"""Every dashboard page in headless Chromium (Debian's, via Playwright) on real ingested spam:
charts render, no console errors, no request leaves 127.0.0.1, attacker text never runs.

Screenshots go to test-output/browser/. Without a browser these tests fail: they never skip."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from web_helpers import OUTPUT, XSS_SUBJECT, WebServer, serving

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
def web(web_store: tuple[Path, dict[str, Any]]) -> Iterator[tuple[WebServer, dict[str, Any]]]:
    with serving(web_store) as server:
        yield server, web_store[1]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


class Watch:
    """Console errors, page errors, dialogs and every request a page made."""

    def __init__(self, context: BrowserContext, page: Page) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.outside: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

        def route(r: Any) -> None:
            url = r.request.url
            self.requests.append(url)
            if urlsplit(url).hostname != "127.0.0.1" and not url.startswith("data:"):
                self.outside.append(url)
                r.abort()
            else:
                r.continue_()

        context.route("**/*", route)


@pytest.fixture(scope="module")
def session(
    browser: Browser, web: tuple[WebServer, dict[str, Any]]
) -> Iterator[tuple[Page, Watch, WebServer]]:
    server, _ = web
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    watch = Watch(context, page)
    page.goto(server.base + "/")
    assert page.url.endswith("/login?next=/")  # no key yet: the sign-in page, not data
    page.fill("input[name=key]", server.keys["analyst"])
    page.click("button[type=submit]")
    page.wait_for_url(server.base + "/")
    cookies = {c["name"]: c for c in context.cookies()}
    assert (
        cookies["trapline_session"]["httpOnly"]
        and cookies["trapline_session"]["sameSite"] == "Strict"
    )
    assert page.evaluate("document.cookie") == ""  # not readable from scripts
    try:
        yield page, watch, server
    finally:
        context.close()


def _first(server: WebServer, sql: str) -> Any:
    row = server.store.con.cursor().execute(sql).fetchone()
    assert row is not None
    return row[0]


def _pages(server: WebServer) -> list[tuple[str, str, int]]:
    """(name, path, charts expected) for every page, with real ids from the store."""
    asn = _first(server, "SELECT origin_asn FROM messages WHERE origin_asn IS NOT NULL "
                         "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")  # fmt: skip
    campaign = _first(server, "SELECT id FROM campaigns ORDER BY size DESC, id LIMIT 1")
    message = _first(server, "SELECT id FROM messages WHERE n_hops > 2 AND origin_ip IS NOT NULL "
                             "ORDER BY id LIMIT 1")  # fmt: skip
    ip = _first(server, "SELECT origin_ip FROM messages WHERE origin_asn IS NOT NULL "
                        "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")  # fmt: skip
    return [
        ("overview", "/", 1),
        ("messages", f"/messages?asn={asn}", 0),
        ("message", f"/messages/{message}", 0),
        ("campaigns", "/campaigns", 0),
        ("campaign", f"/campaigns/{campaign}", 1),
        ("networks", "/networks", 0),
        ("network", f"/networks/AS{asn}", 1),
        ("botnets", "/botnets", 0),
        ("ip-form", "/ip", 0),
        ("ip", f"/ip/{ip}", 0),
        ("live", "/live", 1),
        ("api-docs", "/api/docs", 0),
    ]


def test_every_page_renders_with_charts_and_nothing_leaves_loopback(
    session: tuple[Page, Watch, WebServer],
) -> None:
    page, watch, server = session
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for name, path, charts in _pages(server):
        watch.errors.clear()
        response = page.goto(server.base + path)
        assert response is not None and response.status == 200, (name, response and response.status)
        page.wait_for_load_state("networkidle")
        if charts:
            page.wait_for_selector(".chart canvas", timeout=15_000)
            assert page.locator(".chart canvas").count() >= charts, name
            box = page.locator(".chart canvas").first.bounding_box()
            assert box is not None and box["width"] > 200 and box["height"] > 100, name
        if name == "api-docs":
            page.wait_for_selector(".api-docs .op")
            assert page.locator(".api-docs .op").count() >= 20
        if name == "live":
            page.wait_for_function("document.getElementById('live-state').dataset.state === 'ok'")
        if name == "message":
            assert page.locator("ol.hops li.origin .badge").count() == 1
        page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)
        assert watch.errors == [], (name, watch.errors)
        # Its JSON twin answers too.
        twin = page.request.get(server.base + (path.split("?")[0].rstrip("/") or "/index") + ".json"
                                + ("?" + path.split("?")[1] if "?" in path else ""))  # fmt: skip
        assert twin.status == 200 and twin.headers["content-type"].startswith("application/json")
    assert watch.outside == [], watch.outside
    assert all(urlsplit(u).hostname == "127.0.0.1" for u in watch.requests)
    assert any(u.endswith("/static/uPlot.iife.min.js") for u in watch.requests)


def test_script_in_real_spam_headers_never_runs(
    session: tuple[Page, Watch, WebServer], web: tuple[WebServer, dict[str, Any]]
) -> None:
    page, watch, server = session
    hostile = web[1]["hostile_id"]
    for path in (f"/messages/{hostile}", "/messages?subject=" + quote("<script>"), "/live", "/"):
        watch.errors.clear()
        page.goto(server.base + path)
        page.wait_for_load_state("networkidle")
        assert page.evaluate("typeof window.__xss") == "undefined", path
        assert watch.dialogs == []
    page.goto(server.base + f"/messages/{hostile}")
    assert page.locator("h1.subject").inner_text() == XSS_SUBJECT  # shown as text, verbatim
    assert page.locator("h1.subject script, h1.subject img, dd svg").count() == 0
    page.goto(server.base + "/messages?subject=" + quote("<script>"))
    assert page.get_by_text("<script>window.__xss", exact=False).count() >= 1
    page.screenshot(path=str(OUTPUT / "hostile-search.png"), full_page=True)
