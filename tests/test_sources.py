"""Sources: real corpora in, exactly the right messages out; bad input never crashes."""

from __future__ import annotations

import bz2
import ctypes
import functools
import gzip
import hashlib
import io
import lzma
import os
import pty
import re
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import TESTS_DATA, shared
from trapline.errors import SourceError
from trapline.ingest.compression import sniff
from trapline.ingest.mbox import is_postmark, split_mbox, unquote_mboxrd
from trapline.ingest.sources import SourceReader
from trapline.model import RawMessage, SourceProblem

NAZARIO = ("mail", "nazario-phishing-2005")
SA = ("mail", "spamassassin-2002")
FIXTURES = TESTS_DATA / "sources"


def messages(items: list[RawMessage | SourceProblem]) -> list[RawMessage]:
    return [i for i in items if isinstance(i, RawMessage)]


def problems(items: list[RawMessage | SourceProblem]) -> list[SourceProblem]:
    return [i for i in items if isinstance(i, SourceProblem)]


def from_line_count(data: bytes) -> int:
    """What `grep -c '^From '` says."""
    return sum(1 for line in data.split(b"\n") if line.startswith(b"From "))


def postmarks(data: bytes) -> list[bytes]:
    """Every line starting with 'From ' (with its line ending) in file order."""
    return re.findall(rb"^From [^\n]*\n", data, flags=re.MULTILINE)


# --- real corpora -----------------------------------------------------------------------------


@pytest.mark.slow
def test_spamassassin_corpus_one_message_per_file_byte_identical() -> None:
    root = shared(*SA)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.parent != root)
    reader = SourceReader([root])
    items = list(reader)
    assert problems(items) == []
    got = messages(items)
    assert len(got) == len(files) == 6046
    by_source = {m.source: m for m in got}
    for path in files:
        assert by_source[str(path)].data == path.read_bytes()
    # The top-level docs are skipped, counted, not read as mail.
    assert sorted(Path(p).name for p in reader.skipped) == [
        "LICENSE.stdlib-package",
        "README.stdlib-package.md",
        "SOURCE.txt",
        "package.json",
    ]
    distinct_files = {hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    assert {m.id for m in got} == distinct_files
    assert reader.bytes_total == reader.bytes_read == sum(p.stat().st_size for p in files)


@pytest.mark.parametrize(("name", "expected"), [("phishing0.mbox", 415), ("phishing1.mbox", 456)])
def test_nazario_mbox_counts_match_from_lines(name: str, expected: int) -> None:
    path = shared(*NAZARIO, name)
    data = path.read_bytes()
    assert from_line_count(data) == expected  # every From line in these files is a separator
    got = messages(list(SourceReader([path])))
    assert len(got) == expected
    assert [m.source for m in got] == [f"{path}#{i}" for i in range(expected)]
    assert all(not m.data.startswith(b"From ") for m in got)
    assert all(
        m.data.startswith((b"Return-Path:", b"Received:", b"X-", b"Delivered-To:"))
        or b":" in m.data.split(b"\n", 1)[0]
        for m in got
    )


@pytest.mark.parametrize("name", ["phishing0.mbox", "phishing1.mbox"])
def test_nazario_mbox_round_trips_without_unquoting(name: str) -> None:
    """Postmark + message + blank line, for every message, gives back the file exactly."""
    path = shared(*NAZARIO, name)
    data = path.read_bytes()
    got = messages(list(SourceReader([path], unquote=False)))
    marks = postmarks(data)
    assert len(marks) == len(got)
    rebuilt = b"\n".join(mark + m.data for mark, m in zip(marks, got, strict=True))
    assert rebuilt == data or rebuilt + b"\n" == data


def test_nazario_mboxrd_unquoting_restores_from_line() -> None:
    path = shared(*NAZARIO, "phishing1.mbox")
    quoted = [
        m for m in messages(list(SourceReader([path], unquote=False))) if b"\n>From " in m.data
    ]
    assert len(quoted) == 1
    unquoted = {m.source: m for m in messages(list(SourceReader([path])))}[quoted[0].source]
    assert b"\nFrom $1" in unquoted.data
    assert b"\n>From " not in unquoted.data
    assert len(unquoted.data) == len(quoted[0].data) - 1


def test_nice_mbox() -> None:
    path = shared("mail", "edge-cases", "spamassassin-t-data", "nice.mbox")
    data = path.read_bytes()
    got = messages(list(SourceReader([path])))
    assert len(got) == from_line_count(data) == 3
    assert all(b"\nSubject: " in m.data or m.data.startswith(b"Subject: ") for m in got)


def test_edge_cases_tree_reads_every_file() -> None:
    root = shared("mail", "edge-cases")
    reader = SourceReader([root])
    items = list(reader)
    assert problems(items) == []
    files = [p for p in root.rglob("*") if p.is_file()]
    skipped = {Path(p) for p in reader.skipped}
    assert {p.name for p in skipped} == {"SOURCE.txt", "COMMIT", "LICENSE", "LICENSE.txt"}
    mail_files = [p for p in files if p not in skipped]
    # nice.mbox holds 3 messages, every other file is one message, byte for byte.
    assert len(messages(items)) == len(mail_files) - 1 + 3
    singles = {m.source: m.data for m in messages(items) if "#" not in m.source}
    for p in mail_files:
        if p.name != "nice.mbox":
            assert singles[str(p)] == p.read_bytes()


# --- formats built from real messages ---------------------------------------------------------


def nazario_messages(name: str = "phishing0.mbox") -> list[RawMessage]:
    return messages(list(SourceReader([shared(*NAZARIO, name)])))


COMPRESSORS = {
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
    # the zstd command line writes a checksum by default; without one, corruption inside a
    # frame is undetectable by design (RFC 8878 §3.1.1), so build files the way users get them
    "zst": lambda b: zstandard.ZstdCompressor(write_checksum=True).compress(b),
}


@pytest.mark.parametrize("ext", sorted(COMPRESSORS))
def test_compressed_mbox_equals_plain(tmp_path: Path, ext: str) -> None:
    plain = shared(*NAZARIO, "phishing0.mbox")
    packed = tmp_path / f"phishing0.mbox.{ext}"
    packed.write_bytes(COMPRESSORS[ext](plain.read_bytes()))
    reader = SourceReader([packed])
    got = list(reader)
    assert [m.data for m in messages(got)] == [m.data for m in nazario_messages()]
    assert problems(got) == []
    assert reader.bytes_read == reader.bytes_total == packed.stat().st_size


@pytest.mark.parametrize("ext", sorted(COMPRESSORS))
def test_compressed_single_file_is_whole_file(tmp_path: Path, ext: str) -> None:
    original = next(iter(sorted(shared(*SA, "spam").iterdir())))
    packed = tmp_path / f"{original.name}.{ext}"
    packed.write_bytes(COMPRESSORS[ext](original.read_bytes()))
    got = list(SourceReader([packed]))
    assert got == [RawMessage(original.read_bytes(), str(packed))]


def test_multi_member_gzip_and_multi_frame_zstd(tmp_path: Path) -> None:
    data = shared(*NAZARIO, "phishing0.mbox").read_bytes()
    half = data.index(b"\n\nFrom ", len(data) // 2) + 2
    gz = tmp_path / "two.mbox.gz"
    gz.write_bytes(gzip.compress(data[:half]) + gzip.compress(data[half:]))
    zst = tmp_path / "two.mbox.zst"
    cctx = zstandard.ZstdCompressor()
    zst.write_bytes(cctx.compress(data[:half]) + cctx.compress(data[half:]))
    expected = [m.data for m in nazario_messages()]
    for path in (gz, zst):
        assert [m.data for m in messages(list(SourceReader([path])))] == expected


@pytest.mark.parametrize("ext", sorted(COMPRESSORS))
def test_truncated_archive_keeps_complete_messages(tmp_path: Path, ext: str) -> None:
    packed = COMPRESSORS[ext](shared(*NAZARIO, "phishing0.mbox").read_bytes())
    cut = tmp_path / f"cut.mbox.{ext}"
    cut.write_bytes(packed[: len(packed) // 2])
    got = list(SourceReader([cut]))
    assert isinstance(got[-1], SourceProblem)
    assert got[-1].reason == "truncated-archive"
    kept = [m.data for m in got[:-1]]
    assert all(isinstance(m, RawMessage) for m in got[:-1])
    full = [m.data for m in nazario_messages()]
    assert 0 < len(kept) < len(full)
    assert kept == full[: len(kept)]


@pytest.mark.parametrize("ext", sorted(COMPRESSORS))
def test_corrupt_archive_is_a_problem(tmp_path: Path, ext: str) -> None:
    packed = bytearray(COMPRESSORS[ext](shared(*NAZARIO, "phishing0.mbox").read_bytes()))
    middle = len(packed) // 2
    packed[middle : middle + 64] = bytes(64)  # zero a stretch in the middle
    bad = tmp_path / f"bad.mbox.{ext}"
    bad.write_bytes(bytes(packed))
    got = list(SourceReader([bad]))
    assert isinstance(got[-1], SourceProblem)
    assert got[-1].reason in {"corrupt-archive", "truncated-archive"}


def test_maildir_reads_cur_and_new_skips_tmp(tmp_path: Path) -> None:
    spam = sorted(shared(*SA, "spam").iterdir())[:5]
    box = tmp_path / "Maildir"
    for part in ("cur", "new", "tmp"):
        (box / part).mkdir(parents=True)
    (box / "cur" / "1700000000.1.host:2,S").write_bytes(spam[0].read_bytes())
    (box / "cur" / "1700000001.2.host:2,").write_bytes(spam[1].read_bytes())
    (box / "new" / "1700000002.3.host").write_bytes(spam[2].read_bytes())
    (box / "tmp" / "1700000003.4.host").write_bytes(spam[3].read_bytes())
    (box / "dovecot-uidlist").write_bytes(b"3 V1 N4\n")
    # A Maildir file is one message even when it looks like an mbox.
    mbox_like = shared(*NAZARIO, "phishing0.mbox").read_bytes()[:200_000]
    (box / "new" / "1700000004.5.host").write_bytes(mbox_like)
    junk = box / ".Junk"
    (junk / "cur").mkdir(parents=True)
    (junk / "new").mkdir()
    (junk / "cur" / "1700000005.6.host:2,").write_bytes(spam[4].read_bytes())
    reader = SourceReader([tmp_path])
    got = list(reader)
    assert problems(got) == []
    assert [(Path(m.source).relative_to(tmp_path).as_posix(), m.data) for m in got] == [
        ("Maildir/cur/1700000000.1.host:2,S", spam[0].read_bytes()),
        ("Maildir/cur/1700000001.2.host:2,", spam[1].read_bytes()),
        ("Maildir/new/1700000002.3.host", spam[2].read_bytes()),
        ("Maildir/new/1700000004.5.host", mbox_like),
        ("Maildir/.Junk/cur/1700000005.6.host:2,", spam[4].read_bytes()),
    ]
    assert sorted(Path(p).name for p in reader.skipped) == ["1700000003.4.host", "dovecot-uidlist"]


def test_crlf_mbox(tmp_path: Path) -> None:
    lf = shared(*NAZARIO, "phishing0.mbox").read_bytes()
    crlf = tmp_path / "crlf.mbox"
    crlf.write_bytes(lf.replace(b"\n", b"\r\n"))
    got = messages(list(SourceReader([crlf])))
    assert [m.data for m in got] == [m.data.replace(b"\n", b"\r\n") for m in nazario_messages()]


def test_stdin_mbox_and_single_from_bytesio() -> None:
    data = shared(*NAZARIO, "phishing1.mbox").read_bytes()
    reader = SourceReader(["-"], stdin=io.BytesIO(data))
    assert reader.bytes_total is None
    got = messages(list(reader))
    assert len(got) == 456
    assert got[0].source == "<stdin>#0"
    assert reader.bytes_read == len(data)
    single = sorted(shared(*SA, "easy_ham").iterdir())[0].read_bytes()
    assert list(SourceReader(["-"], stdin=io.BytesIO(single))) == [RawMessage(single, "<stdin>")]


def test_stdin_through_a_real_pipe() -> None:
    data = gzip.compress(shared(*NAZARIO, "phishing0.mbox").read_bytes())
    script = (
        "import sys\n"
        "from trapline.ingest.sources import SourceReader\n"
        "items = list(SourceReader(['-']))\n"
        "print(len(items), sum(len(i.data) for i in items))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], input=data, capture_output=True, check=True
    ).stdout.split()
    expected = nazario_messages()
    assert [int(x) for x in out] == [len(expected), sum(len(m.data) for m in expected)]


# --- bad input --------------------------------------------------------------------------------


def test_missing_path_raises_before_reading(tmp_path: Path) -> None:
    good = tmp_path / "good.eml"
    good.write_bytes(b"Subject: x\n\nbody\n")
    missing = tmp_path / "nope" / "missing.mbox"
    with pytest.raises(SourceError, match=re.escape(str(missing))):
        SourceReader([good, missing])


def test_zero_byte_file_is_a_problem(tmp_path: Path) -> None:
    empty = tmp_path / "empty.eml"
    empty.touch()
    assert list(SourceReader([empty])) == [
        SourceProblem(str(empty), "empty-file", "the input holds no bytes")
    ]


def test_mbox_without_from_line_is_one_message(tmp_path: Path) -> None:
    body = next(
        data
        for data in (p.read_bytes() for p in sorted(shared(*SA, "easy_ham").iterdir()))
        if not data.startswith(b"From ")
    )
    named = tmp_path / "nofrom.mbox"
    named.write_bytes(body)
    assert list(SourceReader([named])) == [RawMessage(body, str(named))]


def test_ten_megabyte_single_line_and_nul_bytes(tmp_path: Path) -> None:
    real = sorted(shared(*SA, "spam").iterdir())[1].read_bytes()
    head, _, rest = real.partition(b"\n")
    huge = b"X-Long: " + b"A" * (10 << 20)
    one_line = tmp_path / "oneline"
    one_line.write_bytes(b"From " + b"B" * (10 << 20))  # no newline at all
    hdr = tmp_path / "hugeheader.eml"
    hdr.write_bytes(head + b"\n" + huge + b"\n" + rest)
    nul = tmp_path / "nul.eml"
    nul.write_bytes(real.replace(b"\n\n", b"\n\x00\x00\n\n", 1))
    for path in (one_line, hdr, nul):
        assert list(SourceReader([path])) == [RawMessage(path.read_bytes(), str(path))]


def test_huge_line_inside_mbox_does_not_break_splitting(tmp_path: Path) -> None:
    data = shared(*NAZARIO, "phishing0.mbox").read_bytes()
    cut = data.index(b"\n\nFrom ", 100_000) + 2
    big = data[:cut] + b"From x@y Mon Jan  3 10:00:00 2005\nSubject: big\n\n" + b"Z" * (10 << 20)
    big += b"\n\n" + data[cut:]
    path = tmp_path / "big.mbox"
    path.write_bytes(big)
    got = messages(list(SourceReader([path])))
    assert len(got) == 416
    assert sum(1 for m in got if len(m.data) > 10 << 20) == 1


def test_oversized_message_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    path = shared(*NAZARIO, "phishing0.mbox")
    plain = nazario_messages()
    limit = 20_000
    got = list(SourceReader([path], max_message_bytes=limit))
    too_large = [p for p in problems(got) if p.reason == "too-large"]
    assert too_large and all(p.source.startswith(f"{path}#") for p in too_large)
    assert len(got) == len(plain)  # one item per message: a message or a problem
    kept = [m for m in plain if len(m.data) <= limit]
    assert [m.data for m in messages(got)] == [m.data for m in kept]


def test_binary_junk_is_read_as_one_message(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(
        os.urandom(300_000) + b"\n\nFrom a@b Mon Jan  3 10:00:00 2005\n" + os.urandom(1000)
    )
    assert list(SourceReader([junk])) == [RawMessage(junk.read_bytes(), str(junk))]


def test_zip_archive_is_reported(tmp_path: Path) -> None:
    archive = Path(shutil.make_archive(str(tmp_path / "spam"), "zip", shared(*SA, "spam")))
    got = list(SourceReader([archive]))
    assert [(p.source, p.reason) for p in got] == [(str(archive), "unsupported-archive")]


def test_skips_non_mail_and_hidden_files_and_counts_them(tmp_path: Path) -> None:
    msg = sorted(shared(*SA, "spam").iterdir())[0].read_bytes()
    for name in (
        "README",
        "LICENSE.txt",
        "SOURCE.txt",
        "notes.md",
        "package.json",
        "COMMIT",
        ".hidden",
    ):
        (tmp_path / name).write_bytes(b"not mail\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_bytes(b"ref: x\n")
    (tmp_path / "a.eml").write_bytes(msg)
    (tmp_path / "b.txt").write_bytes(msg)  # mail saved as .txt is still mail
    reader = SourceReader([tmp_path])
    got = list(reader)
    assert [Path(m.source).name for m in got] == ["a.eml", "b.txt"]
    assert len(reader.skipped) == 8
    # a path named explicitly is always read
    assert messages(list(SourceReader([tmp_path / "README"]))) == [
        RawMessage(b"not mail\n", str(tmp_path / "README"))
    ]


def _drop_dac_capabilities() -> None:
    """In the child: root without CAP_DAC_OVERRIDE/READ_SEARCH obeys file modes like anyone."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # linux/capability.h: CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP; exec then loses the cap
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _read_as_unprivileged(path: Path) -> list[tuple[str, str]]:
    """(source, reason) for what ``path`` yields to a reader that file modes apply to."""
    if os.geteuid() != 0:
        return [(i.source, getattr(i, "reason", "message")) for i in SourceReader([path])]
    script = (
        "import sys\n"
        "from trapline.ingest.sources import SourceReader\n"
        "for i in SourceReader([sys.argv[1]]): print(i.source, getattr(i, 'reason', 'message'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        preexec_fn=_drop_dac_capabilities,
        check=True,
    )
    return [(a, b) for a, b in (line.rsplit(" ", 1) for line in done.stdout.splitlines())]


def test_unreadable_file_and_directory_are_problems(tmp_path: Path) -> None:
    secret = tmp_path / "secret.eml"
    secret.write_bytes(b"Subject: x\n\nbody\n")
    secret.chmod(0)
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "a.eml").write_bytes(b"Subject: y\n\nbody\n")
    locked.chmod(0)
    try:
        got = _read_as_unprivileged(tmp_path)
    except (subprocess.SubprocessError, OSError) as exc:  # pragma: no cover - environment
        pytest.skip(f"cannot drop privileges here: {exc}")
    finally:
        locked.chmod(0o755)
    assert got == [(str(locked), "unreadable"), (str(secret), "unreadable")]


def test_memory_stays_flat_on_a_large_mbox(tmp_path: Path) -> None:
    data = shared(*NAZARIO, "phishing1.mbox").read_bytes()
    big = tmp_path / "big.mbox"
    with big.open("wb") as out:
        for _ in range(64):  # ~270 MB
            out.write(data + b"\n")
    size = big.stat().st_size
    del data
    tracemalloc.start()
    try:
        count = 0
        for item in SourceReader([big]):
            assert isinstance(item, RawMessage)
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        big.unlink()  # pytest keeps old tmp dirs; do not leave 270 MB behind
    assert count == 64 * 456
    assert size > 250 << 20
    # One message (the largest is ~0.6 MB) plus a 1 MiB read chunk, not the 270 MB file.
    assert peak < 16 << 20, f"peak {peak / 2**20:.1f} MiB"


# --- the splitter on its own ------------------------------------------------------------------


def test_postmark_pattern() -> None:
    assert is_postmark(b"From aw-confirm@ebay.com  Sat Nov 27 15:33:27 2004")
    assert is_postmark(b"From MAILER-DAEMON Fri Jul  8 12:08:34 2011\r")
    assert is_postmark(b"From - Sat Nov 01 12:00:00 2008")
    assert is_postmark(b"From  Sun Dec  5 01:02:03 2004")
    assert is_postmark(b"From user@example.com Thu Aug 22 12:36:23 +0100 2002")
    assert not is_postmark(b"From home recordings to downloaded mp3s, this DirectX plug-in")
    assert not is_postmark(b"From: someone@example.com")
    assert not is_postmark(b"From $1")


def test_unquote_mboxrd() -> None:
    assert unquote_mboxrd(b"a\n>From x\n>>From y\n>Fromage\n") == b"a\nFrom x\n>From y\n>Fromage\n"


def test_split_chunk_boundaries_do_not_matter() -> None:
    data = shared(*NAZARIO, "phishing0.mbox").read_bytes()[:400_000]
    whole = list(split_mbox([data], "m", mode="mbox"))
    assert len(whole) > 20
    for size in (7, 4096, 65_537):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        assert list(split_mbox(chunks, "m", mode="mbox")) == whole
    small = data[:30_000]  # byte by byte: every boundary position at least once
    assert list(split_mbox([small[i : i + 1] for i in range(len(small))], "m", mode="mbox")) == (
        list(split_mbox([small], "m", mode="mbox"))
    )


# --- small real fixtures (run without the shared data folder) ---------------------------------


def test_fixture_tree_counts_and_round_trip() -> None:
    reader = SourceReader([FIXTURES])
    got = list(reader)
    assert problems(got) == []
    assert [Path(p).name for p in reader.skipped] == ["SOURCE.md"]
    expected = 0
    for path in sorted(FIXTURES.iterdir()):
        if path.name == "SOURCE.md":
            continue
        data = path.read_bytes()
        mine = [m for m in messages(got) if m.source.split("#")[0] == str(path)]
        if path.suffix == ".mbox":
            assert len(mine) == from_line_count(data)
            rebuilt = b"\n".join(
                mark + m.data.replace(b"\nFrom ", b"\n>From ")
                for mark, m in zip(postmarks(data), mine, strict=True)
            )
            assert rebuilt in (data, data[:-1])
        else:
            assert [m.data for m in mine] == [data]  # whole file, postmark line included
        expected += len(mine)
    assert len(messages(got)) == expected == 7 + 1 + 3 + 1 + 1


def test_fixture_quoted_from_line() -> None:
    path = FIXTURES / "phishing1-quoted-from.mbox"
    [quoted] = messages(list(SourceReader([path], unquote=False)))
    [plain] = messages(list(SourceReader([path])))
    assert quoted.data.count(b"\n>From ") == 1
    assert plain.data == quoted.data.replace(b"\n>From ", b"\nFrom ")


def test_fixture_crlf_single_message_read_whole() -> None:
    path = FIXTURES / "crlf-endings"
    data = path.read_bytes()
    assert b"\r\n" in data
    assert list(SourceReader([path])) == [RawMessage(data, str(path))]


# --- properties (synthetic bytes, in addition to the real data above) -------------------------

_bodies = st.lists(
    st.binary(min_size=0, max_size=300).map(lambda b: b + b"\n"), min_size=1, max_size=8
)


def _mboxrd(bodies: list[bytes], eol: bytes = b"\n") -> bytes:
    """What an mboxrd writer produces: quote ^>*From, postmark, body, blank line."""
    out = []
    for n, body in enumerate(bodies):
        quoted = re.sub(rb"^(>*From )", rb">\1", body, flags=re.MULTILINE)
        out.append(b"From sender%d@example.org Mon Jan  3 10:00:%02d 2005" % (n, n % 60) + eol)
        out.append(quoted + eol)
    return b"".join(out)


@settings(max_examples=200, deadline=None)
@given(bodies=_bodies, size=st.integers(min_value=1, max_value=64), crlf=st.booleans())
def test_property_mboxrd_round_trip(bodies: list[bytes], size: int, crlf: bool) -> None:
    if crlf:  # a CRLF writer: every body line (and so the body) ends in CRLF
        bodies = [b[:-1] + b"\r\n" for b in bodies]
    data = _mboxrd(bodies, b"\r\n" if crlf else b"\n")
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    for mode in ("auto", "mbox"):
        got = list(split_mbox(chunks, "m", mode=mode))  # type: ignore[arg-type]
        if mode == "auto" and len(bodies) == 1:
            assert got == [RawMessage(data, "m")]  # one postmark only: a single message file
        else:
            assert got == [RawMessage(b, f"m#{i}") for i, b in enumerate(bodies)]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2000), size=st.integers(min_value=1, max_value=300))
def test_property_splitter_never_raises_and_loses_nothing(data: bytes, size: int) -> None:
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    for mode in ("auto", "mbox"):
        got = list(split_mbox(chunks, "m", mode=mode))  # type: ignore[arg-type]
        assert all(isinstance(i, RawMessage | SourceProblem) for i in got)
        if not data:
            assert [(p.source, p.reason) for p in problems(got)] == [("m", "empty-file")]
        elif mode == "auto" and not data.startswith(b"From "):
            assert got == [RawMessage(data, "m")]
    # Without unquoting, every message is a slice of the input, in order, never overlapping.
    pos = 0
    for m in messages(list(split_mbox(chunks, "m", mode="mbox", unquote=False))):
        found = data.find(m.data, pos)
        assert found >= 0
        pos = found + len(m.data)


def test_named_pipe_is_streamed_not_slurped(tmp_path: Path) -> None:
    """`trapline ingest <(zcat x.mbox.gz)` hands us a pipe: stream it, size unknown."""
    data = (FIXTURES / "phishing0-part.mbox").read_bytes()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"cat > '{fifo}'"], stdin=subprocess.PIPE)
    assert writer.stdin is not None
    writer.stdin.write(data)
    writer.stdin.close()
    reader = SourceReader([fifo])
    assert reader.bytes_total is None
    got = messages(list(reader))
    writer.wait(timeout=30)
    assert len(got) == from_line_count(data) == 7
    assert reader.bytes_read == len(data)


def test_personal_eml_set_byte_identical_and_duplicates_counted() -> None:
    root = shared("mail", "personal-spam-2023-2025")
    emls = sorted(root.rglob("*.eml"))
    reader = SourceReader([root])
    got = list(reader)
    assert problems(got) == []
    assert sorted(m.source for m in messages(got)) == sorted(str(p) for p in emls)
    assert len(emls) == 206
    for m in messages(got):
        assert m.data == Path(m.source).read_bytes()
    # true duplicates (same bytes in two files) share an id, as content addressing intends
    assert len({m.id for m in messages(got)}) == len({p.read_bytes() for p in emls})
    assert sorted(Path(p).name for p in reader.skipped) == [
        "COMMIT",
        "LICENSE.txt",
        "README.md",
        "SOURCE.txt",
    ]


def test_reading_twice_gives_the_same_items_and_progress() -> None:
    reader = SourceReader([FIXTURES])
    first = list(reader)
    assert reader.bytes_read == reader.bytes_total
    assert list(reader) == first
    assert reader.bytes_read == reader.bytes_total


def test_read_error_midway_is_a_problem() -> None:
    """/proc/self/mem opens fine and fails with EIO on read: a real I/O error, no crash."""
    mem = Path("/proc/self/mem")
    if not mem.exists():
        pytest.skip("no /proc on this system")
    got = list(SourceReader([mem]))
    assert [(p.source, p.reason) for p in got] == [(str(mem), "read-error")]


@functools.cache
def _bomb(ext: str) -> bytes:
    """96 MiB of message-like junk (one postmark, then no separators) in well under 1 MiB."""
    block = b"A" * 1000 + b"\n"
    data = b"From x@y Mon Jan  3 10:00:00 2005\n" + block * (96 * 1024 * 1024 // len(block))
    return lzma.compress(data, preset=0) if ext == "xz" else COMPRESSORS[ext](data)


@pytest.mark.parametrize("ext", sorted(COMPRESSORS))
@pytest.mark.parametrize("name", ["bomb.eml", "bomb.mbox", "maildir"])
def test_decompression_bomb_is_bounded(tmp_path: Path, ext: str, name: str) -> None:
    """A small file that decompresses to 96 MiB: a too-large problem, in bounded memory."""
    if name == "maildir":
        for part in ("cur", "new", "tmp"):
            (tmp_path / "Maildir" / part).mkdir(parents=True)
        path = tmp_path / "Maildir" / "new" / "1.host"
    else:
        path = tmp_path / f"{name}.{ext}"
    path.write_bytes(_bomb(ext))
    assert path.stat().st_size < 1 << 20
    limit = 2 << 20
    tracemalloc.start()
    try:
        got = list(SourceReader([tmp_path], max_message_bytes=limit))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [(Path(p.source.split("#")[0]), p.reason) for p in got] == [(path, "too-large")]
    # Our buffers stay within a few times the limit; the xz decoder itself allocates its
    # dictionary (8 MiB at the default preset) through the traced allocator.
    decoder = 16 << 20 if ext == "xz" else 0
    assert peak < 5 * limit + decoder, f"peak {peak / 2**20:.1f} MiB"


def test_zstd_truncation_detected_at_every_cut(tmp_path: Path) -> None:
    """Cut a 2-frame zstd file (plus a skippable frame) at every byte: a clean end only on a
    frame boundary, a truncated-archive problem everywhere else."""
    message = (FIXTURES / "crlf-endings").read_bytes()
    frames = [
        zstandard.ZstdCompressor(write_checksum=True).compress(message[:300]),
        b"\x50\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"skip!",  # RFC 8878 §3.1.2
        zstandard.ZstdCompressor(write_content_size=False).compress(message[300:]),
    ]
    data = b"".join(frames)
    boundaries = {len(frames[0]), len(frames[0]) + len(frames[1]), len(data)}
    path = tmp_path / "cut.eml.zst"
    for cut in range(4, len(data) + 1):
        path.write_bytes(data[:cut])
        reasons = [p.reason for p in problems(list(SourceReader([path])))]
        if cut in boundaries:
            assert "truncated-archive" not in reasons, cut
        else:
            assert reasons == ["truncated-archive"], cut
    assert list(SourceReader([path])) == [RawMessage(message, str(path))]


def test_undecodable_file_name_gives_a_utf8_source(tmp_path: Path) -> None:
    """POSIX names are bytes; a Latin-1 name must not put lone surrogates into the store."""
    message = (FIXTURES / "crlf-endings").read_bytes()
    raw_dir = os.fsencode(tmp_path)
    with open(os.path.join(raw_dir, b"caf\xe9.eml"), "wb") as out:
        out.write(message)
    with open(os.path.join(raw_dir, b"caf\xe9.md"), "wb") as out:
        out.write(b"notes\n")
    reader = SourceReader([tmp_path])
    got = list(reader)
    assert got == [RawMessage(message, f"{tmp_path}/caf\\xe9.eml")]
    assert reader.skipped == [f"{tmp_path}/caf\\xe9.md"]
    for text in [got[0].source, *reader.skipped]:
        text.encode("utf-8")  # raises on lone surrogates


def test_stdin_that_is_a_terminal_is_refused() -> None:
    """`trapline ingest -` typed without a pipe would hang; say what to do instead."""
    leader, follower = pty.openpty()
    try:
        with (
            os.fdopen(follower, "rb", closefd=False) as tty,
            pytest.raises(SourceError, match="terminal"),
        ):
            SourceReader(["-"], stdin=tty)
    finally:
        os.close(leader)
        os.close(follower)


def test_magic_numbers_are_not_fooled_by_plain_text() -> None:
    assert sniff(b"BZh-Header: looks like bzip2\n") is None
    assert sniff(bz2.compress(b"x")[:16]) == "bzip2"
    assert sniff(bz2.compress(b"")[:16]) == "bzip2"
    assert sniff(gzip.compress(b"x")[:16]) == "gzip"
    assert sniff(b"\x1f\x8bnot deflate") is None
