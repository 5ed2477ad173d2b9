"""The SMTP trap under abuse and odd-but-legal senders: real sockets on 127.0.0.1 (and 127.0.0.2
as a second client address), real clients (smtplib, raw sockets), the real server in-process.

Per-IP session caps, idle-command caps, refused-recipient caps, the in-flight DATA budget, the
listen backlog under a burst, SMTPUTF8, ``<postmaster>``, root-dot domains, the DATA-timeout
timer, and the aiosmtpd private members the server relies on.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import select
import smtplib
import socket
import subprocess
import tomllib
from collections.abc import Callable
from importlib import metadata
from typing import Any

import aiosmtpd.smtp
import pytest

import test_smtp
from conftest import ROOT
from test_smtp import TRAP, Trap, _read_reply
from trap_helpers import send_one, spam_bodies
from trapline.config import load_settings
from trapline.errors import ConfigError
from trapline.traps.smtp.server import PRIVATE_CONTRACT, server_class

trap_server = test_smtp.trap_server  # the same real-server fixture


def _banner(port: int, source: str = "127.0.0.1") -> tuple[socket.socket, bytes]:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock, _read_reply(sock)


def _until_closed(sock: socket.socket) -> bytes:
    got = b""
    sock.settimeout(10)
    try:
        while chunk := sock.recv(4096):
            got += chunk
    except OSError:
        pass
    return got


def _kinds(trap: Trap, n: int) -> list[str]:
    return [r.fields["kind"] for r in trap.wait_records("limit", n)]


# --- per-IP fairness ----------------------------------------------------------------------------


def test_sessions_per_ip_are_capped_and_other_ips_still_served(
    trap_server: Callable[..., Trap],
) -> None:
    trap = trap_server(smtp_max_sessions_per_ip=3)
    held = []
    try:
        for _ in range(3):
            sock, banner = _banner(trap.port)
            held.append(sock)
            assert banner.startswith(b"220")
        extra, banner = _banner(trap.port)
        extra.close()
        assert banner.startswith(b"421 4.7.0 Too many sessions from 127.0.0.1")
        other, banner = _banner(trap.port, source="127.0.0.2")  # another client: served
        other.close()
        assert banner.startswith(b"220")
    finally:
        for sock in held:
            sock.close()
    assert "sessions-per-ip" in _kinds(trap, 1)


def test_noop_loops_are_cut_off(trap_server: Callable[..., Trap]) -> None:
    trap = trap_server(smtp_max_idle_commands=5)
    client = smtplib.SMTP("127.0.0.1", trap.port, timeout=10)
    client.ehlo("idler")
    for _ in range(3):
        assert client.noop()[0] == 250
    client.mail("a@b.example")  # a real transaction resets the count ...
    for _ in range(5):
        assert client.noop()[0] == 250
    code, text = client.noop()  # ... the sixth idle command in a row does not pass
    assert code == 421 and b"without mail" in text
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
    assert _kinds(trap, 1) == ["idle"]


def test_refused_recipients_are_capped_per_session(trap_server: Callable[..., Trap]) -> None:
    trap = trap_server(smtp_max_refused_rcpts=3)
    client = smtplib.SMTP("127.0.0.1", trap.port, timeout=10)
    client.ehlo("relay-prober")
    client.mail("a@b.example")
    for i in range(3):
        assert client.rcpt(f"victim{i}@elsewhere.example")[0] == 550
    code, _ = client.rcpt("victim3@elsewhere.example")
    assert code == 421
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.rcpt("victim4@elsewhere.example")
    assert _kinds(trap, 1) == ["refused-recipients"]
    assert len(trap.wait_records("relay", 3)) == 3  # rows stop at the cap


# --- memory ---------------------------------------------------------------------------------------


def _open_data(port: int) -> tuple[socket.socket, bytes]:
    sock, _ = _banner(port)
    for line in (b"HELO big\r\n", b"MAIL FROM:<a@b.example>\r\n", f"RCPT TO:<x@{TRAP}>\r\n"):
        sock.sendall(line if isinstance(line, bytes) else line.encode())
        _read_reply(sock)
    sock.sendall(b"DATA\r\n")
    return sock, _read_reply(sock)


def test_in_flight_data_has_a_global_budget(trap_server: Callable[..., Trap]) -> None:
    """Two DATA commands fill a budget of 2.5 messages; the third gets 451 until one ends."""
    trap = trap_server(smtp_max_message_bytes=100_000, smtp_inflight_data_bytes=250_000)
    first, reply1 = _open_data(trap.port)
    second, reply2 = _open_data(trap.port)
    try:
        assert reply1.startswith(b"354") and reply2.startswith(b"354")
        third, reply3 = _open_data(trap.port)
        third.close()
        assert reply3.startswith(b"451 4.3.2")
        first.sendall(b"Subject: done\r\n\r\nbody\r\n.\r\n")
        assert _read_reply(first).startswith(b"250")
        fourth, reply4 = _open_data(trap.port)  # the budget came back with the 250
        fourth.close()
        assert reply4.startswith(b"354")
    finally:
        first.close()
        second.close()
    assert "memory" in _kinds(trap, 1)


def test_a_budget_below_one_message_is_a_config_error(tmp_path: Any) -> None:
    settings = load_settings(
        {"smtp_max_message_bytes": 1_000_000, "smtp_inflight_data_bytes": 999_999}
    )
    with pytest.raises(ConfigError, match="smtp_inflight_data_bytes"):
        server_class(settings, None)  # type: ignore[arg-type]


# --- backlog ----------------------------------------------------------------------------------


def test_listen_backlog_is_raised(trap_server: Callable[..., Trap]) -> None:
    trap = trap_server(smtp_listen_backlog=777)
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{trap.port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "LISTEN" and int(out[2]) == 777  # Send-Q of a listener is its backlog


def test_a_burst_of_300_connections_all_get_an_answer(trap_server: Callable[..., Trap]) -> None:
    """Every client of a burst gets a banner or a 421, none is left hanging or reset."""
    trap = trap_server(smtp_max_connections=50, smtp_max_sessions_per_ip=1000)
    socks = []
    try:
        for _ in range(300):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", trap.port))
            socks.append(sock)
        replies: dict[int, bytes] = {}
        pending = {s.fileno(): s for s in socks}
        while pending:
            ready, _, _ = select.select(list(pending.values()), [], [], 20)
            if not ready:
                break
            for sock in ready:
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    data = f"error {exc}".encode()
                replies[sock.fileno()] = data
                del pending[sock.fileno()]
        codes = [r[:3] for r in replies.values()]
        assert len(replies) == 300, f"{300 - len(replies)} clients got nothing"
        assert set(codes) <= {b"220", b"421"} and codes.count(b"220") >= 50
    finally:
        for sock in socks:
            sock.close()


# --- compatibility --------------------------------------------------------------------------------


def test_smtputf8_postmaster_and_root_dot_are_accepted(trap_server: Callable[..., Trap]) -> None:
    trap = trap_server()
    body = spam_bodies(1)[0]
    client = smtplib.SMTP("127.0.0.1", trap.port, timeout=10)
    client.ehlo("utf8.example")
    assert client.has_extn("smtputf8")
    assert client.mail("отправитель@spam.example", options=["SMTPUTF8"])[0] == 250
    assert client.rcpt(f"用户@{TRAP}")[0] == 250
    assert client.data(body)[0] == 250
    assert client.mail("a@b.example")[0] == 250
    assert client.rcpt("<postmaster>")[0] == 250  # RFC 5321 §4.5.1
    assert client.rcpt(f"<v@{TRAP}.>")[0] == 250  # root dot
    assert client.data(body)[0] == 250
    client.quit()
    rcpts = [r.fields["rcpt_to"] for r in trap.wait_records("message", 2)]
    assert rcpts == [[f"用户@{TRAP}"], ["postmaster", f"v@{TRAP}"]]


def test_data_timeout_leaves_no_bogus_timer(trap_server: Callable[..., Trap]) -> None:
    """After a DATA timeout the session is over: no second (command-timeout) limit row and no
    AssertionError from aiosmtpd's timer, however long the loop runs on."""
    trap = trap_server(smtp_data_timeout_s=0.5, smtp_command_timeout_s=0.3)
    errors: list[dict[str, Any]] = []
    trap.loop.call_soon_threadsafe(trap.loop.set_exception_handler, lambda _l, c: errors.append(c))
    sock, _ = _open_data(trap.port)
    sock.sendall(b"Subject: never ends\r\n")
    got = _until_closed(sock)
    sock.close()
    assert b"421 4.4.2" in got
    # Let the server's loop run past the moment a re-armed command timer would have fired.
    asyncio.run_coroutine_threadsafe(asyncio.sleep(1.0), trap.loop).result()
    assert _kinds(trap, 1) == ["data-timeout"]
    assert trap.records("limit") and len(trap.records("limit")) == 1
    assert not errors, errors
    assert send_one(trap.port, [f"x@{TRAP}"], spam_bodies(1)[0])[0] == 250


# --- the aiosmtpd contract ----------------------------------------------------------------------


def test_aiosmtpd_private_members_still_exist() -> None:
    """Fails by name when an aiosmtpd upgrade removes or reshapes what TrapSMTP overrides."""
    version = metadata.version("aiosmtpd")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("aiosmtpd"))
    low, high = re.findall(r"[\d.]+", pin)[:2]
    as_tuple = lambda v: tuple(int(p) for p in v.split("."))  # noqa: E731
    assert as_tuple(low) <= as_tuple(version) < as_tuple(high), (version, pin)

    from aiosmtpd.handlers import Sink

    instance = aiosmtpd.smtp.SMTP(Sink())
    source = inspect.getsource(aiosmtpd.smtp.SMTP)  # _reader is set once a client connects
    missing = [
        name
        for name in PRIVATE_CONTRACT
        if not hasattr(aiosmtpd.smtp.SMTP, name)
        and not hasattr(instance, name)
        and f"self.{name} = " not in source
    ]
    assert not missing, f"aiosmtpd {version} no longer has {missing}"
    assert list(inspect.signature(aiosmtpd.smtp.SMTP._getaddr).parameters) == ["self", "arg"]
    assert list(inspect.signature(aiosmtpd.smtp.SMTP._reset_timeout).parameters) == [
        "self",
        "duration",
    ]
    assert list(inspect.signature(aiosmtpd.smtp.SMTP._timeout_cb).parameters) == ["self"]
    assert inspect.iscoroutinefunction(aiosmtpd.smtp.SMTP._handle_client)
    assert set(instance._smtp_methods) >= {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "NOOP"}
    assert hasattr(asyncio.StreamReader(), "_buffer")  # read to spot pipelining
    assert hasattr(asyncio.StreamReader(), "_limit")  # lowered: DATA is read in pieces
    # smtp_DATA is ours (it streams to the spool) but keeps aiosmtpd's checks and hook call
    assert list(inspect.signature(aiosmtpd.smtp.SMTP._call_handler_hook).parameters) == [
        "self",
        "command",
        "args",
    ]
    assert list(inspect.signature(aiosmtpd.smtp.SMTP.check_auth_needed).parameters) == [
        "self",
        "caller_method",
    ]
    assert list(inspect.signature(aiosmtpd.smtp.SMTP._set_post_data_state).parameters) == ["self"]
    assert "DATA" in instance._smtp_methods and instance.envelope is None
