"""A STIX 2.1 bundle of what the traps saw: campaigns, sender indicators, ASes, sightings.

Plain JSON built here (no STIX library at run time); the tests validate every bundle with the
``stix2`` library. Identifiers are deterministic, so exporting the same store twice gives the same
ids and a consumer updates objects instead of piling up copies: cyber-observables use the STIX
2.1 UUIDv5 rule (§2.9, ID-contributing properties), domain objects a UUIDv5 in trapline's own
namespace.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from datetime import datetime
from typing import Any

from trapline import __version__
from trapline.export.evidence import CampaignInfo, Evidence, Sender

# STIX 2.1 §2.9: the namespace for deterministic cyber-observable ids.
SCO_NAMESPACE = uuid.UUID("00abedb4-aa42-466c-9c01-fed23315a9b7")
# Trapline's namespace for its domain objects (uuid5 of the URL namespace and "trapline").
SDO_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://trapline.invalid/stix")
MAX_COUNT = 999_999_999  # STIX 2.1 §5.5: sighting count is at most 999,999,999


def timestamp(when: datetime) -> str:
    """STIX timestamp (RFC 3339, UTC, ``Z``); the store keeps naive UTC."""
    return when.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def sco_id(kind: str, contributing: dict[str, Any]) -> str:
    """``kind--uuid5`` over the canonical JSON (RFC 8785) of the ID-contributing properties."""
    text = json.dumps(contributing, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{kind}--{uuid.uuid5(SCO_NAMESPACE, text)}"


def sdo_id(kind: str, key: str) -> str:
    return f"{kind}--{uuid.uuid5(SDO_NAMESPACE, f'{kind}:{key}')}"


def _literal(value: str) -> str:
    """A STIX pattern string literal: backslash and quote escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ip_kind(ip: str) -> str:
    return "ipv6-addr" if ipaddress.ip_address(ip).version == 6 else "ipv4-addr"


def build_bundle(ev: Evidence) -> dict[str, Any]:
    """The bundle as a JSON-ready dict."""
    now = timestamp(ev.generated_at)
    identity = sdo_id("identity", "trapline")
    common = {"spec_version": "2.1", "created": now, "modified": now, "created_by_ref": identity}
    objects: list[dict[str, Any]] = [
        {
            "type": "identity",
            "spec_version": "2.1",
            "id": identity,
            "created": now,
            "modified": now,
            "name": "trapline spam traps",
            "identity_class": "system",
            "description": f"Spam traps and archives analysed by trapline {__version__}.",
        }
    ]
    as_ids: dict[int, str] = {}
    for net in ev.networks:
        as_ids[net.asn] = sco_id("autonomous-system", {"number": net.asn})
        obj: dict[str, Any] = {
            "type": "autonomous-system",
            "spec_version": "2.1",
            "id": as_ids[net.asn],
            "number": net.asn,
        }
        if net.name:
            obj["name"] = net.name
        objects.append(obj)
    campaign_ids = {c.id: sdo_id("campaign", c.id) for c in ev.campaigns}
    for c in ev.campaigns:
        objects.append({"type": "campaign", "id": campaign_ids[c.id], **common, **_campaign(c)})
    for s in ev.senders:
        objects.extend(_sender(s, ev, common, identity, as_ids, campaign_ids))
    for c in ev.campaigns:
        objects.extend(_domains(c, ev, common, campaign_ids[c.id]))
    return {"type": "bundle", "id": sdo_id("bundle", now), "objects": objects}


def _campaign(c: CampaignInfo) -> dict[str, Any]:
    subject = c.subjects[0] if c.subjects else None
    out: dict[str, Any] = {
        "name": f"spam campaign {c.id}" + (f": {subject[:120]}" if subject else ""),
        "description": f"{c.size} near-duplicate spam messages"
        + (f", URLs on {', '.join(c.domains[:10])}" if c.domains else "")
        + (f", sent from AS{', AS'.join(str(a) for a in c.asns[:10])}" if c.asns else "")
        + ".",
        "external_references": [{"source_name": "trapline", "external_id": c.id}],
    }
    if c.first_seen:
        out["first_seen"] = timestamp(c.first_seen)
    if c.last_seen:
        out["last_seen"] = timestamp(c.last_seen)
    return out


def _sender(
    s: Sender,
    ev: Evidence,
    common: dict[str, Any],
    identity: str,
    as_ids: dict[int, str],
    campaign_ids: dict[str, str],
) -> list[dict[str, Any]]:
    kind = _ip_kind(s.ip)
    addr: dict[str, Any] = {
        "type": kind,
        "spec_version": "2.1",
        "id": sco_id(kind, {"value": s.ip}),
        "value": s.ip,
    }
    if s.asn is not None and s.asn in as_ids:
        addr["belongs_to_refs"] = [as_ids[s.asn]]
    first = s.first_seen or ev.generated_at
    last = s.last_seen or first
    where = f" in AS{s.asn}" + (f" ({s.prefix}, {s.snapshot_id})" if s.prefix else "")
    indicator_id = sdo_id("indicator", f"{kind}:{s.ip}")
    out = [
        addr,
        {
            "type": "indicator",
            "id": indicator_id,
            **common,
            "name": f"spam sender {s.ip}",
            "description": f"Sent {s.messages} spam message(s) to spam traps"
            + (where if s.asn is not None else "")
            + ".",
            "indicator_types": ["malicious-activity"],
            "pattern": f"[{kind}:value = {_literal(s.ip)}]",
            "pattern_type": "stix",
            "valid_from": timestamp(first),
        },
        {
            "type": "sighting",
            "id": sdo_id("sighting", f"{kind}:{s.ip}"),
            **common,
            "sighting_of_ref": indicator_id,
            "where_sighted_refs": [identity],
            "count": min(s.messages, MAX_COUNT),
            "first_seen": timestamp(first),
            "last_seen": timestamp(max(first, last)),
        },
    ]
    for cid in s.campaign_ids:
        if cid in campaign_ids:
            out.append(_indicates(indicator_id, campaign_ids[cid], common))
    return out


def _domains(
    c: CampaignInfo, ev: Evidence, common: dict[str, Any], campaign: str
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for domain in c.domains:
        indicator_id = sdo_id("indicator", f"domain-name:{domain}:{c.id}")
        out.append(
            {
                "type": "indicator",
                "id": indicator_id,
                **common,
                "name": f"spam URL domain {domain}",
                "description": f"Linked from the messages of spam campaign {c.id}.",
                "indicator_types": ["malicious-activity"],
                "pattern": f"[domain-name:value = {_literal(domain)}]",
                "pattern_type": "stix",
                "valid_from": timestamp(c.first_seen or ev.generated_at),
            }
        )
        out.append(_indicates(indicator_id, campaign, common))
    return out


def _indicates(source: str, target: str, common: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "relationship",
        "id": sdo_id("relationship", f"{source}>{target}"),
        **common,
        "relationship_type": "indicates",
        "source_ref": source,
        "target_ref": target,
    }
