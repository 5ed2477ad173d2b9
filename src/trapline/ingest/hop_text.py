"""Field helpers both Received parsers share (the general one and its fast path): client-supplied
HELO names in comments, host-name cleaning, the first valid IP in a text."""

from __future__ import annotations

import re

from trapline.ingest.trust import normalize_ip

# IP candidates; every one is validated by ``ipaddress`` (garbage is not an IP).
_IP_CANDIDATE = re.compile(
    r"(?<![\w.-])(?:IPv6:)?([0-9A-Fa-f]*:[0-9A-Fa-f:.]*[0-9A-Fa-f]|\d{1,3}(?:\.\d{1,3}){3})(?![\w-]|\.\w)"
)
# Client-supplied names inside receiver comments: qmail "(HELO x)", Exim "helo=x". Their values
# are never the connecting IP, even when they look like one (``helo=[10.0.0.1]`` forgeries).
HELO_IN_COMMENT = re.compile(r"(?:\bHELO\s+|\bhelo=)(\[[^\]]*\]|[^\s()\]]+)", re.IGNORECASE)


def clean_name(name: str | None) -> str | None:
    """Host names compare lowercase without the trailing root dot (Gmail writes ``host.``)."""
    if not name:
        return None
    name = name.strip("[]<>;,").rstrip(".").lower()
    return name or None


def first_ip(text: str) -> str | None:
    """The first valid IP address in ``text`` (candidates that are not IPs are skipped)."""
    for m in _IP_CANDIDATE.finditer(text):
        ip = normalize_ip(m.group(1))
        if ip:
            return ip
    return None
