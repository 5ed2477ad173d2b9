"""The web tests' store and server: real spam, real routing data, uvicorn on 127.0.0.1 port 0."""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import ROOT, shared
from trapline.config import load_settings
from trapline.serve.api.access import StoreAccess
from trapline.serve.api.app import WebState, create_app
from trapline.serve.api.keys import create_key
from trapline.serve.runner import _QuietServer
from trapline.store.duckdb import Store, open_store

PYASN = ("routing", "routeviews-pyasn")
# Markers planted in real spam's headers: if any of them runs in a browser, it sets a global.
XSS_SUBJECT = '<script>window.__xss = "subject"</script><img src=x onerror="window.__xss=\'img\'">'
XSS_FROM = '"<svg onload=window.__xss=1>" <evil@example.com>'
OUTPUT = ROOT / "test-output" / "browser"


def hostile_copy(original: bytes) -> bytes:
    """A real spam message with script-bearing Subject and From headers (and a changed body,
    so it is a new message)."""
    head, sep, body = original.partition(b"\n\n")
    lines = [ln for ln in head.split(b"\n") if not re.match(rb"(?i)^(subject|from):", ln)]
    lines.insert(1, b"Subject: " + XSS_SUBJECT.encode())
    lines.insert(2, b"From: " + XSS_FROM.encode())
    return b"\n".join(lines) + sep + body + b"\n<script>window.__xss='body'</script>\n"


def build_store(folder: Path) -> dict[str, Any]:
    """Ingest real spam (SpamAssassin spam_2, Nazario phishing, one modified hostile copy), map
    it with the 2008 routing table and AS names, import DROP history, cluster campaigns and
    botnets: through the CLI, as a user would. Returns facts the tests check against."""
    from click.testing import CliRunner

    from trapline.cli.main import cli

    sa = shared("mail", "spamassassin-2002", "spam_2")
    hostile_dir = folder.parent / (folder.name + "-hostile")
    hostile_dir.mkdir(exist_ok=True)
    hostile = hostile_copy(sorted(sa.iterdir())[0].read_bytes())
    (hostile_dir / "hostile.eml").write_bytes(hostile)
    steps = [
        ["routing", "import", str(shared(*PYASN, "ipasn_20080501_v12.dat.gz"))],
        ["routing", "import", str(shared(*PYASN, "asnames.json"))],
        ["ingest", str(sa), str(shared("mail", "nazario-phishing-2005", "phishing0.mbox")),
         str(hostile_dir)],
        ["ingest", "--label", "ham", str(shared("mail", "spamassassin-2002", "hard_ham"))],
        ["feeds", "import", str(shared("blocklists", "spamhaus-drop-history", "monthly"))],
        ["enrich"],
        ["analyze", "campaigns"],
        ["analyze", "botnets"],
    ]  # fmt: skip
    for step in steps:
        result = CliRunner().invoke(cli, ["--data-dir", str(folder), "-q", *step])
        assert result.exit_code == 0, (step, result.output, result.exception)
    return {
        "hostile_id": hashlib.sha256(hostile).hexdigest(),
        "settings": load_settings({"data_dir": str(folder)}),
    }


@dataclass
class WebServer:
    base: str
    state: WebState
    store: Store
    keys: dict[str, str]
    thread: threading.Thread
    server: Any

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.state.access.close()

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


@contextmanager
def serving(
    web_store: tuple[Path, dict[str, Any]], *, anonymous_read: bool = False, **settings: Any
) -> Iterator[WebServer]:
    """The session's web store opened writable and served on a free port, stopped afterwards."""
    folder, facts = web_store
    store = open_store(folder)
    server = start_server(store, {**facts["settings"], **settings}, anonymous_read=anonymous_read)
    try:
        yield server
    finally:
        server.stop()
        store.close()


def start_server(
    store: Store, settings: dict[str, Any], *, anonymous_read: bool = False
) -> WebServer:
    """The web app over ``store`` (writable), on a free loopback port, in a thread."""
    keys = {role: create_key(store, role, f"test-{role}").key for role in ("admin", "analyst")}
    keys["sensor"] = create_key(store, "sensor", "test-sensor-a").key
    keys["sensor_b"] = create_key(store, "sensor", "test-sensor-b").key
    state = WebState(StoreAccess(store, writable=True), settings, anonymous_read=anonymous_read)
    server = _QuietServer.make(create_app(state))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])), name="web-test", daemon=True
    )
    thread.start()
    while not server.started and thread.is_alive():
        threading.Event().wait(0.01)
    return WebServer(f"http://127.0.0.1:{port}", state, store, keys, thread, server)
