"""The trust boundary and the origin walk over a parsed Received chain.

Only headers written by hosts we trust can be believed; everything below the first untrusted
hop may be forged by the sender. So the walk starts at the top (our own receiver), moves down
while the *client* side of each hop is inside the boundary, and stops at the first hop whose
client is not: that client's address is the origin IP (the same idea as SpamAssassin's
trusted_networks, RFC 5321 §4.4 trace fields read from the top).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache

from trapline.errors import TrustSpecError
from trapline.model import Envelope, Hop, Origin

_Net = tuple[int, int, int]  # (version, first, last) as integers: cheap containment tests

# RFC 1918, RFC 6598 (CGNAT), RFC 1122 loopback / "this network", RFC 3927 link-local,
# RFC 4193 ULA, RFC 4291 loopback and link-local. Mail relayed inside these never left a LAN.
_DEFAULT_CIDRS = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "0.0.0.0/8",
    "169.254.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
)
_FETCH_PROTOCOLS = frozenset({"pop", "pop3", "pop3s", "imap", "imap4", "imaps", "imap4rev1"})
_FETCH_MARKERS = ("fetchmail", "getmail", "(single-drop)", "(multi-drop)")
_LOCAL_PROTOCOLS = frozenset({"local", "lmtp", "lmtpa", "lmtps", "uucp", "bsmtp", "internal"})
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "loopback", "127.0.0.1", "::1"})


@lru_cache(maxsize=65536)
def normalize_ip(text: str) -> str | None:
    """Canonical text of an IP address, or ``None`` when ``text`` is not one.

    Strips an ``IPv6:`` prefix (RFC 5321 §4.1.3 address literal) and turns IPv4-mapped IPv6
    (``::ffff:1.2.3.4``) into plain IPv4, so one host has one spelling in the store.
    """
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    text = text.strip("[]")
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


@lru_cache(maxsize=65536)
def _ip_key(ip: str) -> tuple[int, int]:
    addr = ipaddress.ip_address(ip)
    return addr.version, int(addr)


def _net(spec: str) -> _Net:
    net = ipaddress.ip_network(spec, strict=False)
    return net.version, int(net.network_address), int(net.broadcast_address)


@dataclass(frozen=True, slots=True)
class TrustBoundary:
    """Networks and host names whose Received headers we believe.

    ``names`` match exactly; ``suffixes`` (written ``.example.org``) match the domain and every
    host below it. Names are compared with a hop's reverse-DNS name, never with its HELO, because
    the HELO is whatever the client chose to say.
    """

    networks: tuple[_Net, ...] = ()
    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()

    @classmethod
    def from_specs(cls, specs: Iterable[str], *, include_defaults: bool = True) -> TrustBoundary:
        """Build from ``--trust`` values; private and loopback ranges are included by default."""
        nets = list(DEFAULT_TRUST.networks) if include_defaults else []
        names: set[str] = set()
        suffixes: list[str] = []
        for raw in specs:
            spec = raw.strip()
            if not spec:
                continue
            try:
                nets.append(_net(spec.removeprefix("IPv6:")))
                continue
            except ValueError:
                pass
            name = spec.lower().rstrip(".")
            label = name.lstrip(".")
            if not label or any(c.isspace() or c in "/[]()@,;" for c in label):
                raise TrustSpecError(f"--trust {raw!r} is not a CIDR, IP or host name")
            if name.startswith("."):
                suffixes.append("." + label)
            else:
                names.add(label)
        return cls(tuple(dict.fromkeys(nets)), frozenset(names), tuple(dict.fromkeys(suffixes)))

    def contains_ip(self, ip: str | None) -> bool:
        if not ip:
            return False
        try:
            version, value = _ip_key(ip)
        except ValueError:
            return False
        return any(v == version and lo <= value <= hi for v, lo, hi in self.networks)

    def contains_name(self, name: str | None) -> bool:
        if not name:
            return False
        if name in self.names:
            return True
        return any(name.endswith(s) or name == s[1:] for s in self.suffixes)


DEFAULT_TRUST = TrustBoundary(networks=tuple(_net(c) for c in _DEFAULT_CIDRS))


def is_fetch_hop(hop: Hop) -> bool:
    """A POP3/IMAP pickup (fetchmail, getmail): the collector fetching its own mailbox."""
    if hop.protocol and hop.protocol.lower() in _FETCH_PROTOCOLS:
        return True
    low = hop.raw.lower()
    return any(marker in low for marker in _FETCH_MARKERS)


def _is_internal(hop: Hop, names: set[str], trust: TrustBoundary) -> bool:
    """A hop without a client IP that still stays inside one host or our own network."""
    if hop.from_helo is None and hop.from_rdns is None:
        return True  # "by host with local", Gmail's "by 2002:a05:...", qmail "invoked from network"
    if hop.protocol and (
        hop.protocol.lower() in _LOCAL_PROTOCOLS or "scanner" in hop.protocol.lower()
    ):
        return True  # local delivery, or a content filter (qmail-scanner) re-injecting mail
    if hop.from_helo and "@" in hop.from_helo:
        return True  # "from sender@example.com by mailhost": an envelope sender, not a host
    for name in (hop.from_rdns, hop.from_helo):
        if name and (
            name in _LOCAL_NAMES
            or name == hop.by_host
            or name in names
            or trust.contains_name(name)
        ):
            return True
    return False


def find_origin(
    hops: Sequence[Hop],
    trust: TrustBoundary = DEFAULT_TRUST,
    *,
    date: datetime | None = None,
    envelope: Envelope | None = None,
) -> tuple[tuple[Hop, ...], Origin]:
    """Mark trusted hops and find the origin IP and the received time.

    Walks from the top. A hop is trusted when its client is: an IP inside ``trust`` or learnt
    from a fetch hop, a reverse-DNS name inside ``trust``, a POP/IMAP fetch (the provider then
    joins the boundary), or a hop without client IP that stays local. The first other hop's
    client IP is the origin. Received time is that hop's timestamp (written by our receiver),
    else the nearest trusted timestamp above it, else ``date``. An SMTP ``envelope`` is ground
    truth and overrides both.
    """
    marked: list[Hop] = []
    names: set[str] = set()
    fetched_ips: set[str] = set()
    stop: int | None = None
    for hop in hops:
        ok = False
        if is_fetch_hop(hop):
            ok = True
            if hop.from_ip:
                fetched_ips.add(hop.from_ip)
        elif hop.from_ip is not None:
            ok = (
                trust.contains_ip(hop.from_ip)
                or hop.from_ip in fetched_ips
                or trust.contains_name(hop.from_rdns)
                or (hop.from_rdns is not None and hop.from_rdns in names and not _local(hop))
            )
        else:
            ok = _is_internal(hop, names, trust)
        if not ok:
            stop = len(marked)
            break
        marked.append(replace(hop, trusted=True))
        if is_fetch_hop(hop):
            # the mailbox provider is ours: its names are trusted for the hops below
            for name in (hop.from_rdns, hop.from_helo):
                if name and name not in _LOCAL_NAMES:
                    names.add(name)
    all_hops = tuple(marked) + tuple(hops[len(marked) :])

    if envelope is not None:
        if envelope.received_at is not None:
            return all_hops, Origin(envelope.peer_ip, None, envelope.received_at, "trap")
        return all_hops, Origin(envelope.peer_ip, None, date, "date" if date else "none")

    ip: str | None = None
    hop_index: int | None = None
    start: int  # position from which to look upward for a timestamp
    if stop is not None:
        start = stop
        ip = hops[stop].from_ip
        hop_index = hops[stop].index if ip else None
    else:
        start = len(hops) - 1
    for pos in range(start, -1, -1):
        ts = hops[pos].timestamp
        if ts is not None:
            return all_hops, Origin(ip, hop_index, ts, "received")
    return all_hops, Origin(ip, hop_index, date, "date" if date is not None else "none")


def _local(hop: Hop) -> bool:
    return hop.from_rdns in _LOCAL_NAMES
