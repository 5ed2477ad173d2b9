"""Host names: the registrable domain (eTLD+1, offline Public Suffix List) and IP literals.

One definition for URL hosts and the relay names of the trust walk.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from publicsuffixlist import PublicSuffixList


@lru_cache(maxsize=1)
def public_suffixes() -> PublicSuffixList:
    """The Public Suffix List bundled with the package: offline, and fixed for an install."""
    return PublicSuffixList(accept_unknown=False)


def is_ip_literal(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address."""
    # An IPv4 address ends in a digit and an IPv6 one holds ":"; anything else would only make
    # ``ipaddress`` raise, which is slow.
    if ":" not in host and not host[-1:].isdigit():
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=65536)
def registered_domain(host: str) -> str | None:
    """The registrable domain of ``host`` (eTLD+1 from the Public Suffix List), or ``None``.

    ``None`` for IP literals, bare public suffixes and names without a dot.
    """
    host = host.strip().strip("[]").rstrip(".").lower()
    if not host or "." not in host or is_ip_literal(host) or len(host) > 253:
        return None
    try:
        return public_suffixes().privatesuffix(host)
    except (ValueError, UnicodeError):
        return None
