"""Deprecated APIs: none called from trapline's code, and the suite fails if one ever is."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import ROOT, shared
from trapline.cli.main import cli


def _from_module(name: str) -> Any:
    """A function whose warnings are attributed to module ``name`` (as if defined there)."""
    namespace: dict[str, Any] = {"__name__": name, "warnings": warnings}
    exec("def old():\n    warnings.warn('old API', DeprecationWarning)\n", namespace)
    return namespace["old"]


def test_a_deprecation_warning_from_trapline_code_is_an_error() -> None:
    with pytest.raises(DeprecationWarning):
        _from_module("trapline.cli.example")()
    # From elsewhere (a library's internals) it stays a warning.
    with pytest.warns(DeprecationWarning):
        _from_module("somelibrary.internal")()


def test_no_deprecated_click_stream_helpers() -> None:
    for path in (ROOT / "src" / "trapline").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "get_binary_stream" not in text and "get_text_stream" not in text, path


def test_binary_stdin_and_stdout_without_deprecated_helpers(tmp_path: Path) -> None:
    """`ingest -` reads bytes from stdin and `show --raw` writes them back unchanged."""
    message = sorted(shared("mail", "spamassassin-2002", "spam").iterdir())[0].read_bytes()
    env = {"TRAPLINE_POST_INGEST_STAGES": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        got = CliRunner().invoke(
            cli, ["--data-dir", str(tmp_path), "-q", "ingest", "-"], input=message, env=env
        )
        assert got.exit_code == 0, got.output
        import hashlib

        mid = hashlib.sha256(message).hexdigest()
        raw = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "show", mid[:12], "--raw"])
    assert raw.exit_code == 0 and raw.stdout_bytes == message
