"""The parts of the Spark scale-out that need no JVM: packaging, planning, messages."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def _closure(requirements: list[str]) -> set[str]:
    """Distribution names a pip install of ``requirements`` brings in (installed metadata)."""
    seen: set[str] = set()
    todo = [(Requirement(r), frozenset(Requirement(r).extras)) for r in requirements]
    while todo:
        req, extras = todo.pop()
        name = req.name.lower().replace("_", "-")
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            declared = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in declared:
            sub = Requirement(text)
            if sub.marker is None or any(
                sub.marker.evaluate({"extra": e}) for e in (extras or {""})
            ):
                todo.append((sub, frozenset(sub.extras)))
    return {k.split("[", 1)[0] for k in seen}


@pytest.mark.parametrize("extra", ["spark", "test"])
def test_the_spark_extra_installs_what_spark_analyze_needs(extra: str) -> None:
    """``pip install 'trapline[spark]'`` alone runs ``spark analyze``: its Arrow tables become
    Spark DataFrames through pandas (``dialect.frame``), which no core dependency pulls in."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = _closure(project["dependencies"] + project["optional-dependencies"][extra])
    assert {"pyspark", "pandas", "pyarrow", "py4j"} <= names, sorted(names)
