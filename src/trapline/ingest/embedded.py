"""Texts that carry URLs outside the message's own body parts.

Fake bounces (``multipart/report``) and forwards carry the spam as an embedded
``message/rfc822`` part, and droppers attach HTML pages under any declared type. A reader's
client shows both, so both are searched for URLs. The texts found here feed URL extraction
only: the message's stored body stays what its own parts say.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from trapline.ingest.headers import decode_bytes

# (part locator, "plain" | "html", text): the locator is "attachment.N", nested with "/".
ExtraText = tuple[str, str, str]

MAX_EMBEDDED_DEPTH = 3  # a bounce of a bounce of a message is as deep as real mail goes
MAX_EXTRA_TEXTS = 20  # per message, across every embedded message and attachment
MAX_EXTRA_CHARS = 1_000_000  # per message, so hostile attachments cannot dominate a batch
SNIFF_BYTES = 4096

# WHATWG MIME sniffing §7.1 looks for these tags at the start of a resource; spam attachments
# often carry a preamble, so the first few KB are searched.
_HTML_TAG = re.compile(
    rb"<(?:!doctype\s+html|html|head|body|a\s+href|iframe|form|table|meta|script|font)[\s>/]",
    re.IGNORECASE,
)
_META_CHARSET = re.compile(
    rb"""<meta[^>]{0,200}?charset\s*=\s*["']?([A-Za-z0-9_.:-]{1,40})""", re.I
)


def looks_like_html(content: bytes) -> bool:
    """True when an attachment's bytes read as an HTML page, whatever type it declares."""
    head = content[:SNIFF_BYTES]
    return b"\x00" not in head and _HTML_TAG.search(head) is not None


def html_text(content: bytes) -> str:
    """An attachment's HTML decoded with the charset its ``<meta>`` names (else UTF-8/Latin-1)."""
    meta = _META_CHARSET.search(content[:SNIFF_BYTES])
    return decode_bytes(content, meta.group(1).decode("ascii") if meta else None)[0]


class ExtraTexts:
    """Collects the extra texts of one message within the per-message caps."""

    def __init__(self) -> None:
        self.items: list[ExtraText] = []
        self.chars = 0

    def full(self) -> bool:
        return len(self.items) >= MAX_EXTRA_TEXTS or self.chars >= MAX_EXTRA_CHARS

    def add(self, part: str, kind: str, text: str) -> None:
        if text and not self.full():
            text = text[: MAX_EXTRA_CHARS - self.chars]
            self.items.append((part, kind, text))
            self.chars += len(text)

    def attachment(
        self,
        part: str,
        mimetype: str,
        content: bytes,
        parse_embedded: Callable[[bytes, str, int], None] | None,
        depth: int = 0,
    ) -> None:
        """File one attachment: an embedded message is parsed, HTML-looking bytes decoded."""
        if self.full():
            return
        if mimetype in ("message/rfc822", "message/global"):
            if parse_embedded is not None and depth < MAX_EMBEDDED_DEPTH:
                parse_embedded(content, part, depth + 1)
            return
        if looks_like_html(content):
            self.add(part, "html", html_text(content))
