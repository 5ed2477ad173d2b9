"""Taking turns on the store: readers together, one writer alone, fairly, across processes and
threads; a waiting command says who holds the store and gives up after ``--wait``."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import wait_for
from trap_helpers import serve_env, spam_bodies
from trapline.errors import StoreBusy, StoreLocked
from trapline.store import access
from trapline.store.access import reading, writing
from trapline.store.duckdb import open_store
from trapline.store.turns import Turn


def _cli(data: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trapline", *args],
        env=serve_env(data), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _mail_folder(path: Path, bodies: list[bytes]) -> Path:
    path.mkdir(parents=True)
    for i, body in enumerate(bodies):
        (path / f"{i:03d}.eml").write_bytes(body)
    return path


def test_readers_share_and_a_writer_waits_for_them(tmp_path: Path) -> None:
    with open_store(tmp_path):
        pass
    order: list[str] = []
    reader = threading.Event()
    release = threading.Event()

    def read() -> None:
        with reading(tmp_path) as store:
            store.con.execute("SELECT count(*) FROM messages").fetchall()
            order.append("read")
            reader.set()
            release.wait(10)
        order.append("read done")

    def write() -> None:
        with writing(tmp_path):
            order.append("write")

    t1 = threading.Thread(target=read)
    t1.start()
    reader.wait(10)
    with reading(tmp_path):  # a second reader in another thread gets in at once
        order.append("second read")
    t2 = threading.Thread(target=write)
    t2.start()
    wait_for(Turn(tmp_path, exclusive=False).someone_waiting, "the writer at the gate")
    release.set()
    t1.join(10)
    t2.join(10)
    assert order == ["read", "second read", "read done", "write"]


def test_a_waiting_writer_keeps_new_readers_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fairness: a stream of readers cannot starve a writer. Once a writer has given readers
    their head start (``READERS_FIRST_S``, here none), a reader arriving after it gets its turn
    only after the writer."""
    monkeypatch.setattr("trapline.store.turns.READERS_FIRST_S", 0.0)
    with open_store(tmp_path):
        pass
    order: list[str] = []
    first_in, let_go = threading.Event(), threading.Event()

    def first_reader() -> None:
        with reading(tmp_path):
            first_in.set()
            let_go.wait(10)

    def writer() -> None:
        with writing(tmp_path):
            order.append("writer")

    def late_reader() -> None:
        with reading(tmp_path):
            order.append("late reader")

    threads = [threading.Thread(target=first_reader)]
    threads[0].start()
    first_in.wait(10)
    threads.append(threading.Thread(target=writer))
    threads[1].start()
    wait_for(Turn(tmp_path, exclusive=False).someone_waiting, "the writer at the gate")
    threads.append(threading.Thread(target=late_reader))
    threads[2].start()
    time.sleep(0.3)  # the late reader had every chance to slip past the writer; it must not
    assert order == []
    let_go.set()
    for t in threads:
        t.join(10)
    assert order == ["writer", "late reader"]


def test_a_waiting_reader_goes_before_the_writers_queued_for_their_next_window(
    tmp_path: Path,
) -> None:
    """Readers first (for ``READERS_FIRST_S``): a reader waits for the window in progress, not
    also for a writer already queued at the gate (the drain's next round) nor for the ingest
    that yields and comes straight back for more."""
    from trapline.store.turns import GATE_FILE, READERS_FILE, lock_taken

    order: list[str] = []
    ingest = Turn(tmp_path, exclusive=True, reentrant=False)
    ingest.acquire()
    drain_in, drain_go = threading.Event(), threading.Event()

    def drain() -> None:  # a second writer, already queued at the gate
        turn = Turn(tmp_path, exclusive=True, reentrant=False)
        turn.acquire()
        order.append("drain")
        drain_in.set()
        drain_go.wait(10)
        turn.release()

    def read() -> None:
        turn = Turn(tmp_path, exclusive=False, reentrant=False)
        turn.acquire()
        order.append("reader")
        turn.release()

    threads = [threading.Thread(target=drain)]
    threads[0].start()
    wait_for(lambda: lock_taken(tmp_path / GATE_FILE, exclusive=True), "the drain at the gate")
    threads.append(threading.Thread(target=read))
    threads[1].start()
    wait_for(lambda: lock_taken(tmp_path / READERS_FILE, exclusive=True), "the reader on its way")
    ingest.release()  # the ingest lets them in and at once queues for its next window
    drain_in.wait(10)
    comes_back = threading.Thread(target=lambda: (ingest.acquire(), order.append("ingest")))
    comes_back.start()
    time.sleep(0.05)  # the ingest is on its way while the drain writes
    drain_go.set()
    for t in [*threads, comes_back]:
        t.join(10)
    ingest.release()
    assert order == ["reader", "drain", "ingest"]


def test_a_thread_may_open_the_store_again_while_it_has_it(tmp_path: Path) -> None:
    with open_store(tmp_path) as outer:
        with open_store(tmp_path) as inner:  # shares the turn instead of waiting for itself
            inner.con.execute("SELECT 1").fetchall()
        outer.con.execute("SELECT 1").fetchall()
    with open_store(tmp_path, read_only=True), pytest.raises(StoreLocked):
        open_store(tmp_path)  # a read-only turn cannot become a write turn in place


def test_busy_after_the_wait_limit_names_the_holder(tmp_path: Path) -> None:
    access.set_policy(who="trapline analyze")
    try:
        with (
            open_store(tmp_path),
            pytest.raises(StoreBusy, match=r"held by `trapline analyze`, pid \d+"),
        ):
            # another thread, so it does not share this thread's turn
            box: list[BaseException] = []
            t = threading.Thread(target=lambda: _try_read(tmp_path, box))
            t.start()
            t.join(10)
            raise box[0]
    finally:
        access.set_policy(who="trapline")


def _try_read(data: Path, box: list[BaseException]) -> None:
    try:
        with reading(data, wait_s=0.3):
            pass
    except BaseException as exc:  # handed to the test thread
        box.append(exc)


def test_a_second_writer_command_waits_with_a_message_then_runs(tmp_path: Path) -> None:
    bodies = spam_bodies(6)
    folder = _mail_folder(tmp_path / "mail", bodies)
    data = tmp_path / "data"
    with open_store(data):  # this process writes: the command must wait for it
        busy = _cli(data, "--wait", "1", "ingest", str(folder))
    assert busy.returncode == 1
    assert "waiting for the store (held by `trapline`, pid" in busy.stderr
    assert "did not come free within 1s" in busy.stderr and "Traceback" not in busy.stderr

    holder = open_store(data)
    waiter = subprocess.Popen(
        [sys.executable, "-m", "trapline", "--wait", "60", "ingest", str(folder)],
        env=serve_env(data), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert waiter.stderr is not None
        said = ""
        while "waiting for the store" not in said:  # it says so while it waits ...
            line = waiter.stderr.readline()
            assert line, "the ingest ended without waiting"
            said += line
        holder.close()  # ... and gets the turn once this process lets go
        out, err = waiter.communicate(timeout=120)
        err = said + err
    finally:
        holder.close()
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert waiter.returncode == 0, err
    assert "waiting for the store" in err and "6 new" in out + err
    with reading(data) as store:
        assert store.con.execute("SELECT count(*) FROM messages").fetchone() == (6,)


def test_two_concurrent_ingests_of_overlapping_folders_store_the_union_once(
    tmp_path: Path,
) -> None:
    bodies = spam_bodies(300)
    first = _mail_folder(tmp_path / "a", bodies[:200])
    second = _mail_folder(tmp_path / "b", bodies[100:])
    data = tmp_path / "data"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "trapline", "ingest", "--batch-size", "25", str(folder)],
            env=serve_env(data),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for folder in (first, second)
    ]
    try:
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], results
    with reading(data) as store:
        con = store.con
        assert con.execute("SELECT count(*) FROM raw").fetchone() == (300,)
        assert con.execute("SELECT count(*) FROM messages").fetchone() == (300,)
        assert con.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)
