"""Property tests: parse never raises and always returns a record keyed by the bytes' SHA-256.

Three input families: arbitrary bytes, mail-shaped bytes (so the MIME and header code is reached,
not just the "not mail" gate), and real messages mutated (flips, cuts, splices).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TESTS_DATA
from trapline.ingest.html import normalise_text
from trapline.ingest.parse import DEFAULT_LIMITS, parse, parse_many
from trapline.ingest.urls import extract_urls
from trapline.model import Message, Quarantined, RawMessage

NOW = datetime(2026, 1, 1, tzinfo=UTC)
REAL = [
    p.read_bytes() for p in sorted(TESTS_DATA.glob("eml/[hsm]*/*.eml")) if p.stat().st_size < 70_000
]
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, tuple | list):
        return [s for item in value for s in _strings(item)]
    if hasattr(value, "__slots__"):
        return [s for name in value.__slots__ for s in _strings(getattr(value, name))]
    return []


def _assert_storable(msg: Message) -> None:
    """Every string is valid UTF-8 without NULs: what Arrow and DuckDB text columns need."""
    for text in _strings(msg):
        text.encode("utf-8")  # raises on lone surrogates
        assert "\x00" not in text


def _check(data: bytes) -> Message | Quarantined:
    result = parse(RawMessage(data, "prop"), now=NOW)
    assert isinstance(result, Message | Quarantined)
    assert result.id == hashlib.sha256(data).hexdigest()
    assert result.size == len(data)
    if isinstance(result, Message):
        _assert_storable(result)
        assert len(result.headers) <= DEFAULT_LIMITS.max_headers
        assert len(result.urls) <= DEFAULT_LIMITS.max_urls
        assert "\x00" not in result.text
        for url in result.urls:
            assert url.url and (url.host is None or url.host == url.host.lower())
    else:
        assert result.reason in {"empty", "binary", "no-headers", "parser-error"}
        assert result.reason != "parser-error", result.detail  # both parsers failing is a bug
    return result


@PROPS
@given(st.binary(max_size=4096))
def test_arbitrary_bytes(data: bytes) -> None:
    _check(data)


_NAMES = st.sampled_from(
    [
        "From",
        "To",
        "Cc",
        "Subject",
        "Date",
        "Message-ID",
        "Received",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
        "MIME-Version",
        "X-Mailer",
        "from",
    ]
)
_VALUES = st.one_of(
    st.text(max_size=120),
    st.sampled_from(
        [
            'multipart/mixed; boundary="b"',
            "multipart/alternative",
            "text/html; charset=big5",
            "text/plain; charset=x-unknown",
            "base64",
            "quoted-printable",
            "message/rfc822",
            "=?utf-8?B?w6k=?=",
            "=?iso-8859-1?q?=E9?=",
            "=?bogus?x?zz?=",
            '"a" <a@b.c>, d@e',
            "Thu, 22 Aug 0102 12:07:35 +0800",
            "Mon, 16 Sep 2002 03:27:38 (GMT)",
            "<>",
            "from a ([1.2.3.4]) by b with SMTP; Thu, 22 Aug 2002 13:09:41 +0100",
            'attachment; filename="x.zip"',
        ]
    ),
)
_BODY_PARTS = st.sampled_from(
    [
        b"--b\n",
        b"--b--\n",
        b"\n",
        b"Content-Type: text/html\n\n",
        b"<a href='hxxp://x[.]y/z'>",
        b"http://example.com/a",
        b"=3D=\n",
        b"PGh0bWw+",
        b"\xff\xfe\x00",
        b"www.foo[dot]bar/",
        b"Content-Transfer-Encoding: base64\n\n",
        b"<script>",
        b"&amp;&#0;&#x110000;",
    ]
)


@st.composite
def mail_shaped(draw: st.DrawFn) -> bytes:
    headers = draw(st.lists(st.tuples(_NAMES, _VALUES), max_size=12))
    head = "".join(f"{name}: {value}\n" for name, value in headers).encode("utf-8", "replace")
    body = b"".join(draw(st.lists(st.one_of(_BODY_PARTS, st.binary(max_size=40)), max_size=20)))
    sep = draw(st.sampled_from([b"\n", b"\r\n", b""]))
    return b"Subject: s\n" + head + sep + body


@PROPS
@given(mail_shaped())
def test_mail_shaped_bytes(data: bytes) -> None:
    result = _check(data)
    assert isinstance(result, Message)  # a first line "Subject: s" is always mail


@st.composite
def mutated_real(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(REAL)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete", "dup"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 200))]
        else:
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 500))]
    return bytes(data)


@PROPS
@given(mutated_real())
def test_mutated_real_messages(data: bytes) -> None:
    _check(data)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=512), mail_shaped()), max_size=8))
def test_batch_matches_single(blobs: list[bytes]) -> None:
    raws = [RawMessage(b, f"m{i}") for i, b in enumerate(blobs)]
    assert parse_many(raws, now=NOW) == [parse(r, now=NOW) for r in raws]


@PROPS
@given(st.text(max_size=2000), st.one_of(st.none(), st.text(max_size=2000)))
def test_extract_urls_never_raises(text: str, html: str | None) -> None:
    for url in extract_urls(text, html):
        assert url.url
        assert url.source in {"text", "href", "src", "other"}


def _normalise_reference(text: str) -> str:
    """normalise_text's contract as plain regexes (the slower form it replaced)."""
    text = re.sub("[ \t\r\f\v\u00a0]+", " ", text)
    text = re.sub(" ?\n ?", "\n", text)
    return re.sub("\n{3,}", "\n\n", text).strip()


@PROPS
@given(st.text(alphabet=st.sampled_from(" \t\r\n\f\v\u00a0\u3000ab"), max_size=200) | st.text())
def test_normalise_text_matches_its_regex_definition(text: str) -> None:
    assert normalise_text(text) == _normalise_reference(text)


@PROPS
@given(
    # 990-994 put a line at 997-1002 bytes (CR included): the edge RFC 5322 §2.1.1 draws
    st.lists(st.integers(0, 1100) | st.integers(990, 994), min_size=1, max_size=90),
    st.sampled_from([b"\n", b"\r\n"]),
    st.booleans(),
)
def test_long_header_line_defect_iff_a_header_line_reaches_1000_bytes(
    lengths: list[int], eol: bytes, nul: bool
) -> None:
    # Up to ~100 KB of headers: the blank line may sit past the first 64 KiB.
    lines = [b"X-Pad: " + b"a" * n for n in lengths]
    head = b"Subject: s" + eol + eol.join(lines) + eol
    data = head + (b"\x00" if nul else b"") + eol + b"body " * 300 + eol
    result = parse(RawMessage(data, "prop"), now=NOW)
    assert isinstance(result, Message)
    too_long = any(len(line) >= 1000 for line in head.split(b"\n"))
    assert ("header-line-too-long" in result.defects) == too_long
    assert [v for n, v in result.headers if n == "X-Pad"] == ["a" * n for n in lengths]
