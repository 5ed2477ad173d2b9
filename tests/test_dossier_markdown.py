"""The dossier's Markdown twin is inert: rendered by markdown-it-py with raw HTML enabled (the
CommonMark preset, as most renderers run it), nothing from the data becomes a tag, an attribute
or a link, and a code fence in a header cannot close the block it sits in.

The store is real: the bundled 2008 routing table, and a real SpamAssassin spam message
re-sent from a McColo address (AS26780) with hostile headers, ingested by the pipeline.
"""

from __future__ import annotations

from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from trapline.analyze.campaigns import analyze_campaigns
from trapline.config import load_settings
from trapline.export.dossier import md_code_block, md_text, write_dossier
from trapline.pipeline.adapters.asn import enrich_all
from trapline.pipeline.run import ingest
from trapline.store import routing as store_routing
from trapline.store.duckdb import open_store

SAMPLE = Path(str(resources.files("trapline").joinpath("data", "sample", "mail", "spam")))
HOSTILE_SUBJECT = "<img src=x onerror=alert(1)> [click](javascript:alert(2)) <b>bold</b>"
HOSTILE_HEADERS = (
    b"X-Fence: a\n ```\n <script>alert(3)</script>\n ````\n <img src=y onerror=alert(4)>\n"
    b"X-Html: <iframe src=//evil.example></iframe>\n"
)
# Tags markdown-it may produce from our own structure; anything else came from the data.
ALLOWED = {"h1", "h2", "h3", "p", "br", "pre", "code", "table", "thead", "tbody", "tr", "th", "td"}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def _tags(markdown: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)
    parser = _Tags()
    parser.feed(html)
    return parser.tags


def _inert(markdown: str) -> None:
    tags = _tags(markdown)
    assert {t for t, _ in tags} <= ALLOWED, sorted({t for t, _ in tags} - ALLOWED)
    assert all(not attrs or tag == "td" or tag == "th" for tag, attrs in tags)
    assert not any(attrs for _, attrs in tags if _ in ("td", "th") and attrs != [])


@pytest.fixture(scope="module")
def dossier_md(tmp_path_factory: pytest.TempPathFactory) -> str:
    base = tmp_path_factory.mktemp("dossier")
    real = sorted(p for p in SAMPLE.iterdir() if p.is_file())[1].read_bytes()
    head, sep, body = real.replace(b"\r\n", b"\n").partition(b"\n\n")
    lines = [ln for ln in head.split(b"\n") if not ln.lower().startswith(b"subject:")]
    received = (
        b"Received: from <img src=z onerror=alert(5)> (evil [208.66.195.7])\n"
        b"\tby mx.traps.example.org; Wed, 3 Sep 2008 10:00:00 +0000"
    )
    msg = b"\n".join([received, *lines, b"Subject: " + HOSTILE_SUBJECT.encode()])
    (base / "hostile.eml").write_bytes(msg + b"\n" + HOSTILE_HEADERS + sep + body)
    data = base / "data"
    settings = load_settings({"data_dir": str(data), "workers": 1})
    with open_store(data) as store:
        store_routing.import_bundled_routing(store)
    ingest([base / "hostile.eml"], settings=settings)
    with open_store(data) as store:
        enrich_all(store, settings)
        analyze_campaigns(store, settings)
        md_path = write_dossier(store, settings, 26780, base / "mccolo.html")[1]
    return md_path.read_text(encoding="utf-8")


def test_dossier_markdown_renders_without_raw_html(dossier_md: str) -> None:
    assert "onerror" in dossier_md and "alert(3)" in dossier_md  # the evidence is there ...
    _inert(dossier_md)  # ... as text only
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(dossier_md)
    assert "<script" not in html and "<img" not in html and "<iframe" not in html
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in html  # still inside the code block
    assert 'href="javascript' not in html


def test_fence_outlasts_any_backtick_run() -> None:
    for run in range(1, 9):
        text = f"a\n{'`' * run}\n<script>x</script>\n~~~\n"
        md = "\n".join(md_code_block(text))
        html = MarkdownIt("commonmark", {"html": True}).render(md)
        assert "<script" not in html and html.count("<pre>") == 1


@pytest.mark.parametrize(
    "value",
    [
        HOSTILE_SUBJECT,
        "# heading",
        "- list",
        "1. ordered",
        "> quote",
        "<http://autolink.example>",
        "&lt;script&gt;",
        "a | b | c",
        "![x](http://img.example/a.png)",
        "line one\n<script>two</script>",
        "===",
    ],
)
def test_md_text_is_one_inert_paragraph(value: str) -> None:
    tags = _tags(md_text(value))
    assert [t for t, _ in tags] == ["p"], tags
