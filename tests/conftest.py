"""Shared test helpers: where the real corpora are, and small factories over them."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS_DATA = ROOT / "tests" / "data"
# ../shared/data next to the repository (read-only, in CI too); TRAPLINE_SHARED_DATA overrides.
SHARED_DATA = Path(os.environ.get("TRAPLINE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def testdata(*parts: str) -> bytes:
    """Bytes of a fixture under tests/data/."""
    return TESTS_DATA.joinpath(*parts).read_bytes()


testdata.__test__ = False  # type: ignore[attr-defined]  # not a test, despite its name


def shared(*parts: str) -> Path:
    """Path of a file in the shared real-data folder; skips the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


def wait_for(
    condition: Callable[[], object], what: str, timeout: float = 120.0, every: float = 0.01
) -> None:
    """Poll ``condition`` (every ``every`` s) until it holds; fail naming ``what`` after
    ``timeout`` s. Tests wait for the state they need, never for a fixed time: a busy machine
    only makes them slower, never wrong."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(every)


@pytest.fixture(scope="session")
def web_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """A store of real spam, routed, clustered and with DROP history, for the web tests
    (built once per session; tests that write use their own keys only)."""
    from web_helpers import build_store

    folder = tmp_path_factory.mktemp("web") / "data"
    return folder, build_store(folder)
