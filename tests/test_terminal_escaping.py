"""Nothing printed from the store can steer the terminal or Rich: ESC/CSI/OSC sequences and
``[link=...]`` markup in attacker-controlled fields come out as inert, visible text.

A real SpamAssassin message gets a hostile Subject, From name and Received HELO; it is ingested
by the real CLI, then ``show``, ``query``, ``stats``, ``campaigns`` and ``visits`` run under a
pseudo-terminal (so Rich renders as for a person at a terminal) and their bytes are checked.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
from datetime import datetime
from importlib import resources
from pathlib import Path

import duckdb
import pytest

from test_pipeline import CLI, _cli_env
from trapline.cli.common import safe, to_json

SAMPLE = Path(str(resources.files("trapline").joinpath("data", "sample", "mail", "spam")))
# Clear the screen, set the window title, an OSC 8 hyperlink, a C1 CSI, a bidi override,
# Rich markup that would become a live link, and a Rich emoji code.
PAYLOAD = (
    "WIN\x1b[2J\x1b]0;pwned\x07\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\"
    "\x9b31m\u202etxt.exe [link=http://evil.example/]free[/link] :skull:"
)
RAW_SEQUENCES = [b"\x1b[2J", b"\x1b]0;pwned", b"\x1b]8;;http://evil", b"\xc2\x9b31m"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("term")
    real = sorted(p for p in SAMPLE.iterdir() if p.is_file())[0].read_bytes()
    head, sep, body = real.partition(b"\n\n")
    lines = [ln for ln in head.split(b"\n") if not ln.lower().startswith(b"subject:")]
    hostile = PAYLOAD.encode()
    lines.insert(0, b"Received: from " + hostile + b" (evil [192.0.2.7]) by mx.example.org")
    lines.append(b"Subject: " + hostile)
    (base / "hostile.eml").write_bytes(b"\n".join(lines) + sep + body)
    data_dir = base / "store"
    env = _cli_env({"TRAPLINE_POST_INGEST_STAGES": ""})
    run = subprocess.run(
        [*CLI, "--data-dir", str(data_dir), "-q", "ingest", str(base / "hostile.eml")],
        env=env,
        check=False,
    )
    assert run.returncode == 0
    con = duckdb.connect(str(data_dir / "trapline.duckdb"))
    try:
        con.execute(
            "INSERT INTO visits (id, seq, address, visited_at, ip, user_agent, path) "
            "VALUES ('v1', 1, ?, ?, ?, ?, ?)",
            [PAYLOAD + "@traps.example.org", datetime(2026, 1, 1), PAYLOAD, PAYLOAD, PAYLOAD],
        )
    finally:
        con.close()
    return data_dir


def _tty(store: Path, *args: str) -> bytes:
    """Run the CLI with stdout and stderr on a pseudo-terminal; return everything it wrote."""
    master, slave = pty.openpty()
    env = _cli_env({"COLUMNS": "300", "TERM": "xterm-256color"})
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [*CLI, "--data-dir", str(store), *args], stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    out = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        proc.wait(timeout=60)
        os.close(master)
    assert proc.returncode == 0, bytes(out)
    return bytes(out)


@pytest.mark.parametrize(
    "args",
    [
        ("show", "{id}"),
        ("query", "SELECT subject, from_name FROM messages"),
        ("query", "SELECT raw FROM hops WHERE idx = 0"),
        ("stats",),
        ("visits",),
    ],
    ids=["show", "query-subject", "query-hops", "stats", "visits"],
)
def test_no_raw_sequence_reaches_the_terminal(store: Path, args: tuple[str, ...]) -> None:
    con = duckdb.connect(str(store / "trapline.duckdb"), read_only=True)
    try:
        (mid,) = con.execute("SELECT id FROM messages").fetchone() or ("",)
    finally:
        con.close()
    out = _tty(store, *(a.format(id=mid) for a in args))
    for seq in RAW_SEQUENCES:
        assert seq not in out, (seq, out)
    assert "\u202e".encode() not in out
    # The data is still shown, as visible text: the escapes and the markup verbatim (stats
    # shortens long subjects to its column, so only their start is there).
    assert b"\\x1b[2J" in out
    if args[0] != "stats":
        assert b"[link=http://evil.example/]free[/link]" in out
        assert b":skull:" in out


def test_safe_and_json_escape_every_control_character() -> None:
    for code in [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x202E, 0x2066, 0x2028]:
        ch = chr(code)
        assert ch not in safe(f"a{ch}b")
        assert ch not in to_json(f"a{ch}b")
    assert safe("plain ascii [b]x[/b] ünïcode") == "plain ascii [b]x[/b] ünïcode"
