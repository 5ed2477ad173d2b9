"""HTML bodies to plain text and link attributes, in one selectolax (lexbor) parse.

Spam is often HTML-only; its visible text is what fingerprints and readers need, and its
``href``/``src`` attributes are where the landing pages are. Hostile HTML is cut to a size cap
before parsing so a multi-megabyte body cannot dominate a batch.
"""

from __future__ import annotations

import contextlib
import html as htmllib
import re
from dataclasses import dataclass
from urllib.parse import urljoin

from selectolax.lexbor import LexborHTMLParser

MAX_HTML_CHARS = 1_000_000  # rendered at most; the stored html is capped separately
MAX_LINKS = 1000
# lexbor's tree builder is quadratic in the depth of unclosed elements ("<div>" * 50,000 takes
# seconds); past this many estimated open elements a regex reading stands in for the DOM.
MAX_OPEN_ELEMENTS = 4000

# Block-level boundaries become line breaks, otherwise "<p>a</p><p>b</p>" renders as "ab".
_BLOCK = re.compile(
    r"<(?=(?:br|hr|p|div|tr|li|h[1-6]|table|blockquote|/p|/div|/tr|/li|/h[1-6]|/table|/td|td)\b)",
    re.IGNORECASE,
)
# Every run of these becomes one space: the other ones are replaced by a space first (str.replace,
# only those present), then runs of 2+ spaces collapse. A regex starting with two literal spaces
# lets the engine skip to such runs instead of trying every position.
_ODD_SPACES = ("\t", "\r", "\f", "\v", "\u00a0")
_SPACE_RUN = re.compile("   *")
_BLANK_LINES = re.compile(r"\n\n\n+")
_INVISIBLE = ["script", "style", "noscript", "title", "head", "template"]
# Attributes that carry URLs a reader's client would fetch or follow; each is its own source.
_LINK_SELECTOR = "[href],[src],[action],[background],meta[http-equiv]"
_ATTRS = ("href", "src", "action", "background")
_LINK_ATTR = re.compile(
    r"""\b(href|src|action|background)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""", re.IGNORECASE
)
# HTML §4.2.5.3 (refresh pragma): content="5; url=http://..." (quotes around the URL optional).
_REFRESH_URL = re.compile(r"""^\s*[\d.]*\s*[;,]?\s*(?:url\s*=\s*)?["']?([^"'\s]+)""", re.IGNORECASE)
_ABSOLUTE = re.compile(r"^(?:https?|ftp)://", re.IGNORECASE)
_HAS_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
_HIDDEN_BLOCKS = re.compile(
    r"<(script|style|noscript|title|head|template)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL
)
_TAG = re.compile(r"<[^>]*>")


@dataclass(slots=True, frozen=True)
class RenderedHtml:
    """Visible text of an HTML body plus its link attributes as (source, url) pairs."""

    text: str
    links: tuple[tuple[str, str], ...]
    truncated: bool = False  # cut at the size cap before rendering
    shallow: bool = False  # too deeply nested for the DOM: read with regexes instead


def normalise_text(text: str) -> str:
    """Collapse runs of spaces and blank lines left by markup.

    Runs of blanks (space, tab, CR, FF, VT, NBSP) become one space, a space next to a line break
    goes, and three or more line breaks become two. Plain ``str`` scans and replaces do most of
    it: this runs on every rendered HTML body, and regex passes over every position cost ~2x.
    """
    for odd in _ODD_SPACES:
        if odd in text:
            text = text.replace(odd, " ")
    if "  " in text:
        text = _SPACE_RUN.sub(" ", text)
    # No two spaces are adjacent now, so these drop exactly the spaces that touch a line break.
    if " \n" in text:
        text = text.replace(" \n", "\n")
    if "\n " in text:
        text = text.replace("\n ", "\n")
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def _too_deep(html: str) -> bool:
    # Open tags minus close tags bounds the open-element stack (void tags only overcount).
    closes = html.count("</")
    return html.count("<") - 2 * closes > MAX_OPEN_ELEMENTS


def refresh_url(content: str) -> str | None:
    """The URL of a ``<meta http-equiv=refresh content=...>`` value, if it names one."""
    if "url" not in content.lower() and "/" not in content:
        return None  # "5": a plain reload of the same page
    match = _REFRESH_URL.match(content)
    return match.group(1) if match else None


def _resolved(links: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Relative links resolved against the document's first absolute ``<base href>``.

    HTML §4.2.3: the base URL applies to every relative URL in the document, so a link
    written "/offer" under ``<base href="http://spam.example/">`` leads to that host.
    """
    base = next((url for source, url in links if source == "base"), None)
    if base is None or not _ABSOLUTE.match(base):
        return links
    out = []
    for source, url in links:
        if source != "base" and not _HAS_SCHEME.match(url) and not url.startswith("#"):
            with contextlib.suppress(ValueError):  # malformed: keep the link as written
                url = urljoin(base, url)
        out.append((source, url))
    return out


def _render_shallow(html: str, *, max_links: int, text: bool) -> RenderedHtml:
    """A regex reading of HTML too deeply nested for the DOM builder: linear, never raises."""
    links: list[tuple[str, str]] = []
    for match in _LINK_ATTR.finditer(html):
        if len(links) >= max_links:
            break
        value = next(v for v in match.groups()[1:] if v is not None).strip()
        if value:
            links.append((match.group(1).lower(), htmllib.unescape(value)))
    rendered = ""
    if text:
        body = _TAG.sub("", _BLOCK.sub("\n<", _HIDDEN_BLOCKS.sub("", html)))
        rendered = normalise_text(htmllib.unescape(body))
    return RenderedHtml(text=rendered, links=tuple(_resolved(links)), shallow=True)


def render(
    html: str,
    *,
    max_chars: int = MAX_HTML_CHARS,
    max_links: int = MAX_LINKS,
    text: bool = True,
) -> RenderedHtml:
    """Render ``html`` to text and collect its links. Never raises.

    ``text=False`` only collects links: the caller has a plain-text alternative and rendering
    is most of the cost.
    """
    truncated = len(html) > max_chars
    if truncated:
        html = html[:max_chars]
    if "\x00" in html:
        html = html.replace("\x00", "")
    if _too_deep(html):
        shallow = _render_shallow(html, max_links=max_links, text=text)
        return RenderedHtml(shallow.text, shallow.links, truncated=truncated, shallow=True)
    try:
        tree = LexborHTMLParser(_BLOCK.sub("\n<", html) if text else html)
        links: list[tuple[str, str]] = []
        for node in tree.css(_LINK_SELECTOR):
            attrs = node.attributes
            if node.tag == "meta":
                if (attrs.get("http-equiv") or "").strip().lower() == "refresh":
                    url = refresh_url(attrs.get("content") or "")
                    if url and len(links) < max_links:
                        links.append(("refresh", url))
                continue
            for attr in _ATTRS:
                value = attrs.get(attr)
                if value and len(links) < max_links:
                    source = "base" if node.tag == "base" and attr == "href" else attr
                    links.append((source, value.strip()))
        rendered = ""
        if text:
            tree.strip_tags(_INVISIBLE)
            rendered = normalise_text(tree.text(separator="") or "")
    except Exception:  # selectolax is C; any failure means "no usable rendering", not a crash
        return RenderedHtml(text="", links=(), truncated=True)
    return RenderedHtml(text=rendered, links=tuple(_resolved(links)), truncated=truncated)
