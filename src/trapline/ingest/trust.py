"""The trust boundary and the origin walk over a parsed Received chain.

Only headers written by hosts we trust can be believed; everything below the first untrusted
hop may be forged by the sender. So the walk starts at the top (our own receiver), moves down
while the *client* side of each hop is inside the boundary, and stops at the first hop whose
client is not: that client's address is the origin IP (the same idea as SpamAssassin's
trusted_networks, RFC 5321 §4.4 trace fields read from the top).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from trapline.errors import TrustSpecError
from trapline.ingest.domains import registered_domain
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
_DIGITS = re.compile(r"\d+")
_SPEC_SPLIT = re.compile(r"[\s,]+")
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
    if _is_plain_ipv4(text):
        return text  # already canonical: what str(ip_address(text)) would give
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _is_plain_ipv4(text: str) -> bool:
    """Dotted quad of 0-255 without leading zeros (which ``ipaddress`` rejects anyway)."""
    parts = text.split(".")
    return len(parts) == 4 and all(
        0 < len(p) <= 3
        and p.isascii()
        and p.isdigit()
        and (p[0] != "0" or p == "0")
        and int(p) < 256
        for p in parts
    )


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
    # trust a relay whose reverse-DNS name is in the receiving host's own registered domain
    same_domain_relays: bool = True

    @classmethod
    def from_specs(cls, specs: Iterable[str], *, include_defaults: bool = True) -> TrustBoundary:
        """Build from ``--trust`` values; private and loopback ranges are included by default.

        A value may hold several specs separated by commas or spaces (config files and
        ``TRAPLINE_TRUST`` write lists that way).
        """
        nets = list(DEFAULT_TRUST.networks) if include_defaults else []
        names: set[str] = set()
        suffixes: list[str] = []
        for raw in (part for value in specs for part in _SPEC_SPLIT.split(value)):
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
            if not label or any(c in "/[]()@;:" for c in label):
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
    proto = hop.protocol.lower() if hop.protocol else ""
    if proto in _LOCAL_PROTOCOLS or proto.startswith("local") or "scanner" in proto:
        return True  # local delivery, or a content filter (qmail-scanner) re-injecting mail
    if hop.from_helo and "@" in hop.from_helo:
        return True  # "from sender@example.com by mailhost": an envelope sender, not a host
    if hop.from_helo == "mail" and "pickup service" in hop.raw.lower():
        return True  # IIS/Exchange "from mail pickup service by host": a local drop directory
    for name in (hop.from_rdns, hop.from_helo):
        if name and (
            name in _LOCAL_NAMES
            or name == hop.by_host
            or name in names
            or trust.contains_name(name)
        ):
            return True
    return False


def _walk(hops: Sequence[Hop], trust: TrustBoundary) -> tuple[int, int | None]:
    """(number of trusted hops from the top, position of the deepest same-domain relay or None)."""
    names: set[str] = set()
    fetched_ips: set[str] = set()
    tentative: int | None = None
    for pos, hop in enumerate(hops):
        if is_fetch_hop(hop):
            # POP/IMAP pickup from our own mailbox: the provider joins the boundary
            if hop.from_ip:
                fetched_ips.add(hop.from_ip)
            for name in (hop.from_rdns, hop.from_helo):
                if name and name not in _LOCAL_NAMES:
                    names.add(name)
            continue
        if hop.from_ip is None:
            if _is_internal(hop, names, trust):
                continue
            return pos, tentative
        if (
            trust.contains_ip(hop.from_ip)
            or hop.from_ip in fetched_ips
            or trust.contains_name(hop.from_rdns)
            or (hop.from_rdns is not None and hop.from_rdns in names)
        ):
            continue
        if trust.same_domain_relays and _same_domain_relay(hop):
            tentative = pos
            continue
        return pos, tentative
    return len(hops), tentative


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
    stop, tentative = _walk(hops, trust)
    if tentative is not None and (stop >= len(hops) or hops[stop].from_ip is None):
        # Nothing outside the domain handed it in: the deepest same-domain relay is where it
        # entered (Gmail to Gmail shows only Google's relay; mail generated inside the
        # organisation shows only its own hosts).
        stop = tentative
    all_hops = (*map(_trusted, hops[:stop]), *hops[stop:])

    if envelope is not None:
        if envelope.received_at is not None:
            return all_hops, Origin(envelope.peer_ip, None, envelope.received_at, "trap")
        return all_hops, Origin(envelope.peer_ip, None, date, "date" if date else "none")

    ip: str | None = None
    hop_index: int | None = None
    if stop < len(hops):
        ip = hops[stop].from_ip
        hop_index = hops[stop].index if ip else None
    # the receiver that accepted it from the origin, else the nearest trusted hop above it
    for pos in range(min(stop, len(hops) - 1), -1, -1):
        ts = hops[pos].timestamp
        if ts is not None:
            return all_hops, Origin(ip, hop_index, ts, "received")
    return all_hops, Origin(ip, hop_index, date, "date" if date is not None else "none")


def _trusted(h: Hop) -> Hop:
    # positional construction: dataclasses.replace costs several µs per call on this hot path
    return Hop(
        h.index, h.raw, h.from_helo, h.from_rdns, h.from_ip, h.by_host,
        h.protocol, h.smtp_id, h.for_addr, h.timestamp, True,
    )  # fmt: skip


def _same_domain_relay(hop: Hop) -> bool:
    """A relay inside the receiving host's own domain, by a name its receiver looked up.

    Organisations with public MX addresses (``mail1.monkey.org [65.23.81.153]`` handing to
    ``naughty.monkey.org``) would otherwise make their own MX the origin. The reverse-DNS name
    is written by the receiver (Postfix and sendmail confirm it forwards), so a sender cannot
    claim it without control of that domain's DNS. Generic access-line names that embed the
    address (``c-67-165-254-110.hsd1.co.comcast.net``) are customers, not relays.
    """
    rdns, by = hop.from_rdns, hop.by_host
    if not rdns or not by or rdns in _LOCAL_NAMES:
        return False
    domain = registered_domain(rdns)
    if domain is None or domain != registered_domain(by):
        return False
    if hop.from_ip and "." in hop.from_ip:
        octets = set(hop.from_ip.split("."))
        if len(octets & set(_DIGITS.findall(rdns))) >= 2:
            return False
    return True
