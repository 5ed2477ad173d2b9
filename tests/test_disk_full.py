"""Disk full under the store: accepted mail waits in the spool and reaches the store by itself
once space returns; nothing is quarantined or moved to ``bad/`` for it, and the operator sees it.

The store lives on a small tmpfs (mounted for the test; skipped where mounting is not allowed),
the spool on the ordinary disk, so the trap keeps accepting while the store cannot be written.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import shared, wait_for
from trap_helpers import TrapProcess, send_one, serve_env, spam_bodies
from trapline.store.access import reading


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(disk: Path) -> Path:
    """Take every free byte of ``disk`` with one file; returns it (delete it to free space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def _status(data: Path) -> dict:  # type: ignore[type-arg]
    got = subprocess.run(
        [sys.executable, "-m", "trapline", "status", "--json"],
        env=serve_env(data), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return dict(json.loads(got.stdout)["serve"])


def test_accepted_mail_reaches_the_store_once_space_returns(tmp_path: Path) -> None:
    bodies = spam_bodies(30)  # skips before anything starts when the corpus is absent
    with small_disk(tmp_path / "small", "48m") as disk:
        data = disk / "data"
        spool = tmp_path / "spool"
        proc = TrapProcess(data, {"spool_dir": spool}).start()
        try:
            for body in bodies[:10]:
                assert send_one(proc.smtp_port, ["a@traps.example.org"], body)[0] == 250
            wait_for(
                lambda: _status(data).get("counters", {}).get("drained") == 10,
                "drain",
                60,
                every=0.2,
            )
            filler = _fill(disk)
            for body in bodies[10:]:  # the spool is on another disk: the trap still accepts
                assert send_one(proc.smtp_port, ["b@traps.example.org"], body)[0] == 250
            wait_for(
                lambda: _status(data)["counters"]["last_error"] != "",
                "a failing drain",
                60,
                every=0.2,
            )
            assert "mail stays spooled" in subprocess.run(
                [sys.executable, "-m", "trapline", "status"],
                env=serve_env(data), capture_output=True, text=True, timeout=60,
            ).stdout  # fmt: skip
            os.unlink(filler)  # space returns: nobody restarts anything
            wait_for(lambda: _status(data)["counters"]["drained"] == 30, "recovery", 180, every=0.2)
        finally:
            log = proc.stop(signal.SIGTERM)
        assert "WARNING" in log and "free space in" in log, log
        assert not list((spool / "bad").glob("*"))
        with reading(data) as store:
            con = store.con
            assert con.execute("SELECT count(*) FROM messages").fetchone() == (30,)
            assert con.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)


def test_ingest_on_a_full_disk_says_so_and_the_rerun_stores_everything(tmp_path: Path) -> None:
    spam = [str(shared("mail", "spamassassin-2002", d)) for d in ("spam", "spam_2")]
    with small_disk(tmp_path / "small", "6m") as disk:
        data = disk / "data"

        def ingest() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "trapline", "ingest", "--batch-size", "200", *spam],
                env=serve_env(data), capture_output=True, text=True, timeout=600,
            )  # fmt: skip

        full = ingest()
        assert full.returncode == 1, full.stdout + full.stderr
        assert "free space, then run the same ingest again" in full.stderr
        assert "Traceback" not in full.stderr
        subprocess.run(["mount", "-o", "remount,size=256m", str(disk)], check=True)
        again = ingest()
        assert again.returncode == 0, again.stderr
        with reading(data) as store:
            con = store.con
            raw = con.execute("SELECT count(*) FROM raw").fetchone()
            stored = con.execute("SELECT count(*) FROM messages").fetchone()
            bad = con.execute("SELECT count(*) FROM quarantine WHERE id IS NOT NULL").fetchone()
            store_errors = con.execute(
                "SELECT count(*) FROM quarantine WHERE reason = 'store-error'"
            ).fetchone()
    assert store_errors == (0,)
    assert raw is not None and stored is not None and bad is not None
    assert raw[0] == stored[0] + bad[0] and raw[0] >= 1800
