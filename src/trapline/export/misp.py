"""One MISP event (the JSON MISP imports and PyMISP loads) of what the traps saw.

Attributes: every spam sender (``ip-src``, with first/last seen and its AS in the comment), the
sending networks (``AS``), and each campaign's URL domains (``domain``) and subject
(``email-subject``); campaign membership as attribute tags ``trapline:campaign="c..."``. Ids are
UUIDv5, so a re-export updates the same event and attributes in MISP instead of adding copies.
Distribution 0 (this organisation only) by default: sharing wider is the analyst's decision.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from trapline import __version__
from trapline.export.evidence import Evidence

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://trapline.invalid/misp")
THREAT_LEVEL_LOW = "3"  # MISP: 1 high, 2 medium, 3 low, 4 undefined
ANALYSIS_COMPLETED = "2"
DISTRIBUTION_ORG_ONLY = "0"


def _uuid(key: str) -> str:
    return str(uuid.uuid5(NAMESPACE, key))


def _iso(when: datetime) -> str:
    return when.replace(tzinfo=None).isoformat(timespec="microseconds") + "+00:00"


def _epoch(when: datetime) -> str:
    return str(int((when - datetime(1970, 1, 1)).total_seconds()))


def build_event(ev: Evidence, *, info: str | None = None) -> dict[str, Any]:
    """The event as a JSON-ready dict ``{"Event": {...}}``."""
    stamp = _epoch(ev.generated_at)
    attributes: list[dict[str, Any]] = []

    def add(kind: str, category: str, value: str, comment: str, **extra: Any) -> None:
        attributes.append(
            {
                "uuid": _uuid(f"{kind}:{value}"),
                "type": kind,
                "category": category,
                "value": value,
                "to_ids": kind != "email-subject",
                "comment": comment,
                "distribution": "5",  # inherit the event's
                "timestamp": stamp,
                **extra,
            }
        )

    for s in ev.senders:
        seen: dict[str, Any] = {}
        if s.first_seen:
            seen["first_seen"] = _iso(s.first_seen)
            seen["last_seen"] = _iso(max(s.first_seen, s.last_seen or s.first_seen))
        tags = [{"name": f'trapline:campaign="{cid}"'} for cid in s.campaign_ids]
        where = f", AS{s.asn} {s.prefix or ''} ({s.snapshot_id})" if s.asn is not None else ""
        add(
            "ip-src",
            "Network activity",
            s.ip,
            f"spam sender: {s.messages} message(s){where}",
            Tag=tags,
            **seen,
        )
    for net in ev.networks:
        add(
            "AS",
            "Network activity",
            str(net.asn),
            f"{net.name or 'name unknown'}: {net.messages} spam message(s) from {net.senders} sender(s)",
        )
    domains: set[str] = set()
    for c in ev.campaigns:
        tag = [{"name": f'trapline:campaign="{c.id}"'}]
        for domain in c.domains:
            if domain in domains:
                continue  # MISP wants one attribute per value; the first campaign tags it
            domains.add(domain)
            add("domain", "Network activity", domain, f"linked from campaign {c.id}", Tag=tag)
        if c.subjects:
            attributes.append(
                {
                    "uuid": _uuid(f"email-subject:{c.id}"),
                    "type": "email-subject",
                    "category": "Payload delivery",
                    "value": c.subjects[0],
                    "to_ids": False,
                    "comment": f"subject template of campaign {c.id} ({c.size} messages)",
                    "distribution": "5",
                    "timestamp": stamp,
                    "Tag": tag,
                }
            )
    what = "" if ev.label == "all" else f"{ev.label} "
    return {
        "Event": {
            "uuid": _uuid("event"),
            "info": info
            or f"trapline: {len(ev.senders)} {what}senders in {len(ev.networks)} networks, "
            f"{len(ev.campaigns)} campaigns",
            "date": ev.generated_at.date().isoformat(),
            "threat_level_id": THREAT_LEVEL_LOW,
            "analysis": ANALYSIS_COMPLETED,
            "distribution": DISTRIBUTION_ORG_ONLY,
            "published": False,
            "timestamp": stamp,
            "Orgc": {"name": "trapline", "uuid": _uuid("org")},
            "Tag": [{"name": "tlp:amber"}, {"name": f"trapline:version={__version__}"}],
            "Attribute": attributes,
        }
    }
