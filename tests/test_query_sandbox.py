"""``trapline query`` is a read-only sandbox: one escape per test, each through the real CLI.

Every test runs ``trapline query`` in a subprocess over a real store (ingested SpamAssassin
sample mail) next to a real ``site.secret`` and a second DuckDB store, and checks both that the
command is refused and that nothing outside changed.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from importlib import resources
from pathlib import Path

import duckdb
import pytest

from test_pipeline import CLI, _cli_env

SAMPLE = Path(str(resources.files("trapline").joinpath("data", "sample", "mail", "spam")))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("sandbox")
    env = _cli_env({"TRAPLINE_POST_INGEST_STAGES": ""})
    done = subprocess.run(
        [*CLI, "--data-dir", str(data_dir), "-q", "ingest", str(SAMPLE)], env=env, check=False
    )
    assert done.returncode == 0
    (data_dir / "site.secret").write_bytes(b"k" * 32)
    other = duckdb.connect(str(data_dir / "other.duckdb"))
    other.execute("CREATE TABLE victims AS SELECT range AS id FROM range(5)")
    other.close()
    return data_dir


def _query(store: Path, sql: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--data-dir", str(store), "query", sql, *extra],
        env=_cli_env({}),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def test_select_still_works(store: Path) -> None:
    result = _query(store, "SELECT count(*) AS n FROM messages", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"n": 50}]


def test_attach_and_delete_from_another_store(store: Path) -> None:
    _refused(_query(store, f"ATTACH '{store / 'other.duckdb'}' AS o"), "ATTACH")
    _refused(
        _query(store, f"ATTACH '{store / 'other.duckdb'}' AS o; DELETE FROM o.victims"),
        "statements",
    )
    con = duckdb.connect(str(store / "other.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM victims").fetchone() == (5,)
    finally:
        con.close()


def test_copy_over_the_site_secret(store: Path) -> None:
    before = _digest(store / "site.secret")
    _refused(_query(store, f"COPY (SELECT 'x') TO '{store / 'site.secret'}'"), "COPY")
    assert _digest(store / "site.secret") == before


def test_copy_hidden_in_a_select_is_impossible(store: Path) -> None:
    """The file functions behind a SELECT: blocked by the locked external-access setting."""
    for sql in (
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM read_text('/etc/hostname')",
        f"SELECT * FROM read_blob('{store / 'site.secret'}')",
    ):
        result = _query(store, sql)
        _refused(result, "disabled")
        assert "root:" not in result.stdout and "kkkk" not in result.stdout


def test_install_and_load_extensions(store: Path) -> None:
    _refused(_query(store, "INSTALL httpfs"), "not allowed")
    _refused(_query(store, "LOAD httpfs"), "not allowed")
    # Autoloading through a function of an unloaded extension is off too.
    _refused(_query(store, "SELECT * FROM read_parquet('https://example.org/x.parquet')"))


def test_several_statements_in_one_call(store: Path) -> None:
    _refused(_query(store, "SELECT 1; SELECT 2"), "2 statements")


def test_export_pragma_set_and_checkpoint(store: Path) -> None:
    _refused(_query(store, f"EXPORT DATABASE '{store / 'dump'}'"), "EXPORT")
    assert not (store / "dump").exists()
    _refused(_query(store, "PRAGMA enable_profiling"), "PRAGMA")
    _refused(_query(store, "SET enable_external_access = true"), "SET")
    _refused(_query(store, "CHECKPOINT"))
    _refused(_query(store, "CREATE TEMP TABLE t AS SELECT 1"), "CREATE")


def test_settings_are_locked_for_the_statement(store: Path) -> None:
    result = _query(
        store,
        "SELECT current_setting('enable_external_access') AS ext, "
        "current_setting('lock_configuration') AS locked",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"ext": False, "locked": True}]
