"""URL extraction and registered domains (offline Public Suffix List)."""

from __future__ import annotations

import pytest

from conftest import TESTS_DATA
from trapline.ingest.html import render
from trapline.ingest.parse import parse
from trapline.ingest.urls import extract_urls, host_of, refang, registered_domain
from trapline.model import Message, RawMessage


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("www.example.co.uk", "example.co.uk"),
        ("WWW.Example.COM", "example.com"),
        ("a.b.c.tripod.com.ar", "tripod.com.ar"),
        ("foo.blogspot.com", "foo.blogspot.com"),  # a private suffix in the PSL
        ("example.com.", "example.com"),
        ("co.uk", None),  # a bare public suffix has no registrable domain
        ("localhost", None),
        ("1.2.3.4", None),
        ("[2001:db8::1]", None),
        ("host.invalid-tld-xyz", None),  # unknown TLDs are not guessed
        ("", None),
    ],
)
def test_registered_domain(host: str, expected: str | None) -> None:
    assert registered_domain(host) == expected


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://user:pw@Evil.Example.net:8080/x?y#z", "evil.example.net"),
        ("https://[2001:db8::1]:443/a", "2001:db8::1"),
        ("hxxp://evil[.]com/login", "evil.com"),
        ("hxxps[://]bad[dot]example[.]org/a", "bad.example.org"),
        ("//cdn.example.net/i.png", "cdn.example.net"),
        ("www.foo.com/path", "www.foo.com"),
        ("mailto:x@y.z", None),
        ("cid:part1@example", None),
        ("javascript:alert(1)", None),
        ("/relative/path", None),
        ("http://exa mple.com/", None),  # a space is not a host character
    ],
)
def test_host_of(url: str, host: str | None) -> None:
    assert host_of(url) == host


def test_refang_only_for_parsing() -> None:
    assert refang("hxxp://a[.]b(dot)c") == "http://a.b.c"
    (url,) = extract_urls("see hxxp://a[.]example[.]com/x now", None)
    assert url.url == "hxxp://a[.]example[.]com/x"  # kept as written
    assert url.obfuscated
    assert url.host == "a.example.com"
    assert url.registered_domain == "example.com"


def test_text_urls_lose_trailing_prose_punctuation() -> None:
    text = (
        "Go to http://www.example.co.uk/path?a=1. Or (http://a.example.com/c_(d)) and "
        '"https://b.example.com/q", then www.c.example.com; done.'
    )
    assert [u.url for u in extract_urls(text, None)] == [
        "http://www.example.co.uk/path?a=1",
        "http://a.example.com/c_(d)",
        "https://b.example.com/q",
        "www.c.example.com",
    ]


def test_bare_defanged_names_are_found_but_plain_names_are_not() -> None:
    urls = extract_urls("report evil[.]example[.]com/x and also example.com in prose", None)
    assert [(u.url, u.obfuscated) for u in urls] == [("evil[.]example[.]com/x", True)]


def test_scheme_inside_a_word_is_not_a_url() -> None:
    assert extract_urls("xhttp://no.example.com", None) == ()


def test_html_links_sources_and_dedup() -> None:
    html = (
        '<p><a href="http://Link.Example.com/a">http://link.example.com/visible</a></p>'
        '<img src="http://img.example.net/p.gif"><img src="cid:abc">'
        '<form action="http://post.example.org/f"></form><p><a href="mailto:a@b.c">m</a>'
        '<a href="http://Link.Example.com/a">again</a></p>'
    )
    urls = extract_urls("", html)
    assert [(u.url, u.source) for u in urls] == [
        ("http://Link.Example.com/a", "href"),
        ("http://img.example.net/p.gif", "src"),
        ("http://post.example.org/f", "action"),
        ("http://link.example.com/visible", "html-text"),
    ]


def test_render_drops_scripts_and_keeps_blocks_apart() -> None:
    out = render(
        "<html><head><title>T</title><style>p{}</style></head><body><script>var x=1</script>"
        "<p>Hel<b>lo</b> &amp; wor&#108;d</p><div>next</div>line<br>break</body></html>"
    )
    # Paragraph ends and starts each break the line; runs of blank lines collapse to one.
    assert out.text == "Hello & world\n\nnext\nline\nbreak"


def test_urls_of_a_real_spam() -> None:
    data = (TESTS_DATA / "eml" / "malformed" / "sat-spam-badmime.eml").read_bytes()
    msg = parse(RawMessage(data, "badmime"))
    assert isinstance(msg, Message)
    domains = {u.registered_domain for u in msg.urls}
    # Read from the message: the tracking redirector and the landing/image host.
    assert {"sexmailnetwork.com", "harder-please.com"} <= domains
    assert all(u.host for u in msg.urls)


@pytest.mark.parametrize(
    "text",
    [
        "http://a.example.com/" + ")" * 200_000,  # closing brackets to balance, one by one
        "http://" + "a" * 1_000_000,  # one endless token
        "a[.]" * 200_000,  # one endless defanged name
        ("http://a.example.com/x " * 50_000) + ("b[.]example[.]com " * 50_000),
        "www." * 100_000,
    ],
)
def test_hostile_text_is_bounded(text: str) -> None:
    urls = extract_urls(text, None)
    assert len(urls) <= 2
    assert all(len(u.url) <= 2048 for u in urls)


def test_internationalised_hosts_are_stored_as_a_labels() -> None:
    unicode_form, ascii_form = extract_urls(
        "http://пример.рф/путь and http://xn--e1afmkfd.xn--p1ai/", None
    )
    assert unicode_form.url == "http://пример.рф/путь"  # kept as written
    assert unicode_form.host == ascii_form.host == "xn--e1afmkfd.xn--p1ai"
    assert unicode_form.registered_domain == ascii_form.registered_domain == "xn--e1afmkfd.xn--p1ai"
