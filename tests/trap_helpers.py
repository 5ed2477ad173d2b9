"""Helpers for the trap tests: real servers on 127.0.0.1, real spam bodies, socket listings.

``TrapProcess`` runs ``trapline serve`` in a subprocess (so a test can SIGKILL it) and reads the
one-line-per-service log to find the ephemeral ports. ``inet_sockets`` lists a process's TCP
sockets from ``/proc`` (no mocks): the proof that the trap never connects anywhere.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from conftest import SHARED_DATA, shared

SPAM_DIRS = ("spamassassin-2002/spam", "spamassassin-2002/spam_2")
LONG_LINE_SPAM = "spamassassin-2002/spam_2/00028.60393e49c90f750226bee6381eb3e69d"  # 48 KB line


def spam_bodies(n: int, max_bytes: int = 60_000) -> list[bytes]:
    """``n`` real spam messages from the SpamAssassin corpus (sorted, deterministic)."""
    files: list[Path] = []
    for sub in SPAM_DIRS:
        folder = shared("mail", *sub.split("/"))
        files.extend(sorted(p for p in folder.iterdir() if p.name[0].isdigit()))
    out = []
    for path in files:
        data = path.read_bytes()
        if len(data) <= max_bytes:
            out.append(data)
        if len(out) == n:
            break
    return out


def long_line_spam() -> bytes:
    return shared("mail", *LONG_LINE_SPAM.split("/")).read_bytes()


def serve_env(data_dir: Path, **settings: object) -> dict[str, str]:
    env = dict(os.environ)
    env["TRAPLINE_SHARED_DATA"] = str(SHARED_DATA)
    env["TRAPLINE_DATA_DIR"] = str(data_dir)
    for key, value in settings.items():
        env[f"TRAPLINE_{key.upper()}"] = str(value)
    return env


@dataclass
class TrapProcess:
    """``trapline serve`` on ephemeral loopback ports in a child process."""

    data_dir: Path
    settings: dict[str, object]
    extra_env: dict[str, str] | None = None
    prefix: tuple[str, ...] = ()  # a wrapper command, e.g. ("prlimit", "--nofile=400")
    proc: subprocess.Popen[str] | None = None
    smtp_port: int = 0
    http_port: int = 0
    log: str = ""

    started: ClassVar[list[TrapProcess]] = []  # every one started, for the leak check

    def kill_if_running(self) -> bool:
        """SIGKILL the server if it still runs (a test that failed midway); True if it did."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        self.proc.kill()
        self.proc.communicate(timeout=30)
        return True

    def start(self, timeout: float = 30.0) -> TrapProcess:
        cmd = [
            *self.prefix, sys.executable, "-c", "from trapline.cli.main import cli; cli()",
            "serve", "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd,
            env={**serve_env(self.data_dir, **self.settings), **(self.extra_env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        TrapProcess.started.append(self)
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while not (self.smtp_port and self.http_port):
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"serve exited before listening:\n{self.log}")
            self.log += line
            if m := re.match(r"smtp listening on 127\.0\.0\.1:(\d+)", line):
                self.smtp_port = int(m[1])
            if m := re.match(r"http listening on 127\.0\.0\.1:(\d+)", line):
                self.http_port = int(m[1])
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start in {timeout}s:\n{self.log}")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> str:
        """Send ``sig`` and wait; returns the rest of the log."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=timeout)
        self.log += out or ""
        return self.log


def inet_sockets(pid: int) -> list[tuple[str, int, str, int, str]]:
    """(local ip, local port, remote ip, remote port, state) of every TCP socket ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if m := re.fullmatch(r"socket:\[(\d+)\]", target):
            inodes.add(m[1])
    states = {
        "01": "ESTABLISHED",
        "02": "SYN_SENT",
        "06": "TIME_WAIT",
        "0A": "LISTEN",
        "08": "CLOSE_WAIT",
    }
    out = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            parts = line.split()
            if parts[9] not in inodes:
                continue
            out.append(
                (*_addr(parts[1], family), *_addr(parts[2], family), states.get(parts[3], parts[3]))
            )
    return out


def _addr(text: str, family: int) -> tuple[str, int]:
    hexip, hexport = text.split(":")
    raw = bytes.fromhex(hexip)
    # /proc prints each 32-bit word in host (little-endian) order
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, raw), int(hexport, 16)


def send_one(
    port: int, rcpt: list[str], body: bytes, helo: str = "mail.example.net"
) -> tuple[int, str]:
    """One message with smtplib; returns the end-of-DATA reply (code, text). A refused MAIL or
    every RCPT refused raises smtplib's usual exceptions."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo(helo)
        sender = "sender@spam-sender.example"
        code, text = client.mail(sender)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, text, sender)
        refused = {}
        for r in rcpt:
            rc, rt = client.rcpt(r)
            if rc not in (250, 251):
                refused[r] = (rc, rt)
        if len(refused) == len(rcpt):
            raise smtplib.SMTPRecipientsRefused(refused)
        code, text = client.data(body)
        return code, text.decode()


def spooled_message_ids(data: Path) -> list[str]:
    """Ids of every message record the spool made durable (drained segments stay in done/)."""
    import hashlib

    from trapline.traps.smtp.spool import decode_segment

    out = []
    for path in sorted((data / "spool" / "done").glob("*.seg")):
        out.extend(
            hashlib.sha256(r.data).hexdigest()
            for r in decode_segment(path.read_bytes())
            if r.kind == "message"
        )
    return out
