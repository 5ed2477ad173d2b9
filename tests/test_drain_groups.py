"""The drain's write window stores the group that was read and parsed before it, and nothing
else: mail that reaches the spool while the drain waits for its turn waits for the next round
(real spam, a real spool directory, a real store)."""

from __future__ import annotations

from pathlib import Path

from trap_helpers import spam_bodies
from trapline.config import load_settings
from trapline.pipeline.core import IngestCore
from trapline.pipeline.drain import drain, prepare_next
from trapline.store.access import writing
from trapline.traps.smtp.spool import Spool, SpoolRecord

TRAP = "traps.example.org"


def _spool_message(spool: Spool, k: int, body: bytes) -> Path:
    fields = {"peer_ip": "192.0.2.7", "rcpt_to": [f"x{k}@{TRAP}"], "session_id": f"s{k}"}
    path = spool.write_now([SpoolRecord("message", fields, body)])
    assert path is not None
    return path


def test_a_round_stores_exactly_the_group_it_prepared(tmp_path: Path) -> None:
    settings = load_settings({"data_dir": str(tmp_path / "data"), "trap_domains": [TRAP]})
    spool = Spool(tmp_path / "spool")
    bodies = spam_bodies(5)
    first = [_spool_message(spool, k, bodies[k]) for k in range(3)]
    core = IngestCore(settings, lambda _text: None)
    ready = prepare_next(spool, core, max_records=200)
    assert ready is not None and [path for path, _ in ready.segments] == first
    later = [_spool_message(spool, k, bodies[k]) for k in range(3, 5)]  # while it waits its turn

    with writing(tmp_path / "data") as store:
        got = drain(spool, store, settings, core=core, ready=ready)
        stored = store.con.execute("SELECT count(*) FROM raw").fetchone()
    assert (got.segments, got.messages, got.new_messages) == (3, 3, 3) and stored == (3,)
    assert spool.pending_segments() == later

    ready = prepare_next(spool, core, max_records=200)
    assert ready is not None
    with writing(tmp_path / "data") as store:
        got = drain(spool, store, settings, core=core, ready=ready)
        stored = store.con.execute("SELECT count(*) FROM messages").fetchone()
    assert got.messages == 2 and stored == (5,) and spool.pending_segments() == []
    assert prepare_next(spool, core, max_records=200) is None


def test_an_unreadable_segment_in_a_prepared_group_goes_to_bad_with_a_note(
    tmp_path: Path,
) -> None:
    settings = load_settings({"data_dir": str(tmp_path / "data"), "trap_domains": [TRAP]})
    spool = Spool(tmp_path / "spool")
    good = _spool_message(spool, 0, spam_bodies(1)[0])
    broken = spool.root / "new" / (good.name.replace(".seg", "") + "0.seg")
    broken.write_bytes(b"\x00not a segment\xff" * 10)
    notes: list[str] = []
    core = IngestCore(settings, notes.append)
    ready = prepare_next(spool, core, max_records=200)
    assert ready is not None and [p for p, _ in ready.unreadable] == [broken]

    with writing(tmp_path / "data") as store:
        got = drain(spool, store, settings, core=core, ready=ready, on_note=notes.append)
        stored = store.con.execute("SELECT count(*) FROM messages").fetchone()
    assert got.bad_segments == 1 and got.messages == 1 and stored == (1,)
    assert (spool.root / "bad" / broken.name).exists() and spool.pending_segments() == []
    assert any(broken.name in n and "unreadable" in n for n in notes)
