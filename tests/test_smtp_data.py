"""DATA received in pieces and written to the spool as it arrives: the stream decoder against its
line-by-line statement, the reader that never takes bytes past the end mark, and the real server
over 127.0.0.1 with smtplib and raw sockets (big messages intact, refused ones leave nothing,
memory bounded by pieces rather than by the message)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import smtplib
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

import test_smtp
from test_smtp import TRAP, Trap, _read_reply
from trap_helpers import long_line_spam, spam_bodies
from trapline.config import load_settings
from trapline.traps.smtp.data import END, TOO_LONG, TOO_MUCH, DataDecoder, decode_plain, receive
from trapline.traps.smtp.server import TrapSMTP
from trapline.traps.smtp.spool import Spool, SpoolError, SpoolRecord, decode_segment

trap_server = test_smtp.trap_server  # the same real-server fixture


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def stuffed(content: bytes) -> bytes:
    """What a client sends for ``content`` (CRLF lines, ending in CRLF): RFC 5321 §4.5.2."""
    lines = content.split(b"\r\n")[:-1]
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines) + b".\r\n"


def big_spam(size: int) -> bytes:
    """Real spam (SpamAssassin) back to back up to ``size`` bytes, CRLF lines, with lines that
    start with dots (stuffed on the wire) and a real 48 KB line."""
    parts, total = [], 0
    bodies = [*spam_bodies(400), long_line_spam()]
    while total < size:
        for body in bodies:
            piece = crlf(body) + b".dot line\r\n..two dots\r\n.\r\n"[: 1 + len(parts) % 30]
            piece = piece if piece.endswith(b"\r\n") else piece + b"\r\n"
            parts.append(piece)
            total += len(piece)
            if total >= size:
                break
    return b"".join(parts)


def feed_in_pieces(decoder: DataDecoder, raw: bytes, rng: random.Random) -> bytes:
    """Feed ``raw`` as a reader would: random pieces, byte by byte while the end mark may have
    begun, never past it."""
    out, pos = [], 0
    while not decoder.done:
        n = 1 if decoder.at_risk else rng.choice([1, 2, 3, 7, 64, 1000, 70_000])
        out.append(decoder.feed(raw[pos : pos + n]))
        pos += n
    assert pos >= len(raw)
    return b"".join(out)


# --- the decoder against its statement --------------------------------------------------------


def test_the_stream_decoder_agrees_with_the_line_by_line_statement() -> None:
    rng = random.Random(5321)
    streams = [stuffed(crlf(body)) for body in spam_bodies(40)]
    streams.append(stuffed(crlf(long_line_spam())))
    streams += [b".\r\n", b"..\r\n.\r\n", b"\r\n.\r\n", b".x\r\n.\r\n", b"a\r\r\n\n.\r\n.\r\n"]
    # hostile shapes: CR and LF alone, dots everywhere, stuffed end marks
    alphabet = [b"a", b"\r", b"\n", b".", b"\r\n", b"\r\n.", b"..", b"x" * 50]
    for _ in range(3000):
        text = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) + b"\r\n"
        streams.append(stuffed(text.replace(b"\r\n.\r\n", b"\r\n..\r\n")))
    seen = set()
    for raw in streams:
        for size_limit, line_limit in [(None, 1 << 20), (40, 1000), (2000, 30), (None, 4)]:
            want = decode_plain(raw, size_limit, line_limit)
            decoder = DataDecoder(size_limit, line_limit)
            got = feed_in_pieces(decoder, raw, rng)
            assert (decoder.state, got if decoder.state == "ok" else b"") == want, raw[:200]
            seen.add(decoder.state)
    assert seen == {"ok", TOO_MUCH, TOO_LONG}


def test_real_spam_round_trips_through_stuffing_and_the_decoder() -> None:
    rng = random.Random(6)
    content = big_spam(3_000_000)
    decoder = DataDecoder(None, 1 << 20)
    assert feed_in_pieces(decoder, stuffed(content), rng) == content
    assert decoder.received == len(stuffed(content)) - 3


def test_feeding_past_the_end_mark_is_refused() -> None:
    with pytest.raises(ValueError, match="past the end"):
        DataDecoder(None, 100).feed(b"hi\r\n.\r\nQUIT\r\n")


def test_the_reader_never_takes_bytes_past_the_end_mark() -> None:
    """Pipelined commands after the end of DATA stay in the session's reader."""
    content = big_spam(300_000)

    async def run(limit: int) -> tuple[bytes, bytes]:
        reader = asyncio.StreamReader(limit=limit)
        reader.feed_data(stuffed(content) + b"MAIL FROM:<next@spam.example>\r\nQUIT\r\n")
        reader.feed_eof()
        got: list[bytes] = []
        await receive(reader, DataDecoder(None, 1 << 20), got.append, piece=limit)
        assert max(len(piece) for piece in got) <= limit + len(END)
        return b"".join(got), await reader.read()

    for limit in (5, 64, 4096, 65536):
        got, rest = asyncio.run(run(limit))
        assert got == content
        assert rest == b"MAIL FROM:<next@spam.example>\r\nQUIT\r\n"


# --- the spool's incoming messages ------------------------------------------------------------


def test_a_spilled_message_becomes_its_own_segment_without_a_copy(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", linger_s=0.0)
    spool.start()
    try:
        content = big_spam(500_000)
        record = SpoolRecord("message", {"peer_ip": "192.0.2.1", "n": 1}, b"Received: x\r\n")
        incoming = spool.open_message(record, in_memory=64 * 1024)
        for i in range(0, len(content), 10_000):
            incoming.write(content[i : i + 10_000])
        assert incoming.spilled and [p.name for p in (spool.root / "tmp").iterdir()] == [
            incoming.path.name
        ]
        spool_name = incoming.commit().result(timeout=10)
        incoming.discard()  # after a commit: a no-op
        assert not list((spool.root / "tmp").iterdir())
        (seg,) = (spool.root / "new").glob("*.seg")
        assert seg.name == spool_name
        (got,) = decode_segment(seg.read_bytes())
        assert got.fields == record.fields and got.data == record.data + content
        assert incoming.digest.hexdigest() == hashlib.sha256(got.data).hexdigest()
        # the small path: kept in memory, group-committed with the events
        small = spool.open_message(record, in_memory=64 * 1024)
        small.write(b"Subject: hi\r\n\r\nbody\r\n")
        small.commit().result(timeout=10)
        assert not small.spilled and not list((spool.root / "tmp").iterdir())
        assert spool.accepted == 2
    finally:
        spool.close()


def test_a_broken_off_message_leaves_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", linger_s=0.0)
    spool.start()
    try:
        record = SpoolRecord("message", {"rcpt_to": ["a@b.example"]}, b"Received: x\r\n")
        incoming = spool.open_message(record, in_memory=0)
        incoming.write(b"Subject: hi\r\n\r\nbody\r\n")
        assert incoming.spilled and list((spool.root / "tmp").iterdir())
        incoming.discard()
        assert not list((spool.root / "tmp").iterdir())
        spool.close()  # a spool shut down refuses the commit, and the file goes
        late = spool.open_message(record, in_memory=0)
        late.write(b"Subject: late\r\n\r\nbody\r\n")
        with pytest.raises(SpoolError, match="shut down"):
            late.commit()
        assert not list((spool.root / "tmp").iterdir())
        assert not list((spool.root / "new").iterdir())
    finally:
        spool.close()


# --- the real server --------------------------------------------------------------------------


def _raw_session(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    _read_reply(sock)
    for line in (
        b"HELO big.example\r\n",
        b"MAIL FROM:<a@b.example>\r\n",
        f"RCPT TO:<x@{TRAP}>\r\n",
    ):
        sock.sendall(line if isinstance(line, bytes) else line.encode())
        _read_reply(sock)
    return sock


def _replies(sock: socket.socket, n: int) -> list[bytes]:
    """The next ``n`` (single-line) replies, however the server's writes were split."""
    sock.settimeout(30)
    data = b""
    while data.count(b"\r\n") < n and (chunk := sock.recv(65536)):
        data += chunk
    return data.split(b"\r\n")[:n]


def _tmp_entries(trap: Trap, timeout: float = 10.0) -> list[str]:
    """What is left in the spool's tmp/ once the server is done with it (waits a little: the
    server closes its side after the client)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p.name for p in (trap.spool.root / "tmp").iterdir() if p.suffix == ".part"]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def test_a_big_message_arrives_byte_for_byte(
    trap_server: Callable[..., Trap], tmp_path: Path
) -> None:
    """8 MB of real spam with dot lines, sent with smtplib, is the raw archive's exact bytes
    after our Received line, and the spool's tmp/ is empty after the 250."""
    from trapline.pipeline.drain import drain
    from trapline.store.duckdb import open_store
    from trapline.store.raw import read_raw

    trap = trap_server()
    content = big_spam(8_000_000)
    with smtplib.SMTP("127.0.0.1", trap.port, timeout=60) as client:
        client.ehlo("big.example")
        assert not client.sendmail("a@b.example", [f"x@{TRAP}"], content)  # smtplib stuffs
    assert _tmp_entries(trap) == []
    (message,) = trap.records("message")
    received, _, rest = message.data.partition(b"\r\n\t")
    assert received.startswith(b"Received: from big.example") and rest.endswith(content)
    assert message.data.endswith(b"+0000\r\n" + content)
    settings = load_settings({"data_dir": str(tmp_path / "data"), "trap_domains": [TRAP]})
    with open_store(tmp_path / "data") as store:
        drain(trap.spool, store, settings)
        stored = read_raw(store.con, hashlib.sha256(message.data).hexdigest())
    assert stored == message.data


def test_a_too_big_message_gets_552_and_leaves_nothing_behind(
    trap_server: Callable[..., Trap],
) -> None:
    trap = trap_server(smtp_max_message_bytes=1_000_000, smtp_data_memory_bytes=64 * 1024)
    content = big_spam(3_000_000)
    with smtplib.SMTP("127.0.0.1", trap.port, timeout=60) as client:
        client.ehlo("big.example")
        client.mail("a@b.example")
        client.rcpt(f"x@{TRAP}")
        code, text = client.data(content)
        assert code == 552 and b"limit 1000000 bytes" in text
        assert _tmp_entries(trap) == []
        # the session goes on: the next message in it is taken
        assert not client.sendmail("a@b.example", [f"x@{TRAP}"], crlf(spam_bodies(1)[0]))
    assert len(trap.records("message")) == 1
    assert [r.fields["kind"] for r in trap.wait_records("limit")] == ["size"]


def test_a_too_long_line_gets_500_and_leaves_nothing_behind(
    trap_server: Callable[..., Trap], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TrapSMTP, "line_length_limit", 100_000)
    trap = trap_server(smtp_data_memory_bytes=16 * 1024)
    sock = _raw_session(trap.port)
    try:
        sock.sendall(b"DATA\r\n")
        assert _read_reply(sock).startswith(b"354")
        sock.sendall(crlf(spam_bodies(1)[0]) + b"x" * 200_000 + b"\r\nend\r\n.\r\nQUIT\r\n")
        too_long, bye = _replies(sock, 2)
        assert too_long.startswith(b"500 5.5.6 Line too long (limit 100000 bytes)")
        assert bye.startswith(b"221")  # the pipelined QUIT was not swallowed
    finally:
        sock.close()
    assert _tmp_entries(trap) == [] and not trap.records("message")


def test_a_session_cut_off_in_data_leaves_nothing_behind(trap_server: Callable[..., Trap]) -> None:
    trap = trap_server(smtp_data_memory_bytes=16 * 1024)
    sock = _raw_session(trap.port)
    sock.sendall(b"DATA\r\n")
    assert _read_reply(sock).startswith(b"354")
    sock.sendall(stuffed(big_spam(1_000_000))[:900_000])
    deadline = time.monotonic() + 10
    while not list((trap.spool.root / "tmp").glob("*.part")):  # spilled to a file by now
        assert time.monotonic() < deadline, "the message never went to a spool file"
        time.sleep(0.02)
    sock.close()
    assert _tmp_entries(trap) == []
    assert not trap.records("message")


def test_pipelined_commands_after_a_big_message_are_answered(
    trap_server: Callable[..., Trap],
) -> None:
    trap = trap_server(smtp_data_memory_bytes=16 * 1024)
    sock = _raw_session(trap.port)
    try:
        sock.sendall(b"DATA\r\n")
        assert _read_reply(sock).startswith(b"354")
        content = big_spam(500_000)
        again = f"MAIL FROM:<c@d.example>\r\nRCPT TO:<y@{TRAP}>\r\nDATA\r\n".encode()
        sock.sendall(stuffed(content) + again)
        assert [r[:3] for r in _replies(sock, 4)] == [b"250", b"250", b"250", b"354"]
        sock.sendall(stuffed(b"Subject: small\r\n\r\nhi\r\n") + b"QUIT\r\n")
        assert [r[:3] for r in _replies(sock, 2)] == [b"250", b"221"]
    finally:
        sock.close()
    first, second = sorted(trap.records("message"), key=lambda r: r.fields["rcpt_to"])
    assert first.data.endswith(content) and second.data.endswith(b"\r\nhi\r\n")


def test_a_spool_that_cannot_take_the_file_gets_451_after_the_data(
    trap_server: Callable[..., Trap],
) -> None:
    """tmp/ gone under the server: the write fails, DATA is still read to its end, the reply is
    451 (try later, nothing taken) and the session goes on, and takes mail once it is back."""
    trap = trap_server(smtp_data_memory_bytes=16 * 1024)
    (trap.spool.root / "tmp").rmdir()
    with smtplib.SMTP("127.0.0.1", trap.port, timeout=60) as client:
        client.ehlo("big.example")
        client.mail("a@b.example")
        client.rcpt(f"x@{TRAP}")
        code, text = client.data(big_spam(200_000))
        assert code == 451 and b"4.3.0" in text
        assert client.noop()[0] == 250
        (trap.spool.root / "tmp").mkdir()  # the disk is back
        assert not client.sendmail("a@b.example", [f"x@{TRAP}"], big_spam(200_000))
    assert len(trap.records("message")) == 1


_SENDER = """
import smtplib, sys
body = open(sys.argv[2], "rb").read()
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=60) as client:
    client.ehlo("big.example")
    print(client.sendmail("a@b.example", ["x@traps.example.org"], body) or "ok")
"""


def test_server_memory_is_bounded_by_pieces_not_by_the_message(
    trap_server: Callable[..., Trap], tmp_path: Path
) -> None:
    """A 10 MB message costs the server (traced in this process; the client runs in its own)
    a few read pieces, not the message: aiosmtpd's way held it whole, several times over."""
    trap = trap_server()
    message = tmp_path / "big.eml"
    message.write_bytes(big_spam(10_000_000))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        sent = subprocess.run(
            [sys.executable, "-c", _SENDER, str(trap.port), str(message)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sent.stdout.strip() == "ok", sent.stderr
    assert len(trap.records("message")) == 1
    assert peak < 2_000_000, f"server allocated {peak} bytes at most for a 10 MB message"


def test_the_drain_stores_a_burst_of_big_messages_a_few_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drain group stops at ``GROUP_BYTES`` of segments (the one that crosses it included),
    so a burst of big mail is not read into memory at once; every message is still stored."""
    from trapline.pipeline import drain as drain_module
    from trapline.store.duckdb import open_store

    monkeypatch.setattr(drain_module, "GROUP_BYTES", 1_000_000)
    spool = Spool(tmp_path / "spool", linger_s=0.0)
    spool.start()
    try:
        for i in range(4):
            fields = {"peer_ip": "192.0.2.1", "rcpt_to": [f"x{i}@{TRAP}"], "session_id": f"s{i}"}
            incoming = spool.open_message(SpoolRecord("message", fields, b""), in_memory=0)
            incoming.write(f"Subject: big {i}\r\n\r\n".encode() + big_spam(400_000))
            incoming.commit().result(timeout=10)
    finally:
        spool.close()
    asked: list[int] = []  # drain asks between groups whether to yield the store
    settings = load_settings({"data_dir": str(tmp_path / "data"), "trap_domains": [TRAP]})
    with open_store(tmp_path / "data") as store:
        got = drain_module.drain(spool, store, settings, should_yield=lambda: bool(asked.append(1)))
        stored = store.con.execute("SELECT count(*) FROM raw").fetchone()
    assert got.messages == 4 and stored == (4,)
    assert len(asked) == 1  # two groups: 3 segments (1.2 MB, crossing the cap), then 1
