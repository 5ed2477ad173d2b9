"""Hostile input: each attack completes and yields a record whose size and shape stay bounded.

No timed asserts (house rule); the bounds are on structure and size, and completion under pytest
is itself the check that nothing went quadratic or recursed without end.
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
from collections.abc import Callable
from types import ModuleType

import pytest

from conftest import TESTS_DATA
from conftest import testdata as fixture_bytes  # aliased: pytest would collect "testdata"
from trapline.ingest.parse import DEFAULT_LIMITS, parse
from trapline.ingest.stdlib_mime import stdlib_fields
from trapline.model import Message, Quarantined, RawMessage, message_id_of

LIMITS = DEFAULT_LIMITS


def _load_builders() -> ModuleType:
    path = TESTS_DATA / "eml" / "hostile" / "build.py"
    spec = importlib.util.spec_from_file_location("hostile_build", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_builders()


def _parse(data: bytes) -> Message | Quarantined:
    result = parse(RawMessage(data, "hostile"))
    assert result.id == message_id_of(data)
    assert result.size == len(data)
    return result


def _message(data: bytes) -> Message:
    result = _parse(data)
    assert isinstance(result, Message), result
    _assert_bounded(result)
    return result


def _assert_bounded(msg: Message) -> None:
    """The record never grows past the caps, whatever the input."""
    assert len(msg.headers) <= LIMITS.max_headers
    assert all(len(v) <= LIMITS.max_header_value for _, v in msg.headers)
    assert len(msg.to) <= LIMITS.max_recipients and len(msg.cc) <= LIMITS.max_recipients
    assert len(msg.urls) <= LIMITS.max_urls
    assert len(msg.attachments) <= LIMITS.max_attachments
    assert len(msg.text) <= LIMITS.max_body_chars
    assert msg.html is None or len(msg.html) <= LIMITS.max_body_chars
    assert msg.subject is None or len(msg.subject) <= LIMITS.max_header_value


@pytest.mark.parametrize("name", build.STORED)
def test_stored_fixture_is_what_the_builder_makes(name: str) -> None:
    # The committed bytes and the builder agree, so regenerating changes nothing silently.
    assert fixture_bytes("eml", "hostile", f"{name}.eml") == build.BUILDERS[name]()


def test_to_with_16k_addresses_is_capped() -> None:
    msg = _message(fixture_bytes("eml", "hostile", "to-16k.eml"))
    assert len(msg.to) == LIMITS.max_recipients
    assert msg.to[0].addr == "user0@example.net"
    assert msg.to[-1].addr == f"user{LIMITS.max_recipients - 1}@example.net"
    assert "too-many-recipients" in msg.defects
    assert "header-value-truncated" in msg.defects


def test_fifty_nested_rfc822_levels() -> None:
    data = fixture_bytes("eml", "hostile", "nested-rfc822-50.eml")
    msg = _message(data)
    assert msg.subject == "Fwd level 49"
    # The onion is kept as one message/rfc822 attachment, hashed, not unpacked 50 times.
    assert [a.content_type for a in msg.attachments] == ["message/rfc822"]
    assert msg.attachments[0].size < len(data)


def test_multipart_nesting_beyond_the_fast_parsers_cap() -> None:
    msg = _message(fixture_bytes("eml", "hostile", "nested-multipart-300.eml"))
    assert "fallback-parser" in msg.defects
    assert msg.text.strip() == "innermost text"


def test_zip_bomb_is_hashed_not_inflated() -> None:
    msg = _message(fixture_bytes("eml", "hostile", "zip-bomb.eml"))
    bomb = build.zip_bomb_bytes()
    assert len(bomb) < 100_000  # it inflates to 16 MB
    assert [(a.filename, a.content_type, a.size, a.sha256) for a in msg.attachments] == [
        ("invoice.zip", "application/zip", len(bomb), hashlib.sha256(bomb).hexdigest())
    ]
    assert "Please see the attached invoice." in msg.text


def test_ten_megabyte_header_line() -> None:
    data = build.header_10mb()
    assert len(data) > 10_000_000
    msg = _message(data)
    assert msg.subject == "Life Insurance - Why Pay More?"
    assert "header-line-too-long" in msg.defects
    assert "header-value-truncated" in msg.defects
    padding = [v for n, v in msg.headers if n == "X-Padding"]
    assert padding == ["A" * LIMITS.max_header_value]


def test_nul_bytes_are_removed_and_flagged() -> None:
    msg = _message(fixture_bytes("eml", "hostile", "nul-bytes.eml"))
    assert "nul-bytes" in msg.defects
    assert msg.subject == "Life Insurance - Why Pay More?"
    assert "\x00" not in msg.text
    assert all("\x00" not in v for _, v in msg.headers)
    assert "tail" in msg.text  # bytes after the NULs are kept


def test_binary_junk_is_quarantined() -> None:
    result = _parse(fixture_bytes("eml", "hostile", "binary-junk.eml"))
    assert isinstance(result, Quarantined)
    assert result.reason == "binary"
    assert result.detail


def test_real_headers_with_a_binary_body_are_still_a_message() -> None:
    msg = _message(fixture_bytes("eml", "hostile", "headers-then-junk.eml"))
    assert msg.subject == "Life Insurance - Why Pay More?"
    assert msg.from_.addr == "12a1mailbot1@web.de"


def test_fifty_thousand_headers_are_capped() -> None:
    msg = _message(build.many_headers())
    assert len(msg.headers) == LIMITS.max_headers
    assert "too-many-headers" in msg.defects
    assert msg.subject == "Life Insurance - Why Pay More?"  # fields beyond the cap still read


def test_hundred_thousand_urls_are_capped() -> None:
    msg = _message(build.many_urls())
    assert len(msg.urls) == LIMITS.max_urls
    assert msg.urls[0].url == "http://host0.example.com/p?0"
    assert "too-many-urls" in msg.defects


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\r\n\r\n   \n", "empty"),
        (b"From nobody Thu Aug 22 13:17:22 2002\n", "empty"),
        (b"Hello, this is not an email\n\nat all", "no-headers"),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "no-headers"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 20, "binary"),
    ],
)
def test_not_mail_is_quarantined_with_a_reason(data: bytes, reason: str) -> None:
    result = _parse(data)
    assert isinstance(result, Quarantined)
    assert result.reason == reason


@pytest.mark.parametrize(
    "make",
    [
        lambda: b"Subject: only a header",  # no body, no blank line
        lambda: b"Subject: x\n\n" + b"=?utf-8?b?" * 10_000,
        lambda: b"Content-Type: multipart/mixed\n\nno boundary at all\n",
        lambda: (
            b"Subject: =?x-unknown?q?=E9t=E9?=\nContent-Type: text/plain; charset=x-bogus\n\n\xe9t\xe9\n"
        ),
        lambda: b"Date: Thu, 22 Aug 0102 12:07:35 +0800\nFrom: <>\nTo: ,,,,\n\n",
        lambda: b"Subject: t\nContent-Type: text/html\n\n" + b"<div>" * 50_000,
    ],
)
def test_odd_but_mail_shaped_input_yields_a_message(make: Callable[[], bytes]) -> None:
    _message(make())


@pytest.mark.parametrize("name", sorted(build.BUILDERS))
def test_fallback_parser_is_bounded_too(name: str) -> None:
    # The stdlib path must hold the same caps when it is the one reading the attack.
    fields = stdlib_fields(build.BUILDERS[name]())
    assert len(fields.headers) <= LIMITS.max_headers
    assert all(len(v) <= LIMITS.max_header_value for _, v in fields.headers)
    assert len(fields.to) <= LIMITS.max_recipients
    assert len(fields.attachments) <= LIMITS.max_attachments


def test_deeply_nested_html_is_read_without_the_dom() -> None:
    # lexbor's tree builder is quadratic in open-element depth; 100k unclosed divs would take
    # minutes. The regex reading keeps the text and the links.
    html = "<div>" * 100_000 + "Buy <a href='http://shop.example.com/?a=1&amp;b=2'>now</a>"
    data = b"Subject: deep\nContent-Type: text/html\n\n" + html.encode()
    msg = _message(data)
    assert "html-too-deep" in msg.defects
    assert msg.text == "Buy now"
    assert [(u.url, u.source) for u in msg.urls] == [("http://shop.example.com/?a=1&b=2", "href")]


@pytest.mark.parametrize("levels", [1000, 5000])
def test_multipart_nesting_beyond_the_stdlib_recursion_limit(levels: int) -> None:
    # The feed parser recurses per level (and tests each line against every open boundary):
    # past the fast parser's cap only the headers are read, and the record says so.
    msg = _message(build.nested_multipart(levels))
    assert msg.subject == "deep"
    assert msg.from_.addr == "deep@example.org"
    assert "too-deep" in msg.defects


def _deep_with_bad_base64(levels: int, lines: int, text_part: bool) -> bytes:
    kind = b"text/plain" if text_part else b"application/octet-stream"
    bad = b"Content-Type: " + kind + b"\nContent-Transfer-Encoding: base64\n\nQUJD!!!\n"
    body = (
        b'Content-Type: multipart/mixed; boundary="x"\n\n--x\nContent-Type: text/plain\n\n'
        + b"hello text\n--x\n"
        + bad
        + b"QUJDRA==\n" * lines
        + b"\n--x--\n"
    )
    inner = build.nested_multipart(0).split(b"MIME-Version: 1.0\n")[0]  # From + Subject
    return inner + build.wrap_multipart(body, levels)


def test_large_deep_message_with_a_broken_attachment_skips_only_that_part() -> None:
    # 250 levels (under the fast parser's cap) and ~1 MB with one undecodable base64 part: the
    # stdlib's feed parser would test every line against 250 boundaries; lazy mode does not.
    msg = _message(_deep_with_bad_base64(250, 100_000, text_part=False))
    assert "lazy-parser" in msg.defects and "undecodable-attachment" in msg.defects
    assert msg.text.strip() == "hello text"


def test_large_deep_message_with_a_broken_text_part_keeps_its_headers() -> None:
    msg = _message(_deep_with_bad_base64(250, 1_000_000, text_part=True))
    assert "bodies-skipped" in msg.defects
    assert msg.subject == "deep" and msg.from_.addr == "deep@example.org"


def test_random_blobs_are_never_taken_for_mail() -> None:
    blobs = [random.Random(seed).randbytes(64 + seed * 13) for seed in range(300)]
    results = [_parse(blob) for blob in blobs]
    assert all(isinstance(r, Quarantined) for r in results)
    assert sum(r.reason == "binary" for r in results if isinstance(r, Quarantined)) >= 295


def test_legacy_8bit_text_is_not_binary() -> None:
    # A raw GB2312 Subject in a tiny header block, and a header-less KOI8-R note.
    mail = "Subject: 全新原装进口\n\nbody\n".encode("gb2312")
    assert isinstance(_parse(mail), Message)
    note = _parse("Привет мир\nвторая строка\n".encode("koi8-r"))
    assert isinstance(note, Quarantined) and note.reason == "no-headers"
