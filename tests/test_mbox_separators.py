"""mbox separators read the way mutt and Python's ``mailbox`` agree on, doubtful bounds flagged.

Real phishing mail from the Nazario corpus, re-written the ways real mbox writers write: Python's
own ``mailbox.mbox`` (mboxo quoting), mboxrd, mboxcl (Content-Length, quoted), and a writer that
leaves no blank line before a postmark (the file that once merged 7 messages into 2).
"""

from __future__ import annotations

import mailbox
from pathlib import Path

import pytest

from conftest import shared
from trapline.config import DEFAULTS
from trapline.ingest.mbox import SUSPECTED_MERGE, split_mbox
from trapline.ingest.sources import SourceReader
from trapline.model import RawMessage
from trapline.pipeline.run import ingest
from trapline.store.duckdb import open_store

POSTMARK = b"From phisher@example.net Mon Jan  3 10:00:00 2005\n"


@pytest.fixture(scope="module")
def seven() -> list[bytes]:
    """Seven real messages (bytes as delivered) from the Nazario phishing mbox."""
    path = shared("mail", "nazario-phishing-2005", "phishing0.mbox")
    got = [m for m in SourceReader([path]) if isinstance(m, RawMessage)]
    bodies = [m.data for m in got if b"\nFrom " not in m.data][:7]
    assert len(bodies) == 7
    # One line ending at the end: a trailing blank line at EOF is the file's, not the message's.
    return [b.rstrip(b"\n") + b"\n" for b in bodies]


def _ours(data: bytes, *, unquote: bool = False) -> list[RawMessage]:
    got = list(split_mbox([data], "m", mode="mbox", unquote=unquote))
    assert all(isinstance(m, RawMessage) for m in got), got
    return got  # type: ignore[return-value]


def _python(path: Path) -> list[bytes]:
    box = mailbox.mbox(path, create=False)
    try:
        return [box.get_bytes(key) for key in box.iterkeys()]
    finally:
        box.close()


def test_python_mailbox_written_mbox_reads_identically(tmp_path: Path, seven: list[bytes]) -> None:
    """mboxo as Python writes it (body "From " lines quoted): same split, same bytes."""
    path = tmp_path / "py.mbox"
    box = mailbox.mbox(path)
    for body in seven:
        box.add(body + b"\nFrom the desk of the manager: a body line mboxo quotes\n")
    box.close()
    expected = _python(path)
    got = _ours(path.read_bytes())
    assert [m.data for m in got] == expected
    assert len(got) == 7
    assert all(m.defects == () for m in got)


def test_postmark_without_blank_line_splits(tmp_path: Path, seven: list[bytes]) -> None:
    """No blank line before the postmarks: 7 messages, as mutt and Python's mailbox read it."""
    data = b"".join(POSTMARK + body for body in seven)  # no blank line anywhere between
    path = tmp_path / "tight.mbox"
    path.write_bytes(data)
    got = _ours(data)
    assert [m.data for m in got] == _python(path) == seven
    # Every bound is in doubt: each message sits next to a separator without its blank line.
    assert all(m.defects == (SUSPECTED_MERGE,) for m in got)


def test_only_the_neighbours_of_a_tight_separator_are_flagged(seven: list[bytes]) -> None:
    data = POSTMARK + seven[0] + b"\n"
    data += POSTMARK + seven[1] + POSTMARK + seven[2] + b"\n"  # 1 and 2 run together
    data += POSTMARK + seven[3]
    got = _ours(data)
    assert [m.data for m in got] == seven[:4]
    assert [bool(m.defects) for m in got] == [False, True, True, False]


def test_loose_from_line_kept_and_flagged(tmp_path: Path, seven: list[bytes]) -> None:
    """A "From " line that is no postmark (mutt: not a separator; Python: one) stays inside the
    message, which is flagged: it is what a merge of two messages looks like."""
    broken = b"From someone without a date\n" + seven[1]
    data = POSTMARK + seven[0] + b"\n" + broken + b"\n" + POSTMARK + seven[2]
    path = tmp_path / "loose.mbox"
    path.write_bytes(data)
    assert len(_python(path)) == 3  # Python's mailbox splits at it; mutt's is_from() does not
    got = _ours(data)
    assert [m.data for m in got] == [seven[0] + b"\n" + broken, seven[2]]
    assert [m.defects for m in got] == [(SUSPECTED_MERGE,), ()]


def test_mboxrd_round_trip(seven: list[bytes]) -> None:
    """mboxrd: ">From " and ">>From " body lines come back as delivered."""
    bodies = [b + b"\nFrom here\n>From there\n" for b in seven]
    quoted = [b.replace(b"\n>From ", b"\n>>From ").replace(b"\nFrom ", b"\n>From ") for b in bodies]
    data = b"\n".join(POSTMARK + q for q in quoted)
    got = _ours(data, unquote=True)
    assert [m.data for m in got] == bodies
    assert all(m.defects == () for m in got)


def test_mboxcl_reads_like_python(tmp_path: Path, seven: list[bytes]) -> None:
    """mboxcl: Content-Length headers (forgeable, so not trusted), body "From " lines quoted."""
    parts = []
    for body in seven:
        head, _, rest = body.partition(b"\n\n")
        rest += b">From the quoted line\n"
        parts.append(POSTMARK + head + f"\nContent-Length: {len(rest)}".encode() + b"\n\n" + rest)
    data = b"\n".join(parts)
    path = tmp_path / "cl.mbox"
    path.write_bytes(data)
    assert [m.data for m in _ours(data)] == _python(path)


def test_suspected_merge_is_a_stored_defect(tmp_path: Path, seven: list[bytes]) -> None:
    path = tmp_path / "tight.mbox"
    path.write_bytes(POSTMARK + seven[0] + b"\n" + POSTMARK + seven[1] + POSTMARK + seven[2])
    cfg = {**DEFAULTS, "data_dir": str(tmp_path / "store"), "post_ingest_stages": []}
    assert ingest([path], settings=cfg, workers=1).new == 3
    with open_store(tmp_path / "store", read_only=True) as store:
        rows = store.con.execute(
            "SELECT source, list_contains(defects, ?) FROM messages ORDER BY source",
            [SUSPECTED_MERGE],
        ).fetchall()
    assert rows == [(f"{path}#0", False), (f"{path}#1", True), (f"{path}#2", True)]
