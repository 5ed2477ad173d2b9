"""The SMTP trap with real sockets and real clients: acceptance, relay refusal, every limit,
the session fingerprint and the durable spool. Servers run in-process on 127.0.0.1 port 0."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import shutil
import smtplib
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from trap_helpers import long_line_spam, send_one, spam_bodies
from trapline.config import load_settings
from trapline.traps.smtp import handler as handler_module
from trapline.traps.smtp import server as server_module
from trapline.traps.smtp import spool as spool_module
from trapline.traps.smtp.handler import SessionTrace, fingerprint, helo_shape
from trapline.traps.smtp.server import start_smtp
from trapline.traps.smtp.spool import Spool, SpoolError, SpoolRecord, decode_segment, encode_record

TRAP = "traps.example.org"


@dataclass
class Trap:
    port: int
    spool: Spool
    loop: asyncio.AbstractEventLoop
    server: asyncio.Server

    def records(self, kind: str) -> list[SpoolRecord]:
        out = []
        for folder in ("new", "done"):
            for path in sorted((self.spool.root / folder).glob("*.seg")):
                out.extend(r for r in decode_segment(path.read_bytes()) if r.kind == kind)
        return out

    def wait_records(self, kind: str, n: int = 1, timeout: float = 10.0) -> list[SpoolRecord]:
        """Events are written asynchronously (no one awaits them): wait until ``n`` are there."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.records(kind)
            if len(got) >= n or time.monotonic() > deadline:
                return got
            time.sleep(0.02)


@pytest.fixture
def trap_server(tmp_path: Path) -> Iterator[Callable[..., Trap]]:
    """Factory: ``trap_server(smtp_max_recipients=2, ...)`` → a running trap on a free port."""
    made: list[Trap] = []

    def make(**overrides: Any) -> Trap:
        settings = load_settings(
            {"data_dir": str(tmp_path / "data"), "trap_domains": [TRAP], **overrides}
        )
        spool = Spool(tmp_path / f"spool{len(made)}", linger_s=0.0)
        spool.start()
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()
        server = asyncio.run_coroutine_threadsafe(
            start_smtp(settings, spool, "127.0.0.1", 0), loop
        ).result()
        trap = Trap(server.sockets[0].getsockname()[1], spool, loop, server)
        made.append(trap)
        return trap

    yield make
    for trap in made:
        trap.loop.call_soon_threadsafe(trap.server.close)
        trap.loop.call_soon_threadsafe(trap.loop.stop)
        trap.spool.close()


def test_accepts_real_spam_for_trap_domains_and_spools_it_before_250(
    trap_server: Callable[..., Trap],
) -> None:
    trap = trap_server()
    body = spam_bodies(1)[0]
    code, text = send_one(trap.port, [f"anyone@{TRAP}"], body)
    assert code == 250 and "queued as" in text
    # The 250 came back, so the segment must already be in new/ (renamed, not in tmp/).
    messages = trap.records("message")
    assert len(messages) == 1
    # A segment may be in tmp/ right now, but only for the session's own events, which are
    # written after QUIT without anyone waiting on them: never the acknowledged message.
    for leftover in (trap.spool.root / "tmp").iterdir():
        with contextlib.suppress(FileNotFoundError):  # renamed meanwhile
            assert body not in leftover.read_bytes()
    rec = messages[0]
    assert rec.fields["peer_ip"] == "127.0.0.1" and rec.fields["rcpt_to"] == [f"anyone@{TRAP}"]
    assert rec.fields["mail_from"] == "sender@spam-sender.example"
    assert rec.data.startswith(b"Received: from mail.example.net ([127.0.0.1])")
    # the real message's bytes arrive intact (dot-stuffing undone) after our trace line
    assert body in rec.data
    import hashlib

    assert text.endswith(hashlib.sha256(rec.data).hexdigest()[:16])


def test_real_spam_with_a_48kb_line_is_accepted(trap_server: Callable[..., Trap]) -> None:
    trap = trap_server()
    code, _ = send_one(trap.port, [f"x@{TRAP}"], long_line_spam())
    assert code == 250  # RFC 5321's 1000-octet limit would have refused it with 500


def test_relay_attempts_get_550_and_are_logged(trap_server: Callable[..., Trap]) -> None:
    trap = trap_server()
    with smtplib.SMTP("127.0.0.1", trap.port, timeout=10) as client:
        client.ehlo("relay-tester")
        client.mail("spammer@example.com")
        code, text = client.rcpt("victim@gmail.com")
        assert code == 550 and b"5.7.1" in text
        code, _ = client.rcpt(f"ok@{TRAP}")
        assert code == 250
    relays = trap.wait_records("relay")
    assert [r.fields["rcpt_to"] for r in relays] == ["victim@gmail.com"]
    assert (
        relays[0].fields["domain"] == "gmail.com"
        and relays[0].fields["mail_from"] == "spammer@example.com"
    )
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send_one(trap.port, ["victim@gmail.com"], b"Subject: relay me\r\n\r\nhi\r\n")


def test_trap_code_has_no_client_side() -> None:
    """Nothing in the SMTP trap can send mail or open a connection: no client library, no
    connect call. (The subprocess test lists the server's real sockets as well.)"""
    forbidden = (
        "smtplib",
        "create_connection",
        "open_connection",
        ".connect(",
        "urllib",
        "httpx",
        "getaddrinfo",
    )
    for module in (handler_module, server_module, spool_module):
        source = inspect.getsource(module)
        for word in forbidden:
            assert word not in source, f"{module.__name__} contains {word!r}"


def test_oversized_message_gets_552_and_the_server_lives(trap_server: Callable[..., Trap]) -> None:
    trap = trap_server(smtp_max_message_bytes=20_000)
    big = spam_bodies(1, max_bytes=80_000)[0] + b"\n" + b"filler line of a large spam\n" * 2000
    code, text = send_one(trap.port, [f"x@{TRAP}"], big)
    assert code == 552 and "5.3.4" in text and "limit 20000 bytes" in text
    assert trap.wait_records("limit")[0].fields["kind"] == "size"
    assert send_one(trap.port, [f"x@{TRAP}"], spam_bodies(1)[0])[0] == 250  # still serving
    assert len(trap.records("message")) == 1


def test_declared_size_over_limit_is_refused_at_mail(trap_server: Callable[..., Trap]) -> None:
    trap = trap_server(smtp_max_message_bytes=20_000)
    with smtplib.SMTP("127.0.0.1", trap.port, timeout=10) as client:
        client.ehlo("x")
        code, text = client.mail("a@b.example", ["SIZE=999999"])
        assert code == 552 and b"5.3.4" in text


def test_too_many_recipients_gets_452(trap_server: Callable[..., Trap]) -> None:
    trap = trap_server(smtp_max_recipients=3)
    with smtplib.SMTP("127.0.0.1", trap.port, timeout=10) as client:
        client.ehlo("x")
        client.mail("a@b.example")
        codes = [client.rcpt(f"u{i}@{TRAP}")[0] for i in range(5)]
        assert codes == [250, 250, 250, 452, 452]
        assert client.data(spam_bodies(1)[0])[0] == 250  # the first three still get the message
    assert trap.records("message")[0].fields["rcpt_to"] == [f"u{i}@{TRAP}" for i in range(3)]
    events = trap.wait_records("limit", 2)
    assert {e.fields["kind"] for e in events} == {"recipients"}
    assert "4.5.3" in events[0].fields["reply"]


def _read_reply(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_idle_connection_times_out_with_421_and_the_server_lives(
    trap_server: Callable[..., Trap],
) -> None:
    trap = trap_server(smtp_command_timeout_s=0.5)
    with socket.create_connection(("127.0.0.1", trap.port)) as sock:
        assert _read_reply(sock).startswith(b"220")
        sock.sendall(b"EHLO idler\r\n")
        _read_reply(sock)
        # ... then say nothing: the server must hang up with a reply, not silently
        rest = b""
        sock.settimeout(10)
        while chunk := sock.recv(4096):
            rest += chunk
        assert b"421 4.4.2" in rest and b"timeout" in rest
    assert trap.wait_records("limit")[0].fields["kind"] == "command-timeout"
    assert send_one(trap.port, [f"x@{TRAP}"], spam_bodies(1)[0])[0] == 250


def test_slowloris_data_is_cut_off_by_the_data_timeout(trap_server: Callable[..., Trap]) -> None:
    """A client that keeps trickling bytes is still cut off: the DATA timer is not an idle timer.

    The server's loop runs on a clock the test moves, so nothing depends on how busy the machine
    is: every byte arrives 3 clock seconds after the last (never idle for the 10 s timeout), and
    the cut must come once 10 s have passed since DATA.
    """
    trap = trap_server(smtp_data_timeout_s=10.0, smtp_command_timeout_s=1000.0)
    start, offset = trap.loop.time(), [0.0]
    trap.loop.time = lambda: start + offset[0]  # type: ignore[method-assign]

    def advance(seconds: float) -> None:
        async def step() -> None:
            for _ in range(3):  # the loop reads what was sent, then the timers now due run
                await asyncio.sleep(0)
            offset[0] += seconds
            for _ in range(3):
                await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(step(), trap.loop).result(timeout=10)

    with socket.create_connection(("127.0.0.1", trap.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each byte leaves at once
        _read_reply(sock)
        for line in (
            b"HELO slow\r\n",
            b"MAIL FROM:<a@b.example>\r\n",
            f"RCPT TO:<x@{TRAP}>\r\n".encode(),
            b"DATA\r\n",
        ):
            sock.sendall(line)
            _read_reply(sock)
        for _ in range(3):  # 9 s into DATA, a byte every 3 s: the session stays open
            sock.sendall(b"x")
            advance(3.0)
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            assert sock.recv(4096) == b"", "cut off before the data timeout"
        sock.sendall(b"x")
        advance(3.0)  # 12 s into DATA, 3 s after the last byte
        got = b""
        sock.settimeout(10)
        # The last byte may still be unread when the server hangs up, so a reset follows the
        # reply (which is read first); a server that never hangs up fails the assert below.
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(4096):
                got += chunk
        assert b"421 4.4.2" in got, "a trickling client was not cut off by the data timeout"
    assert trap.wait_records("limit")[0].fields["kind"] == "data-timeout"
    assert not trap.records("message")


def test_concurrent_connection_limit(trap_server: Callable[..., Trap]) -> None:
    trap = trap_server(smtp_max_connections=2)
    held = [socket.create_connection(("127.0.0.1", trap.port)) for _ in range(2)]
    try:
        for sock in held:
            assert _read_reply(sock).startswith(b"220")
        with socket.create_connection(("127.0.0.1", trap.port)) as third:
            assert _read_reply(third).startswith(b"421 4.7.0 Too many connections")
        assert trap.wait_records("limit")[0].fields["kind"] == "connections"
    finally:
        for sock in held:
            sock.close()
    # once they hang up, new clients are served again
    deadline = time.monotonic() + 10
    while True:
        try:
            assert send_one(trap.port, [f"x@{TRAP}"], spam_bodies(1)[0])[0] == 250
            break
        except smtplib.SMTPConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_per_ip_rate_limit(trap_server: Callable[..., Trap]) -> None:
    trap = trap_server(smtp_per_ip_per_minute=3)
    bodies = spam_bodies(1)
    assert send_one(trap.port, [f"x@{TRAP}"], bodies[0])[0] == 250  # connect + MAIL = 2 events
    with pytest.raises(smtplib.SMTPSenderRefused) as err:  # connect = 3, MAIL = over
        send_one(trap.port, [f"x@{TRAP}"], bodies[0])
    assert err.value.smtp_code == 450
    with pytest.raises(smtplib.SMTPConnectError) as conn:
        smtplib.SMTP("127.0.0.1", trap.port, timeout=10)
    assert conn.value.smtp_code == 421
    kinds = [e.fields["kind"] for e in trap.wait_records("limit", 2)]
    assert kinds == ["rate", "rate"]


def test_no_250_when_the_spool_cannot_write(trap_server: Callable[..., Trap]) -> None:
    trap = trap_server()
    trap.spool.close()  # the spool refuses new records from now on
    code, text = send_one(trap.port, [f"x@{TRAP}"], spam_bodies(1)[0])
    assert code == 451 and "4.3.0" in text
    assert not trap.records("message")


def test_session_fingerprint_sees_pipelining_and_helo_shape(
    trap_server: Callable[..., Trap],
) -> None:
    trap = trap_server()
    send_one(trap.port, [f"a@{TRAP}"], spam_bodies(1)[0], helo="mail.example.net")
    with socket.create_connection(("127.0.0.1", trap.port)) as sock:  # a bot that pipelines
        _read_reply(sock)
        sock.sendall(b"HELO 10.1.2.3\r\n")
        _read_reply(sock)
        sock.sendall(
            f"MAIL FROM:<a@b.example>\r\nRCPT TO:<a@{TRAP}>\r\nRCPT TO:<b@{TRAP}>\r\nDATA\r\n".encode()
        )
        replies = b""
        while replies.count(b"\r\n") < 4:
            replies += sock.recv(4096)
        assert replies.splitlines()[-1].startswith(b"354")
        sock.sendall(b"Subject: pipelined\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        while sock.recv(4096):
            pass
    sessions = {s.fields["helo"]: s.fields for s in trap.wait_records("session", 2)}
    polite, bot = sessions["mail.example.net"], sessions["10.1.2.3"]
    assert polite["pipelined"] is False and bot["pipelined"] is True
    assert polite["helo_shape"] == "fqdn" and bot["helo_shape"] == "bare-ip"
    assert bot["commands"] == ["HELO", "MAIL", "RCPT", "RCPT", "DATA", "QUIT"]
    assert polite["esmtp"] is True and bot["esmtp"] is False
    assert polite["fingerprint"] != bot["fingerprint"]
    assert bot["messages"] == 1 and bot["end_reason"] == "quit"
    msg = next(m for m in trap.records("message") if m.fields["helo"] == "10.1.2.3")
    assert msg.fields["session_fingerprint"] and "pipe=1" in msg.fields["fingerprint_text"]


def test_helo_shapes() -> None:
    assert helo_shape(None, "1.2.3.4") == "none"
    assert helo_shape("[1.2.3.4]", "1.2.3.4") == "ip-literal-peer"
    assert helo_shape("[5.6.7.8]", "1.2.3.4") == "ip-literal"
    assert helo_shape("1.2.3.4", "1.2.3.4") == "bare-ip-peer"
    assert helo_shape("localhost", "1.2.3.4") == "localhost"
    assert helo_shape("WIN-7QX2", "1.2.3.4") == "single-label"
    assert helo_shape("mx1.example.com", "1.2.3.4") == "fqdn"
    assert helo_shape("bad..name", "1.2.3.4") == "malformed"
    trace = SessionTrace("s", "1.2.3.4", 1, 0.0, __import__("datetime").datetime.now())
    trace.commands = [("EHLO", 1.0), ("MAIL", 1.1), ("RCPT", 1.2), ("RCPT", 1.3), ("DATA", 1.4)]
    text, digest = fingerprint(trace)
    assert "EHLO,MAIL,RCPT+,DATA" in text and len(digest) == 16


def test_spool_segments_round_trip_and_reject_truncation(tmp_path: Path) -> None:
    recs = [
        SpoolRecord("message", {"peer_ip": "1.2.3.4"}, b"x\n\x00" * 10),
        SpoolRecord("visit", {"id": "v1"}),
    ]
    blob = b"".join(encode_record(r) for r in recs)
    assert decode_segment(blob) == recs
    for cut in (1, 5, len(blob) - 1):
        with pytest.raises(SpoolError):
            decode_segment(blob[:cut])
    spool = Spool(tmp_path / "s")
    (spool.root / "tmp" / "leftover.seg").write_bytes(b"half a record")
    spool = Spool(tmp_path / "s")  # a restart discards tmp/ (nobody got a 250 for it)
    assert not list((spool.root / "tmp").iterdir())
    path = spool.write_now(recs)
    assert path is not None and spool.pending_segments() == [path]
    spool.mark_done(path)
    assert spool.pending_segments() == [] and (spool.root / "done" / path.name).exists()


@pytest.mark.skipif(
    shutil.which("swaks") is None, reason="swaks not installed (apt-get install swaks)"
)
def test_swaks_delivers_real_spam(trap_server: Callable[..., Trap], tmp_path: Path) -> None:
    trap = trap_server()
    body = tmp_path / "spam.eml"
    body.write_bytes(spam_bodies(3)[2])
    run = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(trap.port), "--to", f"swaks@{TRAP}",
         "--from", "bulk@sender.example", "--helo", "swaks.example.net", "--data", f"@{body}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "250 2.0.0 Ok: queued as" in run.stdout
    assert trap.records("message")[0].fields["rcpt_to"] == [f"swaks@{TRAP}"]


@pytest.mark.skipif(
    shutil.which("openssl") is None,
    reason="openssl not installed (needed to make a test certificate)",
)
def test_starttls_sessions_are_fingerprinted_as_tls(
    trap_server: Callable[..., Trap], tmp_path: Path
) -> None:
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    trap = trap_server(smtp_tls_cert=str(cert), smtp_tls_key=str(key))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # our own throwaway certificate
    with smtplib.SMTP("127.0.0.1", trap.port, timeout=30) as client:
        client.ehlo("tls-bot.example.net")
        assert client.has_extn("starttls")
        client.starttls(context=context)
        client.ehlo("tls-bot.example.net")
        client.mail("a@b.example")
        client.rcpt(f"x@{TRAP}")
        assert client.data(spam_bodies(1)[0])[0] == 250
    msg = trap.records("message")[0]
    assert b"with ESMTPS id" in msg.data and "tls=1" in msg.fields["fingerprint_text"]
    session = trap.wait_records("session")[0].fields
    assert session["tls"] is True and session["commands"][:3] == ["EHLO", "STARTTLS", "EHLO"]
    assert session["mail_from"] == ["a@b.example"] and session["rcpt_to"] == [f"x@{TRAP}"]


def test_drained_events_land_in_their_tables_exactly_once(
    trap_server: Callable[..., Trap], tmp_path: Path
) -> None:
    """Relay attempts, limit hits and sessions reach the store; replaying the same segments (a
    crash after the store commit but before the move to done/) changes nothing."""
    from trapline.pipeline.drain import drain
    from trapline.store.duckdb import open_store

    trap = trap_server(smtp_max_recipients=1)
    with smtplib.SMTP("127.0.0.1", trap.port, timeout=10) as client:
        client.ehlo("counter.example.net")
        client.mail("a@b.example")
        assert client.rcpt("victim@gmail.com")[0] == 550
        assert client.rcpt(f"one@{TRAP}")[0] == 250
        assert client.rcpt(f"two@{TRAP}")[0] == 452
        assert client.data(spam_bodies(1)[0])[0] == 250
    trap.wait_records("session")
    settings = load_settings({"data_dir": str(tmp_path / "data"), "trap_domains": [TRAP]})
    tables = ("relay_attempts", "limit_events", "smtp_sessions", "raw", "messages")

    def counts(store: Any) -> list[int]:
        return [store.con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables]

    with open_store(tmp_path / "data") as store:
        drain(trap.spool, store, settings)
        first = counts(store)
        assert first == [1, 1, 1, 1, 1]
        for path in (trap.spool.root / "done").glob("*.seg"):  # replay every segment
            shutil.copy(path, trap.spool.root / "new" / path.name)
        again = drain(trap.spool, store, settings)
        assert again.segments >= 1 and again.new_messages == 0
        assert counts(store) == first
        row = store.con.execute("SELECT kind, reply FROM limit_events").fetchone()
        assert row[0] == "recipients" and row[1].startswith("452 4.5.3")
        session = store.con.execute(
            "SELECT commands, rcpt_to, messages FROM smtp_sessions"
        ).fetchone()
        assert session == (
            ["EHLO", "MAIL", "RCPT", "RCPT", "RCPT", "DATA", "QUIT"],
            ["victim@gmail.com", f"one@{TRAP}", f"two@{TRAP}"],
            1,
        )


def test_long_commands_from_bots_are_accepted_up_to_the_trap_limit(
    trap_server: Callable[..., Trap],
) -> None:
    trap = trap_server()
    sender = "x" * 900 + "@bulk.example"  # far over RFC 5321's 256-octet path, well under 2048
    with smtplib.SMTP("127.0.0.1", trap.port, timeout=10) as client:
        client.ehlo("bot")
        assert client.mail(sender)[0] == 250
        code, text = client.rcpt("y" * 3000 + f"@{TRAP}")
        assert code == 500 and b"limit 2048 bytes" in text
    assert trap.wait_records("limit")[0].fields["kind"] == "command-length"


def test_undecodable_client_bytes_cannot_break_the_spool_or_the_drain(tmp_path: Path) -> None:
    from trapline.pipeline.drain import drain
    from trapline.store.duckdb import open_store

    bad = b"bot\xff\xfe.example".decode("utf-8", "surrogateescape")  # what surrogateescape yields
    spool = Spool(tmp_path / "spool")
    spool.write_now(
        [SpoolRecord("relay", {"id": "r1", "mail_from": bad, "rcpt_to": "a@b.example"})]
    )
    settings = load_settings({"data_dir": str(tmp_path / "data"), "trap_domains": [TRAP]})
    with open_store(tmp_path / "data") as store:
        drain(spool, store, settings)
        # Lone surrogates become U+FFFD, as in every other stored string (model.clean_text).
        assert store.con.execute("SELECT mail_from FROM relay_attempts").fetchone() == (
            "bot\ufffd\ufffd.example",
        )


def test_a_poison_segment_is_set_aside_and_does_not_block_the_drain(tmp_path: Path) -> None:
    from trapline.pipeline.drain import drain
    from trapline.store.duckdb import open_store

    spool = Spool(tmp_path / "spool")
    spool.write_now([SpoolRecord("relay", {"id": "ok-1", "rcpt_to": "a@b.example"})])
    poison = spool.write_now([SpoolRecord("limit", {"id": "bad", "hit_at": "not a time"})])
    spool.write_now([SpoolRecord("relay", {"id": "ok-2", "rcpt_to": "c@d.example"})])
    (spool.root / "new" / "garbage.seg").write_bytes(b"this is not a spool segment")
    settings = load_settings({"data_dir": str(tmp_path / "data"), "trap_domains": [TRAP]})
    with open_store(tmp_path / "data") as store:
        result = drain(spool, store, settings)
        assert store.con.execute("SELECT id FROM relay_attempts ORDER BY id").fetchall() == [
            ("ok-1",),
            ("ok-2",),
        ]
    assert result.bad_segments == 2 and not spool.pending_segments()
    assert poison is not None and (spool.root / "bad" / poison.name).exists()
