"""What a MIME parser produces, shared by the fast parser and the stdlib fallback: the per-message
limits (``ParseLimits``), the extracted ``Fields`` and the ``cap`` that enforces a limit."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from trapline.ingest.embedded import ExtraTexts
from trapline.model import Address, Attachment


@dataclass(slots=True, frozen=True)
class ParseLimits:
    """Caps on work and memory per message, so one hostile message cannot stall a batch."""

    max_headers: int = 500
    max_header_value: int = 8192  # chars kept per header value
    max_recipients: int = 1000  # per To / Cc
    max_urls: int = 500
    max_attachments: int = 200
    max_parts: int = 1000  # MIME leaves walked by the fallback parser
    max_depth: int = 300  # MIME nesting walked by the fallback parser (the fast one stops at 256)
    # The stdlib fallback walks bodies only of payloads up to this size (its cost is lines
    # times nesting depth); larger ones get fast_mail_parser's lazy mode, else headers only.
    max_stdlib_bytes: int = 512 * 1024
    max_chunk_bytes: int = 16 * 1024 * 1024  # message bytes per fast-parser call in parse_many
    max_body_chars: int = 1_000_000  # text and html kept on the record (each)
    max_html_render: int = 1_000_000  # html chars rendered to text and scanned for links


DEFAULT_LIMITS = ParseLimits()


@dataclass(slots=True)
class Fields:
    """What either MIME parser extracted, before the shared assembly step in ``parse``."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    received: list[str] = field(default_factory=list)
    message_id: str | None = None
    subject: str | None = None
    from_: Address = field(default_factory=lambda: Address(None, None, None))
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    date: datetime | None = None
    date_present: bool = False
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    extra: ExtraTexts = field(default_factory=ExtraTexts)  # URL-bearing texts beyond the body


def cap(value: str, limit: int, defects: list[str]) -> str:
    """``value`` cut to ``limit`` chars, noting the cut once per message."""
    if len(value) > limit:
        if "header-value-truncated" not in defects:
            defects.append("header-value-truncated")
        return value[:limit]
    return value
