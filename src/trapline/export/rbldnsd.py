"""Export the DNSBL listings as rbldnsd data, so the same lists can be served by rbldnsd.

``ip4set`` (the default) writes one list as an rbldnsd ``ip4set`` dataset: load it with
``rbldnsd -b 127.0.0.1/5353 senders.bl.example.org:ip4set:bl.zone``. ``combined`` writes every
list in one rbldnsd ``combined`` dataset with the same subzones, codes and TXT texts as
trapline's own server (IPv6 listings and networks included): ``bl.example.org:combined:bl.zone``.
Each entry carries its own A value and TXT text, identical to what trapline answers.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trapline.errors import UsageError
from trapline.serve.dnsbl.answer import ZoneConfig
from trapline.serve.dnsbl.run import zone_names
from trapline.serve.dnsbl.zones import (
    IP_LISTS,
    LIST_CODES,
    NEVER_LISTED,
    TEST_LISTED_V4,
    TEST_LISTED_V6,
    TEST_POINT_TXT,
    IpList,
    ListingData,
    listing_txt,
)

FORMATS = ("ip4set", "combined")


@dataclass(frozen=True, slots=True)
class RbldnsdExport:
    path: Path
    format: str
    entries: int
    skipped_v6: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "entries": self.entries,
            "skipped_v6": self.skipped_v6,
            "notes": self.notes,
        }


def _name(labels: tuple[bytes, ...]) -> str:
    return ".".join(label.decode("ascii") for label in labels)


def _header(zone: ZoneConfig, serial: int) -> list[str]:
    return [
        f"$TTL {zone.ttl}",
        # SOA and NS as trapline's own server gives them (RFC 2308 §3 negative caching TTL).
        f"$SOA {zone.negative_ttl} {_name(zone.ns[0])} {_name(zone.hostmaster)} {serial} "
        f"{zone.refresh} {zone.retry} {zone.expire} {zone.negative_ttl}",
        f"$NS {zone.negative_ttl} {' '.join(_name(n) for n in zone.ns)}",
    ]


def _clean(text: str) -> str:
    # rbldnsd expands "$" in a TXT template to the queried address; our texts name it literally.
    return text.replace("$", "%24").replace("\n", " ")


def _entries(ips: IpList, zone: ZoneConfig, family: int) -> list[str]:
    code = LIST_CODES[ips.name]
    lines = []
    for ip, last, hits in zip(ips.ips, ips.last_seen, ips.hits, strict=True):  # address texts
        if ip in NEVER_LISTED or (":" in ip) != (family == 6):
            continue
        url = zone.record_url.format(ip=ip) if zone.record_url else ""
        text = _clean(listing_txt(ips.name, hits, last, url))
        lines.append(f"{ip}/128 :{code}:{text}" if family == 6 else f"{ip} :{code}:{text}")
    test = f"{TEST_LISTED_V6}/128" if family == 6 else TEST_LISTED_V4
    lines.append(f"{test} :{code}:{TEST_POINT_TXT}")  # RFC 5782 §5 test point
    return lines


def render_ip4set(data: ListingData, zone: ZoneConfig, list_name: str) -> tuple[str, int, int]:
    """(text, entries, IPv6 listings left out) of one list as an ``ip4set`` dataset."""
    ips = data.lists.get(list_name) or IpList(list_name)
    lines = [
        f"# trapline {list_name} list, {len(ips.keys)} listings",
        *_header(zone, data.built_at),
    ]
    body = _entries(ips, zone, 4)
    skipped = sum(1 for key in ips.keys if len(key) > 16)  # 32 nibble labels: IPv6
    return "\n".join([*lines, *body]) + "\n", len(body), skipped


def render_combined(data: ListingData, zone: ZoneConfig) -> tuple[str, int]:
    """(text, entries) of every list as one rbldnsd ``combined`` dataset (subzones + apex)."""
    lines = [
        f"# trapline DNSBL, every list; {data.count()} listings",
        *_header(zone, data.built_at),
    ]
    count = 0
    for name in IP_LISTS:
        ips = data.lists.get(name) or IpList(name)
        for family, kind in ((4, "ip4set"), (6, "ip6trie")):
            body = _entries(ips, zone, family)
            if name != "senders":
                # The apex answers its test point once, as 127.0.0.2 (from senders); the
                # list's own subzone answers it with the list's code.
                lines += [f"$DATASET {kind}:{name}{family}t {name}", body.pop()]
            lines += [f"$DATASET {kind}:{name}{family} {name} @", *body]
            count += len(body)
    nets = data.networks
    for family, kind in ((4, "ip4trie"), (6, "ip6trie")):
        lines.append(f"$DATASET {kind}:networks{family} networks @")
        for prefix, asn, last, hits in zip(
            nets.prefixes, nets.asns, nets.last_seen, nets.hits, strict=True
        ):
            if (":" in prefix) != (family == 6):
                continue
            # rbldnsd puts the queried address where the template has "$", as trapline does.
            text = _clean(listing_txt("networks", hits, last, "", f"{prefix} AS{asn}, "))
            if zone.record_url:
                text += "; " + _clean(zone.record_url).replace("{ip}", "$")
            lines.append(f"{prefix} :{LIST_CODES['networks']}:{text}")
            count += 1
    return "\n".join(lines) + "\n", count


def export_rbldnsd(
    data: ListingData,
    settings: dict[str, Any],
    out: Path,
    *,
    fmt: str = "ip4set",
    list_name: str = "senders",
) -> RbldnsdExport:
    """Write ``data`` to ``out`` atomically (a reload-safe replace for a running rbldnsd)."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if list_name not in IP_LISTS:
        raise UsageError(f"--list {list_name!r}: use one of {', '.join(IP_LISTS)}")
    zone = ZoneConfig.from_settings(zone_names(settings)[0], settings)
    notes: list[str] = []
    skipped = 0
    if fmt == "ip4set":
        text, entries, skipped = render_ip4set(data, zone, list_name)
        if skipped:
            notes.append(
                f"{skipped} IPv6 listings left out (ip4set is IPv4 only); use --format combined"
            )
    else:
        text, entries = render_combined(data, zone)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o644 & ~umask)  # rbldnsd reads it as its own unprivileged user
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return RbldnsdExport(out, fmt, entries, skipped, notes)
