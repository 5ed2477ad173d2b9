"""``Responder.answer(query) -> response``: the whole DNS behaviour, without sockets.

``answer_plain`` is the statement of what the server does, rule by rule with the RFC sections;
``answer`` adds a fast path for the common packet (one A query for an address in a list zone,
no EDNS) that builds the response from the query bytes, and falls back to ``answer_plain`` for
everything else. Tests hold the two to identical bytes.

Zones: the apex (``bl.example.org``) answers from every list at once, one A record per list
that holds the address; ``senders.``, ``dictionary.``, ``harvesters.``, ``networks.`` and
``httpbl.`` below it answer from one list each. docs/dnsbl.md lists the return codes.
"""

from __future__ import annotations

import ipaddress
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trapline.errors import UsageError
from trapline.serve.dnsbl import wire
from trapline.serve.dnsbl.zones import (
    IP_LISTS,
    LIST_CODES,
    TEST_POINT_TXT,
    ZoneIndex,
    key_address,
    key_ip,
    listing_txt,
)

SUBZONES = (*IP_LISTS, "networks", "httpbl")
_HTTPBL_KEY = re.compile(rb"[a-z]{12}")  # http:BL access keys: 12 lower-case letters
_A_FIXED = struct.Struct("!HHHIH")  # pointer, type, class, ttl, rdlength
_ONE_ANSWER = b"\x00\x01\x00\x01\x00\x00\x00\x00"  # qd an ns ar
# Header bytes 2-11 of a one-answer response: QR AA (+RD as asked), NOERROR, counts 1 1 0 0.
_SUBZONE_LABELS = frozenset(k.encode() for k in SUBZONES)
_CODE_BYTES = {k: ipaddress.IPv4Address(v).packed for k, v in LIST_CODES.items()}
_HIT_FLAGS = (b"\x84\x00" + _ONE_ANSWER, b"\x85\x00" + _ONE_ANSWER)
_ONE_AUTHORITY = b"\x00\x01\x00\x00\x00\x01\x00\x00"


@dataclass(frozen=True, slots=True)
class ZoneConfig:
    """One served zone apex with its SOA/NS data and answer settings."""

    apex: tuple[bytes, ...]
    ns: tuple[tuple[bytes, ...], ...]
    hostmaster: tuple[bytes, ...]
    ttl: int = 300
    negative_ttl: int = 300
    refresh: int = 3600
    retry: int = 600
    expire: int = 604800
    record_url: str = ""
    httpbl_keys: frozenset[bytes] = frozenset()

    @classmethod
    def from_settings(cls, zone: str, settings: dict[str, Any]) -> ZoneConfig:
        from trapline.serve.dnsbl.settings import DnsblSettings

        apex = wire.text_labels(zone)
        if not apex or any(len(label) > wire.MAX_LABEL for label in apex):
            raise UsageError(f"--zone {zone!r} is not a DNS name; use for example bl.example.org")
        s = DnsblSettings.from_settings(settings)
        name = zone.strip().strip(".")
        return cls(
            apex=apex,
            ns=tuple(wire.text_labels(n) for n in (s.ns or (f"ns.{name}",))),
            hostmaster=wire.text_labels(s.hostmaster or f"hostmaster.{name}"),
            ttl=s.ttl,
            negative_ttl=s.negative_ttl,
            record_url=s.record_url,
            httpbl_keys=frozenset(k.lower().encode("ascii") for k in s.httpbl_keys),
        )


@dataclass(frozen=True, slots=True)
class _Found:
    records: list[tuple[int, bytes]]  # (type, rdata) owned by the query name
    rcode: int  # NOERROR or NXDOMAIN
    authority_soa: bool


class Responder:
    """Answers DNS queries for ``zones`` from a ``ZoneIndex`` that ``swap`` replaces atomically."""

    def __init__(
        self,
        zones: list[ZoneConfig],
        index: ZoneIndex,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not zones:
            raise UsageError("the DNSBL needs at least one --zone")
        self.zones = zones
        self.clock = clock
        # (suffix labels, zone, kind), longest first so subzones win over their apex.
        suffixes = [(z.apex, z, "apex") for z in zones]
        suffixes += [((k.encode(), *z.apex), z, k) for z in zones for k in SUBZONES]
        self._suffixes = sorted(suffixes, key=lambda s: -len(s[0]))
        self.swap(index)

    # --- data -----------------------------------------------------------------------------

    def swap(self, index: ZoneIndex) -> None:
        """Answer from ``index`` from the next packet on (one reference assignment)."""
        fast = []
        for z in self.zones:
            apex_len = len(wire.name_wire(z.apex))
            soa = self._soa_rr_tail(z, index)
            for kind in IP_LISTS:
                suffix = wire.name_wire((kind.encode(), *z.apex))
                a_rr = _A_FIXED.pack(0xC00C, wire.TYPE_A, wire.CLASS_IN, z.ttl, 4)
                a_rr += ipaddress.IPv4Address(LIST_CODES[kind]).packed
                fast.append((suffix, len(suffix), index.lists[kind], a_rr, soa, apex_len))
        apexes = []
        for z in self.zones:
            suffix = wire.name_wire(z.apex)
            a_fixed = _A_FIXED.pack(0xC00C, wire.TYPE_A, wire.CLASS_IN, z.ttl, 4)
            apexes.append((suffix, len(suffix), a_fixed, self._soa_rr_tail(z, index)))
        self._state = (index, fast, apexes)

    @property
    def index(self) -> ZoneIndex:
        return self._state[0]

    def _soa_rdata(self, z: ZoneConfig, index: ZoneIndex) -> bytes:
        return wire.soa_rdata(
            wire.name_wire(z.ns[0]),
            wire.name_wire(z.hostmaster),
            index.built_at & 0xFFFFFFFF,  # serial: the build time, newer on every reload
            z.refresh,
            z.retry,
            z.expire,
            z.negative_ttl,
        )

    def _soa_rr_tail(self, z: ZoneConfig, index: ZoneIndex) -> bytes:
        # RFC 2308 §3: a negative answer's SOA TTL is min(SOA TTL, MINIMUM); both are ours.
        rdata = self._soa_rdata(z, index)
        return (
            struct.pack("!HHIH", wire.TYPE_SOA, wire.CLASS_IN, z.negative_ttl, len(rdata)) + rdata
        )

    # --- the fast path ------------------------------------------------------------------------

    def answer(self, data: bytes, limit: int = wire.UDP_PLAIN) -> bytes | None:
        """The response to ``data`` (None: drop it). ``limit``: largest UDP answer, or 65535 (TCP)."""
        # One question, no other records, QR=0, opcode 0: an A/IN query in an IP list zone.
        if data[4:12] == b"\x00\x01\x00\x00\x00\x00\x00\x00" and not data[2] & 0xF8:
            end = data.find(b"\x00", 12) + 1
            if end and len(data) == end + 4 and data[end:] == b"\x00\x01\x00\x01":
                name = data[12:end].lower()
                fast = self._state[1]
                for suffix, slen, ips, a_rr, soa, apex_len in fast:
                    if len(name) > slen and name.endswith(suffix):
                        key = name[:-slen]
                        i = (
                            ips.keys.get(key, -1)
                            if ips.expires is None
                            else ips.find(key, self.clock())
                        )
                        if i >= 0:
                            return data[:2] + _HIT_FLAGS[data[2] & 0x01] + data[12:] + a_rr
                        # Not listed: NXDOMAIN, once the name is known to be well formed
                        # (the dict hit above proves it for listed names).
                        key_end = end - slen
                        pos = 12
                        while pos < key_end:
                            if data[pos] > wire.MAX_LABEL:
                                pos = -1
                                break
                            pos += data[pos] + 1
                        if pos != key_end or end - 12 > wire.MAX_NAME:
                            break
                        flags = bytes((0x84 | (data[2] & 0x01), wire.NXDOMAIN))
                        soa_at = wire.pointer(end - apex_len)
                        return data[:2] + flags + _ONE_AUTHORITY + data[12:] + soa_at + soa
                    if name.endswith(suffix):
                        break
                else:
                    reply = self._fast_apex(data, end, name)
                    if reply is not None:
                        return reply
        return self.answer_plain(data, limit)

    def _fast_apex(self, data: bytes, end: int, name: bytes) -> bytes | None:
        """An A/IN query under a zone apex: one A per list holding the name (None: not handled)."""
        index, _fast, apexes = self._state
        for suffix, slen, a_fixed, soa in apexes:
            if len(name) <= slen or not name.endswith(suffix):
                continue
            key_end = end - slen
            if end - 12 > wire.MAX_NAME:
                return None
            labels = []
            pos = 12
            while pos < key_end:  # the name must be well formed up to the apex
                n = data[pos]
                if n > wire.MAX_LABEL:
                    return None
                labels.append(name[pos - 11 : pos - 11 + n])
                pos += n + 1
            if pos != key_end or labels[-1] in _SUBZONE_LABELS:
                return None  # malformed, or in a list zone the fast path does not answer
            key = name[: key_end - 12]
            now = self.clock()
            answers = b""
            count = 0
            for kind in IP_LISTS:
                ips = index.lists[kind]
                i = ips.find(key, now)
                # The apex answers its RFC 5782 test point once, as 127.0.0.2 (senders).
                if i >= 0 and (kind == "senders" or not ips.is_test_point(i)):
                    answers += a_fixed + _CODE_BYTES[kind]
                    count += 1
            if index.networks.size:
                addr = key_address(tuple(labels))
                if addr is not None and index.networks.find(addr, now) >= 0:
                    answers += a_fixed + _CODE_BYTES["networks"]
                    count += 1
            rd = data[2] & 0x01
            if count:
                counts = struct.pack("!HHHH", 1, count, 0, 0)
                return data[:2] + bytes((0x84 | rd, 0)) + counts + data[12:] + answers
            soa_at = wire.pointer(end - slen)
            flags = bytes((0x84 | rd, wire.NXDOMAIN))
            return data[:2] + flags + _ONE_AUTHORITY + data[12:] + soa_at + soa
        return None

    # --- the statement of behaviour ---------------------------------------------------------------

    def answer_plain(self, data: bytes, limit: int = wire.UDP_PLAIN) -> bytes | None:
        """Every rule, in order; ``answer`` must return the same bytes."""
        if len(data) < 12:
            return None  # no header: nothing to answer to
        if data[2] & 0x80:
            return None  # a response, not a query: answering could start a packet loop
        try:
            q = wire.parse_query(data)
        except wire.WireError as exc:
            # RFC 1035 §4.1.1: FORMERR/NOTIMP with the query's id and no question.
            flags = wire.QR | ((data[2] << 8) & wire.RD) | exc.rcode
            return wire.header(int.from_bytes(data[:2], "big"), flags, 0, 0, 0, 0)
        opt = b""
        if q.edns_size is not None:
            if q.edns_version > 0:
                # RFC 6891 §6.1.3: unknown version → BADVERS (upper RCODE bits in the OPT).
                flags = wire.QR | (q.flags & wire.RD)
                return (
                    wire.header(q.id, flags, 1, 0, 0, 1)
                    + q.question
                    + wire.opt_rr(wire.EDNS_SIZE, wire.BADVERS >> 4)
                )
            opt = wire.opt_rr(wire.EDNS_SIZE)
            if limit < 65535:
                limit = min(max(wire.UDP_PLAIN, q.edns_size), wire.EDNS_SIZE)
        base_flags = wire.QR | (q.flags & wire.RD)
        if q.qclass not in (wire.CLASS_IN, wire.CLASS_ANY):
            return self._build(q, base_flags | wire.REFUSED, [], [], opt, limit)
        matched = self._match(q.labels)
        if matched is None:
            # Not our zone: REFUSED (RFC 1035 §4.1.1), never recursion.
            return self._build(q, base_flags | wire.REFUSED, [], [], opt, limit)
        zone, kind, rel = matched
        if q.qtype in (wire.TYPE_AXFR, wire.TYPE_IXFR):
            return self._build(q, base_flags | wire.REFUSED, [], [], opt, limit)
        found = self._resolve(zone, kind, rel, q.qtype)
        answers = [
            wire.rr(wire.pointer(12), t, z_ttl, rdata)
            for t, rdata, z_ttl in (
                (
                    t,
                    rdata,
                    zone.ttl if t not in (wire.TYPE_SOA, wire.TYPE_NS) else zone.negative_ttl,
                )
                for t, rdata in found.records
            )
        ]
        authority = []
        if found.authority_soa:
            # RFC 2308 §3 (negative caching): the zone's SOA in the authority section; its
            # owner is the apex, a pointer into the question name.
            apex_at = 12 + sum(
                len(label) + 1 for label in q.labels[: len(q.labels) - len(zone.apex)]
            )
            authority.append(wire.pointer(apex_at) + self._soa_rr_tail(zone, self.index))
        flags = base_flags | wire.AA | found.rcode
        return self._build(q, flags, answers, authority, opt, limit)

    def _build(
        self,
        q: wire.Query,
        flags: int,
        answers: list[bytes],
        authority: list[bytes],
        opt: bytes,
        limit: int,
    ) -> bytes:
        body = q.question + b"".join(answers) + b"".join(authority)
        ar = 1 if opt else 0
        packet = wire.header(q.id, flags, 1, len(answers), len(authority), ar) + body + opt
        if len(packet) > limit:
            # RFC 1035 §4.2.1 / RFC 2181 §9: too big for UDP → TC, the client retries over TCP.
            return wire.header(q.id, flags | wire.TC, 1, 0, 0, ar) + q.question + opt
        return packet

    def _match(self, labels: tuple[bytes, ...]) -> tuple[ZoneConfig, str, tuple[bytes, ...]] | None:
        for suffix, zone, kind in self._suffixes:
            n = len(suffix)
            if len(labels) >= n and labels[len(labels) - n :] == suffix:
                return zone, kind, labels[: len(labels) - n]
        return None

    def _resolve(self, zone: ZoneConfig, kind: str, rel: tuple[bytes, ...], qtype: int) -> _Found:
        index, now = self.index, self.clock()
        want_a = qtype in (wire.TYPE_A, wire.TYPE_ANY)
        want_txt = qtype in (wire.TYPE_TXT, wire.TYPE_ANY)
        if not rel:
            if kind != "apex":
                return _Found([], wire.NOERROR, True)  # a list's own name: exists, no data
            records: list[tuple[int, bytes]] = []
            if qtype in (wire.TYPE_SOA, wire.TYPE_ANY):
                records.append((wire.TYPE_SOA, self._soa_rdata(zone, index)))
            if qtype in (wire.TYPE_NS, wire.TYPE_ANY):
                records += [(wire.TYPE_NS, wire.name_wire(n)) for n in zone.ns]
            return _Found(records, wire.NOERROR, not records)
        hits: list[tuple[str, str]] = []  # (A text, TXT text) per list holding the name
        if kind == "httpbl":
            octets = self._httpbl(zone, index, rel, now)
            if octets is None:
                return _Found([], wire.NXDOMAIN, True)
            records = [(wire.TYPE_A, octets)] if want_a else []
            return _Found(records, wire.NOERROR, not records)
        key = wire.name_wire(rel)[:-1]
        for name in IP_LISTS if kind == "apex" else (kind,) if kind in IP_LISTS else ():
            ips = index.lists[name]
            i = ips.find(key, now)
            # The apex answers its RFC 5782 test point once, as 127.0.0.2 (the senders code).
            if i >= 0 and not (kind == "apex" and name != "senders" and ips.is_test_point(i)):
                hits.append((LIST_CODES[name], self._txt(zone, name, key_ip(key), ips, i)))
        if kind in ("apex", "networks"):
            addr = key_address(rel)
            row = index.networks.find(addr, now) if addr is not None else -1
            if row >= 0:
                hits.append((LIST_CODES["networks"], self._net_txt(zone, index, row, str(addr))))
        if not hits:
            return _Found([], wire.NXDOMAIN, True)
        records = []
        if want_a:
            records += [(wire.TYPE_A, ipaddress.IPv4Address(a).packed) for a, _ in hits]
        if want_txt:
            records += [(wire.TYPE_TXT, wire.txt_rdata(t)) for _, t in hits]
        return _Found(records, wire.NOERROR, not records)

    def _httpbl(
        self, zone: ZoneConfig, index: ZoneIndex, rel: tuple[bytes, ...], now: float
    ) -> bytes | None:
        # key.d.c.b.a.zone (http:BL API documentation): the key first, then the reversed IPv4.
        if len(rel) != 5:
            return None
        key = rel[0]
        if zone.httpbl_keys:
            if key not in zone.httpbl_keys:
                return None
        elif not _HTTPBL_KEY.fullmatch(key):
            return None
        return index.httpbl.octets(wire.name_wire(rel[1:])[:-1], now)

    def _txt(self, zone: ZoneConfig, name: str, ip: str, ips: Any, i: int) -> str:
        if ips.is_test_point(i):
            return TEST_POINT_TXT
        url = zone.record_url.format(ip=ip) if zone.record_url else ""
        return listing_txt(name, ips.hits[i], ips.last_seen[i], url)

    def _net_txt(self, zone: ZoneConfig, index: ZoneIndex, row: int, ip: str) -> str:
        nets = index.networks.data
        url = zone.record_url.format(ip=ip) if zone.record_url else ""
        detail = f"{nets.prefixes[row]} AS{nets.asns[row]}, "
        return listing_txt("networks", nets.hits[row], nets.last_seen[row], url, detail)
