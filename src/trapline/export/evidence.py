"""What the standard-format exports say, read once from the store.

STIX and MISP describe the same things (spam senders, the networks that announce them, the
campaigns they sent), so both read one ``Evidence`` record and only differ in how they spell it.
Spam only by default (``messages.label``): ham is never exported as abuse unless asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from trapline.config import SettingsView
from trapline.store import labels
from trapline.store.duckdb import Store
from trapline.store.routing import as_names


@dataclass(slots=True, frozen=True)
class ExportSettings(SettingsView):
    """The exports' settings (docs/exports.md)."""

    min_campaign_size: int = field(metadata={"key": "export_min_campaign_size"})
    arf_from: str = field(metadata={"key": "arf_from"})
    arf_max_reports: int = field(metadata={"key": "arf_max_reports"})


@dataclass(slots=True, frozen=True)
class Sender:
    """One origin IP of stored spam and what it sent."""

    ip: str
    asn: int | None
    prefix: str | None
    snapshot_id: str | None
    messages: int
    first_seen: datetime | None
    last_seen: datetime | None
    campaign_ids: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class CampaignInfo:
    id: str
    size: int
    first_seen: datetime | None
    last_seen: datetime | None
    subjects: tuple[str, ...]
    domains: tuple[str, ...]
    asns: tuple[int, ...]
    representative: str | None


@dataclass(slots=True, frozen=True)
class Network:
    asn: int
    name: str | None
    messages: int
    senders: int


@dataclass(slots=True, frozen=True)
class Evidence:
    generated_at: datetime
    senders: tuple[Sender, ...]
    campaigns: tuple[CampaignInfo, ...]
    networks: tuple[Network, ...]
    label: str

    @property
    def empty(self) -> bool:
        return not self.senders and not self.campaigns


def label_filter(label: str, alias: str) -> str:
    """SQL condition keeping messages labelled ``label`` (``all``: every message)."""
    return labels.label_filter(label, f"{alias}.label")


def parse_network(text: str) -> int:
    """``AS26780``, ``as26780`` or ``26780`` → 26780."""
    from trapline.errors import UsageError

    body = text.strip().upper().removeprefix("AS")
    if not body.isdigit():
        raise UsageError(f"{text!r} is not an AS number; use AS26780 or 26780")
    return int(body)


def _window(alias: str, since: date | None, until: date | None) -> tuple[str, list[Any]]:
    parts, args = [], []
    if since is not None:
        parts.append(f"{alias}.received_at >= ?")
        args.append(since)
    if until is not None:
        parts.append(f"{alias}.received_at < ?")
        args.append(until)
    return (" AND ".join(parts) or "TRUE"), args


def gather(
    store: Store,
    *,
    label: str = labels.SPAM,
    since: date | None = None,
    until: date | None = None,
    network: int | None = None,
    min_campaign_size: int = 2,
) -> Evidence:
    """Senders, their networks and the campaigns (of at least ``min_campaign_size``) they sent."""
    chosen = label_filter(label, "m")
    window, args = _window("m", since, until)
    where = f"m.origin_ip IS NOT NULL AND {chosen} AND {window}"
    if network is not None:
        where += " AND m.origin_asn = ?"
        args.append(network)
    rows = store.con.execute(
        f"""SELECT m.origin_ip, any_value(m.origin_asn), any_value(m.origin_prefix),
                   any_value(m.routing_snapshot), count(*), min(m.received_at), max(m.received_at),
                   list(DISTINCT m.campaign_id ORDER BY m.campaign_id)
                     FILTER (WHERE m.campaign_id IS NOT NULL)
            FROM messages m WHERE {where}
            GROUP BY m.origin_ip ORDER BY count(*) DESC, m.origin_ip""",
        args,
    ).fetchall()
    campaigns = _campaigns(store, where, args, min_campaign_size)
    exported = {c.id for c in campaigns}
    senders = tuple(
        Sender(ip, asn, prefix, snap, n, first, last, tuple(c for c in cids or () if c in exported))
        for ip, asn, prefix, snap, n, first, last, cids in rows
    )
    return Evidence(
        generated_at=datetime.now(UTC).replace(tzinfo=None, microsecond=0),
        senders=senders,
        campaigns=campaigns,
        networks=_networks(store, senders),
        label=label,
    )


def _campaigns(
    store: Store, where: str, args: list[Any], min_size: int
) -> tuple[CampaignInfo, ...]:
    # Campaigns that the selected messages belong to; their size counts every member.
    rows = store.con.execute(
        f"""SELECT c.id, c.size, c.first_seen, c.last_seen, c.subjects, c.domains, c.asns,
                   c.representative
            FROM campaigns c
            WHERE c.size >= ? AND c.id IN (SELECT m.campaign_id FROM messages m WHERE {where})
            ORDER BY c.size DESC, c.id""",
        [min_size, *args],
    ).fetchall()
    return tuple(
        CampaignInfo(
            cid,
            size,
            first,
            last,
            tuple(s for s in subjects or () if s),
            tuple(d for d in domains or () if d),
            tuple(a for a in asns or () if a is not None),
            rep,
        )
        for cid, size, first, last, subjects, domains, asns, rep in rows
    )


def _networks(store: Store, senders: tuple[Sender, ...]) -> tuple[Network, ...]:
    totals: dict[int, list[Any]] = {}
    for s in senders:
        if s.asn is None:
            continue
        entry = totals.setdefault(s.asn, [0, 0, s.last_seen])
        entry[0] += s.messages
        entry[1] += 1
        if s.last_seen and (entry[2] is None or s.last_seen > entry[2]):
            entry[2] = s.last_seen
    asns = sorted(totals)
    days = [totals[a][2].date() if totals[a][2] else None for a in asns]
    names = as_names(store, asns, days)
    return tuple(
        Network(a, names.get((a, d)), totals[a][0], totals[a][1])
        for a, d in sorted(zip(asns, days, strict=True), key=lambda x: (-totals[x[0]][0], x[0]))
    )
