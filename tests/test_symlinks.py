"""Symlinks and special files while walking sources: nothing read from outside the tree given
(unless asked), and every link or special file that is not read is a counted source problem.

Real SpamAssassin messages in a real Maildir on disk, real symlinks, a real fifo.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import shared
from test_pipeline import CLI, _cli_env
from trapline.ingest.sources import SourceReader
from trapline.model import RawMessage, SourceProblem

SECRET = b"root:$6$not-a-real-hash:19000:0:99999:7:::\n"


def _problems(items: list[RawMessage | SourceProblem]) -> dict[str, str]:
    return {Path(p.source).name: p.reason for p in items if isinstance(p, SourceProblem)}


def _messages(items: list[RawMessage | SourceProblem]) -> list[RawMessage]:
    return [m for m in items if isinstance(m, RawMessage)]


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    """A Maildir of three real messages, one link out of the tree (to a 'shadow' file), one
    link inside it, a dangling link, a link loop and a fifo."""
    root = tmp_path / "Maildir"
    for part in ("cur", "new", "tmp"):
        (root / part).mkdir(parents=True)
    spam = sorted(shared("mail", "spamassassin-2002", "spam").iterdir())[:3]
    for i, p in enumerate(spam):
        shutil.copyfile(p, root / "cur" / f"{i}.host:2,S")
    outside = tmp_path / "etc"
    outside.mkdir()
    (outside / "shadow").write_bytes(SECRET)
    new = root / "new"
    (new / "1.shadow").symlink_to(outside / "shadow")
    (new / "2.inside").symlink_to(root / "cur" / "0.host:2,S")
    (new / "3.dangling").symlink_to(tmp_path / "gone")
    (new / "4.loop-a").symlink_to(new / "4.loop-b")
    (new / "4.loop-b").symlink_to(new / "4.loop-a")
    os.mkfifo(new / "5.fifo")
    return root


def test_links_out_of_the_tree_are_not_read(maildir: Path) -> None:
    got = list(SourceReader([maildir]))
    assert all(SECRET not in m.data for m in _messages(got))
    assert len(_messages(got)) == 4  # three files plus the link inside the tree
    assert _problems(got) == {
        "1.shadow": "symlink-outside",
        "3.dangling": "dangling-symlink",
        "4.loop-a": "symlink-loop",
        "4.loop-b": "symlink-loop",
        "5.fifo": "not-a-file",  # and the walk did not block on it
    }


def test_follow_symlinks_reads_them(maildir: Path) -> None:
    got = list(SourceReader([maildir], follow_symlinks=True))
    assert any(m.data == SECRET for m in _messages(got))
    assert "1.shadow" not in _problems(got)
    assert _problems(got)["4.loop-a"] == "symlink-loop"


def test_directory_link_loop_terminates(tmp_path: Path) -> None:
    tree = tmp_path / "mail" / "sub"
    tree.mkdir(parents=True)
    src = sorted(shared("mail", "spamassassin-2002", "spam").iterdir())[0]
    shutil.copyfile(src, tree / "one.eml")
    (tree / "up").symlink_to(tmp_path / "mail")  # a loop through a directory link
    (tree / "away").symlink_to(Path(src).parent)  # a whole corpus outside the tree
    plain = list(SourceReader([tmp_path / "mail"]))
    assert len(_messages(plain)) == 1
    assert _problems(plain) == {"away": "symlink-outside"}
    followed = list(SourceReader([tmp_path / "mail"], follow_symlinks=True))
    assert _problems(followed) == {"up": "symlink-loop"}
    assert len(_messages(followed)) == 1 + len(list(Path(src).parent.iterdir()))


def test_device_named_on_the_command_line_is_a_problem() -> None:
    got = list(SourceReader(["/dev/zero"]))  # would never end if read
    assert [(p.source, p.reason) for p in got if isinstance(p, SourceProblem)] == [
        ("/dev/zero", "not-a-file")
    ]


def test_cli_counts_them_and_show_raw_cannot_print_the_target(
    maildir: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "store"
    env = _cli_env({"TRAPLINE_POST_INGEST_STAGES": ""})
    base = [*CLI, "--data-dir", str(data_dir)]
    run = subprocess.run(
        [*base, "ingest", str(maildir)], env=env, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    assert "3 new" in run.stderr and "5 source problems" in run.stderr
    ids = subprocess.run(
        [*base, "query", "SELECT id FROM messages", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for row in json.loads(ids):
        raw = subprocess.run(
            [*base, "show", row["id"], "--raw"], env=env, capture_output=True, check=True
        )
        assert SECRET not in raw.stdout
    again = subprocess.run(
        [*base, "ingest", "--follow-symlinks", str(maildir)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "1 new" in again.stderr  # the link out of the tree, read because asked
