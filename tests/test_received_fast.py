"""The Received fast path gives exactly the general parser's hop, on real and mutated headers.

Real headers: every ``Received:`` line of the messages in the hand-checked origin table
(``tests/data/origin/origins.csv``, read from the shared corpora) and of the ``.eml`` fixtures.
Mutations insert the tokens that could make the two paths disagree (clause keywords as names,
HELO comments, ``unknown``, bad addresses, nesting) into those lines.
"""

from __future__ import annotations

import csv
import email
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import TESTS_DATA, shared
from trapline.ingest import received
from trapline.model import Hop

_TRICKY = [
    "by", "BY", "for", "id", "via", "with", "by[1.2.3.4]", "unknown", "unknown.", "unknown..",
    "helo", "HELO", "[1.2.3.4]", "1.2.3.4", "999.1.1.1", "(x)", "(helo=x)", "(HELO x)",
    "Microsoft", "a.b.", "<a@b>", ";", "\x01", "é", "[]", "(", ")", "x(y)", "(may be forged)",
    "(unknown [1.2.3.4])", "(1.2.3.4)", "(x [::1])", "(x [1.2.3.999])", "([001.2.3.4])",
    "(x. [1.2.3.4])", "(x@y [1.2.3.4])", "(1.2.3.4@y [5.6.7.8])", "([1.2.3.4] helo=x)",
    "(HELO x) (1.2.3.4)", "(a (b) c)", "(x (y (z)))", "10.0.0.1.", "[IPv6:::1]",
]  # fmt: skip


@cache
def _values() -> list[str]:
    paths = list((TESTS_DATA / "eml").rglob("*.eml"))
    with (TESTS_DATA / "origin" / "origins.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    # rows naming one message of an mbox ("file#n") are left to test_received
    paths += [
        shared("mail", *r["corpus_path"].split("/")) for r in rows if "#" not in r["corpus_path"]
    ]
    values: list[str] = []
    for path in paths:
        msg = email.message_from_bytes(Path(path).read_bytes())
        values.extend(str(v) for v in msg.get_all("Received") or [])
    return values


@pytest.fixture(scope="module")
def values() -> list[str]:
    return _values()


def _both(value: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Hop, Hop]:
    fast = received.parse_received(value, 3)
    with monkeypatch.context() as m:
        general_only: Callable[..., None] = lambda *_: None  # noqa: E731
        m.setattr(received, "_fast_hop", general_only)
        general = received.parse_received(value, 3)
    return fast, general


def test_fast_path_agrees_on_real_headers(
    values: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(values) > 300
    for value in values:
        fast, general = _both(value, monkeypatch)
        assert fast == general, value


def test_fast_path_takes_most_real_headers(values: list[str]) -> None:
    # The point of the fast path: if a change makes it miss the common shapes, say so.
    taken = 0
    for value in values:
        text = " ".join(value.split())
        semi = text.rfind(";")
        head = text[:semi] if semi >= 0 else text
        taken += received._fast_hop(head, value, 0, None) is not None
    assert taken > 0.7 * len(values)


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_fast_path_agrees_on_mutated_headers(data: st.DataObject) -> None:
    real = [" ".join(v.split()) for v in _values() if v.lstrip().startswith(("from", "by", "("))]
    value = data.draw(st.sampled_from(real))
    parts = value.split(" ")
    for _ in range(data.draw(st.integers(1, 3))):
        k = data.draw(st.integers(0, len(parts) - 1))
        token = data.draw(st.sampled_from(_TRICKY))
        how = data.draw(st.sampled_from(["replace", "insert", "append"]))
        if how == "replace":
            parts[k] = token
        elif how == "insert":
            parts.insert(k, token)
        else:
            parts[k] += token
    mutated = " ".join(parts)
    with pytest.MonkeyPatch.context() as mp:
        fast, general = _both(mutated, mp)
    assert fast == general, mutated
