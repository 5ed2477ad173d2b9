"""A truncated or corrupted store file: one clear error naming the file, what DuckDB saw and how
to recover (re-ingest, spool, reparse), never a traceback or "check the SQL". A real store of
the bundled SpamAssassin sample, damaged the three ways files get damaged."""

from __future__ import annotations

import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from test_pipeline import CLI, _cli_env

SAMPLE = Path(str(resources.files("trapline").joinpath("data", "sample", "mail", "spam")))


@pytest.fixture(scope="module")
def good_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("good")
    env = _cli_env({"TRAPLINE_POST_INGEST_STAGES": ""})
    done = subprocess.run(
        [*CLI, "--data-dir", str(data_dir), "-q", "ingest", str(SAMPLE)], env=env, check=False
    )
    assert done.returncode == 0
    return data_dir / "trapline.duckdb"


def _truncate(path: Path) -> None:
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size // 4)


def _scribble(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as fh:
        for offset in range(size // 3, 2 * size // 3, 7 * 4096):
            fh.seek(offset)
            fh.write(bytes(range(256)) * 2)


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


@pytest.mark.parametrize("damage", [_truncate, _scribble, _garbage], ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    "args",
    [("stats",), ("query", "SELECT count(*), max(subject), max(body_text) FROM messages")],
    ids=["stats", "query"],
)
def test_damaged_store_says_what_and_how_to_recover(
    good_store: Path, tmp_path: Path, damage: object, args: tuple[str, ...]
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copyfile(good_store, data_dir / "trapline.duckdb")
    damage(data_dir / "trapline.duckdb")  # type: ignore[operator]
    got = subprocess.run(
        [*CLI, "--data-dir", str(data_dir), *args],
        env=_cli_env({}),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert got.returncode == 1, got.stdout
    assert "Traceback" not in got.stderr and "check the SQL" not in got.stderr
    assert f"{data_dir / 'trapline.duckdb'} is damaged" in got.stderr
    assert "trapline reparse" in got.stderr and "trapline ingest" in got.stderr
