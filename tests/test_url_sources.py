"""URLs as mail clients and filters see them, one real message per cause.

Each ``tests/data/eml/urls/<name>.eml`` is real spam (or, for the two ``built-`` ones, made of
real parts by ``build.py``); its ``<name>.urls.json`` lists every URL with host, source and
part, checked by hand against the raw message. The tests below name the URL each cause is about,
so a regression says what a reader would miss.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TESTS_DATA
from trapline.ingest.parse import parse
from trapline.ingest.urls import extract_urls, host_of
from trapline.model import Message, RawMessage, Url

URLS = TESTS_DATA / "eml" / "urls"
FIXTURES = sorted(URLS.glob("*.urls.json"))


def urls_of(name: str) -> tuple[Url, ...]:
    path = URLS / f"{name}.eml"
    message = parse(RawMessage(path.read_bytes(), path.name))
    assert isinstance(message, Message)
    return message.urls


def found(name: str) -> set[tuple[str, str | None, str, str]]:
    return {(u.url, u.host, u.source, u.part) for u in urls_of(name)}


@pytest.mark.parametrize("expected", FIXTURES, ids=[p.name.split(".")[0] for p in FIXTURES])
def test_every_url_of_the_fixture_as_checked_by_hand(expected: Path) -> None:
    truth = json.loads(expected.read_text(encoding="utf-8"))
    name = expected.name.removesuffix(".urls.json")
    assert [[u.url, u.host, u.source, u.part] for u in urls_of(name)] == truth["urls"]


def test_html_text_counts_beside_a_text_plain_part() -> None:
    urls = found("sa-spam_2-01363-html-text")
    # Only the HTML part's visible text says "WWW.BLUECOM.COM"; the plain part never does.
    assert ("WWW.BLUECOM.COM", "www.bluecom.com", "html-text", "html.1") in urls
    assert any(source == "text" and part == "plain.1" for _, _, source, part in urls)


def test_link_text_and_refresh_target_are_both_kept() -> None:
    urls = found("sa-spam_2-00390-refresh")
    # The page refreshes to damiansangels.com while its text shows damiansangelz.com.
    refresh = "http://www.damiansangels.com/accounts/hosting/anna"
    shown = "http://www.damiansangelz.com/accounts/hosting/anna"
    assert (refresh, "www.damiansangels.com", "refresh", "html.1") in urls
    assert (shown, "www.damiansangelz.com", "html-text", "html.1") in urls


def test_relative_links_resolve_against_base_href() -> None:
    urls = found("sa-spam-00412-base")
    assert ("http://200.43.112.5/", "200.43.112.5", "base", "html.1") in urls
    assert ("http://200.43.112.5/ads/images/mhg_01.jpg", "200.43.112.5", "src", "html.1") in urls
    assert not any(url.startswith("/") for url, *_ in urls)


def test_html_attachment_found_by_content() -> None:
    urls = found("sa-spam_2-01306-html-attachment")
    hosts = {host for _, host, _, part in urls if part == "attachment.1"}
    assert hosts == {"kifungadmin.beyondimension.com", "www.kifungad.com"}


def test_forwarded_message_urls_carry_the_embedded_part() -> None:
    urls = found("nazario-phishing1-0133-forward")
    assert all(part == "attachment.1/html.1" for *_, part in urls)
    # A browser drops the tab and newline the phisher put inside the form's action URL.
    assert (
        "http://rds.yahoo.com/*http://www.google.com/url",
        "rds.yahoo.com",
        "action",
        "attachment.1/html.1",
    ) in urls


def test_fake_bounce_carries_the_spam_it_returns() -> None:
    urls = found("built-fake-bounce")
    assert urls == {
        ("http://website.e365.cc/savequote/", "website.e365.cc", "href", "attachment.2/html.1")
    }


@pytest.mark.parametrize(
    ("name", "url", "host"),
    [
        # "：http://www.e-dowell.com（" in GB2312: fullwidth colon and parenthesis around it
        ("sa-spam-00481-cjk-gb2312", "http://www.e-dowell.com", "www.e-dowell.com"),
        # a CJK letter right before "www", "." and more CJK text right after the host
        ("sa-spam_2-00276-cjk-qp", "www.aacsb.edu", "www.aacsb.edu"),
    ],
)
def test_urls_next_to_cjk_text(name: str, url: str, host: str) -> None:
    urls = urls_of(name)
    assert (url, host) in {(u.url, u.host) for u in urls}
    assert all(u.host is None or (u.host.isascii() and "xn--" not in u.host) for u in urls)


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("看http://www.example.com/offer、次", "http://www.example.com/offer"),
        ("网址：www.example.cn。谢谢", "www.example.cn"),
        ("(see http://example.org/a）and more", "http://example.org/a"),
        ("http://www.example.com中文网站", "http://www.example.com"),
        ("go to http://bücher.de/x now", "http://bücher.de/x"),
    ],
)
def test_non_latin_punctuation_and_letters_end_a_url(text: str, url: str) -> None:
    assert [u.url for u in extract_urls(text, None)] == [url]


def test_bare_ftp_host_is_linked_like_www() -> None:
    assert found("built-ftp-bare-host") == {
        ("ftp.freshrpms.net", "ftp.freshrpms.net", "text", "plain.1")
    }


def test_glued_words_keep_the_url_text_but_get_no_host() -> None:
    urls = {u.url: u for u in urls_of("sa-spam_2-00028-glued-words")}
    for glued in ("http://www.newlinepubs.comGlenn", "http://AkkaBay.comIf"):
        assert urls[glued].host is None
        assert urls[glued].registered_domain is None
    assert urls["http://AkkaBay.com"].host == "akkabay.com"


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://canadianpharm.hk.Yours", None),
        ("http://localhost/x", None),
        ("http://intranet/x", None),
        ("http://.example.com/", None),
        ("http://a_b.example.com/", "a_b.example.com"),  # DNS serves it below the registered name
        ("http://shop_now.com/", None),  # registries never issue "_"
        ("http://www.example.c0m/", None),
        ("http://209.163187.54/", None),  # a number past 255 in a middle part
    ],
)
def test_hosts_that_cannot_exist_get_none(url: str, host: str | None) -> None:
    assert host_of(url) == host


def test_numeric_hosts_read_as_browsers_read_them() -> None:
    urls = {u.url: u.host for u in urls_of("sat-spam-009-numeric-hosts")}
    assert urls["http://0x425c45de/"] == "66.92.69.222"
    assert urls["http://66.92.0x45.221/"] == "66.92.69.221"
    assert urls["http://1113343455/"] == "66.92.69.223"
    assert urls["http://slashdot.org@1113343456/"] == "66.92.69.224"


def test_mislabelled_japanese_charset_still_yields_its_url() -> None:
    urls = found("sat-nice-cjk-iso-2022-jp-2-mislabelled")
    assert (
        "http://cvs.netlab.co.jp/cgi-bin/cvsweb/ruby/ext/socket/extconf.rb",
        "cvs.netlab.co.jp",
        "text",
        "plain.1",
    ) in urls
