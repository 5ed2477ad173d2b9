"""Redaction for reports meant to be shared: trap addresses and local paths stay home.

A dossier quotes real headers as evidence. Their recipient headers name the trap addresses
(publishing one burns the trap and tells the spammer which list leaked), and import sources are
paths on the analyst's machine. Pure functions: text in, redacted text out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePath

REDACTED = "[redacted address]"
# Headers that name the recipient (RFC 5322 §3.6.3, and what MTAs add on delivery).
RECIPIENT_HEADERS = frozenset(
    {"to", "cc", "bcc", "delivered-to", "x-original-to", "envelope-to", "x-envelope-to",
     "apparently-to", "x-rcpt-to", "resent-to", "resent-cc"}
)  # fmt: skip
_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# "for <addr>" in a Received line names the envelope recipient.
_FOR = re.compile(r"(\bfor\s+<?)([^\s<>;]+@[^\s<>;]+)(>?)", re.IGNORECASE)


def redact_headers(
    text: str, trap_addresses: Iterable[str] = (), trap_domains: Iterable[str] = ()
) -> str:
    """``text`` (a header block) with recipient addresses, Received ``for`` addresses, the
    given trap addresses and any address on a trap domain replaced by ``REDACTED``."""
    known = {a.lower() for a in trap_addresses if a}
    domains = tuple(d.lower().lstrip(".") for d in trap_domains if d)

    def is_trap(addr: str) -> bool:
        low = addr.lower()
        host = low.rpartition("@")[2]
        return low in known or any(host == d or host.endswith("." + d) for d in domains)

    # Across line folds too: "for" may end one line and the address start the next.
    text = _FOR.sub(lambda m: m.group(1) + REDACTED + m.group(3), text)
    out: list[str] = []
    current = ""
    for line in text.split("\n"):
        if line[:1] not in (" ", "\t"):
            current = line.split(":", 1)[0].strip().lower() if ":" in line else ""
        if current in RECIPIENT_HEADERS:
            line = _ADDRESS.sub(REDACTED, line)
        else:
            line = _ADDRESS.sub(lambda m: REDACTED if is_trap(m.group(0)) else m.group(0), line)
        out.append(line)
    return "\n".join(out)


def redact_path(source: str) -> str:
    """A file path reduced to its name (``/home/ana/feeds/asnames.json`` → ``asnames.json``);
    anything that is not a path (``bundled``, a URL) is kept."""
    if "/" not in source and "\\" not in source:
        return source
    if "://" in source:
        return source
    return PurePath(source).name or source
