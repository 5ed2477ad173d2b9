"""Listing data and the lookup indexes the DNSBL answers from.

``ListingData`` is what the store says (plain lists, picklable); ``ZoneIndex`` is the same data
shaped for per-packet lookups and is immutable once built, so a reload builds a new one and
swaps one reference while queries keep being answered from the old one.

Names under a zone are keyed by the wire form of their labels exactly as they arrive in a
query: ``4.3.2.1`` is the key ``b"\\x014\\x013\\x012\\x011"``. A query is answered with one dict
lookup on a slice of the packet, and names that are not a canonical address (leading zeros,
upper-case hex) are simply absent (NXDOMAIN), as RFC 5782 §2.1/§2.4 names are canonical.
"""

from __future__ import annotations

import ipaddress
import math
from array import array
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import UTC, datetime

# Spamhaus-style return codes, one per list (docs/dnsbl.md). The apex zone answers with one A
# record per list that holds the address, as zen.spamhaus.org does.
LIST_CODES: dict[str, str] = {
    "senders": "127.0.0.2",
    "dictionary": "127.0.0.3",
    "harvesters": "127.0.0.4",
    "networks": "127.0.0.9",
}
IP_LISTS = ("senders", "dictionary", "harvesters")
LIST_LABELS = {
    "senders": "spam source",
    "dictionary": "dictionary attacker",
    "harvesters": "address harvester",
    "networks": "network of a top-ranked AS",
}

# RFC 5782 §5: test points every IP-based DNSxL must (not) list.
TEST_LISTED_V4 = "127.0.0.2"
TEST_UNLISTED_V4 = "127.0.0.1"
TEST_LISTED_V6 = "::ffff:7f00:2"
TEST_UNLISTED_V6 = "::ffff:7f00:1"
NEVER_LISTED = frozenset({TEST_UNLISTED_V4, TEST_UNLISTED_V6, "::ffff:127.0.0.1"})

# http:BL type bits (Project Honey Pot's http:BL API documentation).
HTTPBL_SUSPICIOUS = 1
HTTPBL_HARVESTER = 2
HTTPBL_COMMENT_SPAMMER = 4


_OCTET_LABEL = {str(i): bytes((len(str(i)),)) + str(i).encode() for i in range(256)}


TEST_POINT_TXT = "RFC 5782 test point"


def listing_txt(list_name: str, hits: int, last_seen: int, url: str, detail: str = "") -> str:
    """The TXT answer for one listing: what kind of evidence, how much, when, where to read it."""
    seen = datetime.fromtimestamp(last_seen, UTC).strftime("%Y-%m-%d %H:%MZ")
    what = "pieces of evidence" if list_name == "networks" else "trap hits"
    text = f"{LIST_LABELS[list_name]}: {detail}{hits} {what}, last seen {seen}"
    return f"{text}; {url}" if url else text


def reverse_key(ip: str) -> bytes:
    """Wire-form labels of the DNSxL name of ``ip`` without the zone (RFC 5782 §2.1, §2.4)."""
    parts = ip.split(".")
    if len(parts) == 4:  # canonical dotted quad: the common case, without ipaddress
        try:
            return b"".join([_OCTET_LABEL[p] for p in reversed(parts)])
        except KeyError:
            pass
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        labels = str(addr).split(".")[::-1]
    else:
        labels = list(addr.exploded.replace(":", "")[::-1])  # nibbles, lower-case hex
    return b"".join(bytes((len(x),)) + x.encode("ascii") for x in labels)


def key_address(key: tuple[bytes, ...]) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a relative name stands for, or None when it is not one (strictly canonical)."""
    if len(key) == 4:
        octets = []
        for label in reversed(key):
            if not label.isdigit() or len(label) > 3 or (len(label) > 1 and label[0:1] == b"0"):
                return None
            value = int(label)
            if value > 255:
                return None
            octets.append(value)
        return ipaddress.IPv4Address(bytes(octets))
    if len(key) == 32:
        nibbles = b"".join(reversed(key))
        if any(c not in b"0123456789abcdef" for c in nibbles):
            return None
        return ipaddress.IPv6Address(int(nibbles, 16))
    return None


def key_ip(key: bytes) -> str:
    """The address text of a reversed-name key (``reverse_key`` backwards)."""
    labels = []
    pos = 0
    while pos < len(key):
        end = pos + 1 + key[pos]
        labels.append(key[pos + 1 : end].decode("ascii"))
        pos = end
    if len(labels) == 4:
        return ".".join(reversed(labels))
    return str(ipaddress.IPv6Address(int("".join(reversed(labels)), 16)))


@dataclass(frozen=True, slots=True)
class IpList:
    """Listed addresses of one list as reversed-name keys, with epoch seconds and trap hits.

    Keys instead of address texts: the store computes them (SQL) and the index uses them as they
    are, so a million listings cost one bytes object each.
    """

    name: str
    keys: list[bytes] = field(default_factory=list)
    last_seen: array[int] = field(default_factory=lambda: array("q"))
    hits: array[int] = field(default_factory=lambda: array("q"))

    @classmethod
    def from_ips(cls, name: str, ips: list[str], last_seen: list[int], hits: list[int]) -> IpList:
        return cls(name, [reverse_key(ip) for ip in ips], array("q", last_seen), array("q", hits))

    @property
    def ips(self) -> list[str]:
        return [key_ip(k) for k in self.keys]


@dataclass(frozen=True, slots=True)
class NetList:
    """Listed prefixes (CIDR text) with their AS, last evidence time and evidence count."""

    prefixes: list[str] = field(default_factory=list)
    asns: list[int] = field(default_factory=list)
    last_seen: list[int] = field(default_factory=list)
    hits: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class HttpblList:
    """Web visitors for the http:BL zone: address, type bits, last activity, trap hits."""

    ips: list[str] = field(default_factory=list)
    types: list[int] = field(default_factory=list)
    last_seen: list[int] = field(default_factory=list)
    hits: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ListingData:
    """Everything the DNSBL lists, as read from the store at ``built_at`` (epoch seconds)."""

    built_at: int
    max_age_s: int  # 0 = never expire
    lists: dict[str, IpList]
    networks: NetList = field(default_factory=NetList)
    httpbl: HttpblList = field(default_factory=HttpblList)

    def count(self) -> int:
        return sum(len(v.keys) for v in self.lists.values()) + len(self.networks.prefixes)


class IpIndex:
    """One IP list, keyed by reversed-name wire labels; expiry checked at answer time."""

    __slots__ = ("expires", "hits", "keys", "last_seen", "n_listed", "name")

    def __init__(self, data: IpList, max_age_s: int) -> None:
        self.name = data.name
        # RFC 5782 §5: 127.0.0.1 (and its IPv6 form) must never be listed, whatever the store
        # says (trap mail sent from loopback has it as origin); the test points always are.
        keys = [k for k in data.keys if k not in _NEVER_KEYS]
        if len(keys) < len(data.keys):
            rows = [i for i, k in enumerate(data.keys) if k not in _NEVER_KEYS]
            data = IpList(
                data.name,
                keys,
                array("q", [data.last_seen[i] for i in rows]),
                array("q", [data.hits[i] for i in rows]),
            )
        self.n_listed = len(keys)
        self.last_seen = array("q", data.last_seen)
        self.last_seen.extend((0, 0))
        self.hits = array("q", data.hits)
        self.hits.extend((0, 0))
        # None = nothing expires (max age 0); the test points (last rows) never do.
        self.expires: array[int] | None = None
        if max_age_s:
            self.expires = array("q", [t + max_age_s for t in data.last_seen])
            self.expires.extend((0, 0))
        self.keys: dict[bytes, int] = dict(zip(keys, range(len(keys)), strict=True))
        self.keys[_TEST_KEYS[0]] = self.n_listed
        self.keys[_TEST_KEYS[1]] = self.n_listed + 1

    def find(self, key: bytes, now: float) -> int:
        """Row of the listing under ``key`` still valid at ``now``, else -1."""
        i = self.keys.get(key, -1)
        if i >= 0 and self.expires is not None:
            expires = self.expires[i]
            if expires and now >= expires:
                return -1
        return i

    def is_test_point(self, i: int) -> bool:
        return i >= self.n_listed


class NetIndex:
    """Listed prefixes as disjoint sorted integer ranges per address family."""

    __slots__ = ("data", "expires", "ranges", "size")

    def __init__(self, data: NetList, max_age_s: int) -> None:
        self.data = data
        self.expires = [t + max_age_s if max_age_s else 0 for t in data.last_seen]
        spans: dict[int, list[tuple[int, int, int]]] = {4: [], 6: []}
        for i, text in enumerate(data.prefixes):
            net = ipaddress.ip_network(text, strict=False)
            spans[net.version].append((int(net.network_address), int(net.broadcast_address), i))
        # Nested or overlapping prefixes merge into the covering range (the earlier row wins).
        self.ranges: dict[int, tuple[list[int], list[int], list[int]]] = {}
        for family, items in spans.items():
            starts: list[int] = []
            ends: list[int] = []
            rows: list[int] = []
            for lo, hi, row in sorted(items):
                if ends and lo <= ends[-1]:
                    ends[-1] = max(ends[-1], hi)
                    continue
                starts.append(lo)
                ends.append(hi)
                rows.append(row)
            self.ranges[family] = (starts, ends, rows)
        self.size = len(data.prefixes)

    def find(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address, now: float) -> int:
        starts, ends, rows = self.ranges[addr.version]
        value = int(addr)
        at = bisect_right(starts, value) - 1
        if at < 0 or value > ends[at]:
            return -1
        row = rows[at]
        expires = self.expires[row]
        return -1 if expires and now >= expires else row


def httpbl_score(hits: int) -> int:
    """Threat score 0-255, logarithmic in trap hits as http:BL describes it: about 25 for 100
    hits, 50 for 10,000, 75 for 1,000,000; at least 1 for anything listed."""
    if hits <= 1:
        return 1
    return max(1, min(255, round(12.5 * math.log10(hits))))


class HttpblIndex:
    """IPv4 visitors keyed by reversed-name wire labels (http:BL is IPv4 only)."""

    __slots__ = ("data", "expires", "keys", "scores")

    def __init__(self, data: HttpblList, max_age_s: int) -> None:
        self.data = data
        self.expires = [t + max_age_s if max_age_s else 0 for t in data.last_seen]
        self.scores = [httpbl_score(h) for h in data.hits]
        self.keys = {reverse_key(ip): i for i, ip in enumerate(data.ips) if ":" not in ip}

    def octets(self, key: bytes, now: float) -> bytes | None:
        """``127.days.score.type`` for the visitor under ``key``, or None."""
        test = HTTPBL_TEST_POINTS.get(key)
        if test is not None:
            return test
        i = self.keys.get(key, -1)
        if i < 0:
            return None
        expires = self.expires[i]
        if expires and now >= expires:
            return None
        days = max(0, min(255, int((now - self.data.last_seen[i]) // 86400)))
        return bytes((127, days, self.scores[i], self.data.types[i] & 0xFF))


def _httpbl_tests() -> dict[bytes, bytes]:
    # http:BL API documentation, "testing": these addresses answer with themselves.
    addrs = [f"127.1.1.{t}" for t in range(8)]
    addrs += [f"127.1.{s}.1" for s in (10, 20, 40, 80)]
    addrs += [f"127.{d}.1.1" for d in (10, 20, 40, 80)]
    return {reverse_key(a): ipaddress.IPv4Address(a).packed for a in addrs}


HTTPBL_TEST_POINTS = _httpbl_tests()
_TEST_KEYS = (reverse_key(TEST_LISTED_V4), reverse_key(TEST_LISTED_V6))
_NEVER_KEYS = frozenset(reverse_key(ip) for ip in NEVER_LISTED)


@dataclass(frozen=True, slots=True)
class ZoneIndex:
    """Every lookup structure of one build of the listing data."""

    built_at: int
    lists: dict[str, IpIndex]
    networks: NetIndex
    httpbl: HttpblIndex
    size: int


def build_index(data: ListingData) -> ZoneIndex:
    """Shape ``data`` for lookups (the slow part of a reload: runs off the answering path)."""
    lists = {name: IpIndex(data.lists.get(name, IpList(name)), data.max_age_s) for name in IP_LISTS}
    return ZoneIndex(
        data.built_at,
        lists,
        NetIndex(data.networks, data.max_age_s),
        HttpblIndex(data.httpbl, data.max_age_s),
        data.count(),
    )
