"""Harvester linkage, pure: trap address → the visit that issued it (decoded offline).

``resolve`` decodes every recipient on a trap domain with the site secret (no visit table
needed); ``plan`` turns the links into what the store must record: ``trap_visit_id`` on
``recipients`` and ``messages``, and each undecodable trap-domain recipient as a dictionary
attack. The stage's store side is ``trapline.pipeline.adapters.harvest``; the ranking of
harvesters is SQL over ``visits`` and the linked messages (``trapline.analyze.harvesters``).
"""

from __future__ import annotations

from dataclasses import dataclass

from trapline.traps import addresses


@dataclass(slots=True, frozen=True)
class Link:
    """One recipient row resolved against the codec."""

    message_id: str
    addr: str
    kind: str
    visit_id: str | None
    reason: str  # "" when decoded, else the codec's reason


def resolve(rows: list[tuple[str, str, str]], secret: bytes, trap_domains: list[str]) -> list[Link]:
    """Pure: decode ``(message_id, kind, addr)`` rows that are on a trap domain."""
    out: list[Link] = []
    for message_id, kind, addr in rows:
        if not addr or not addresses.is_trap_domain(addr, trap_domains):
            continue
        decoded = addresses.decode(addr, secret, trap_domains)
        out.append(Link(message_id, addr, kind, decoded.visit_id, decoded.reason))
    return out


@dataclass(slots=True, frozen=True)
class LinkPlan:
    """What a batch of links means for the store: which recipient rows and messages get a visit,
    and which addresses were dictionary attacks."""

    recipients: tuple[Link, ...]  # decoded: (message, address) -> visit
    messages: dict[str, str]  # message id -> the visit of its best decoded recipient
    attacks: dict[tuple[str, str], str]  # (message id, normalised address) -> codec's reason


def plan(links: list[Link]) -> LinkPlan:
    """Pure: the envelope (RCPT) wins over headers, since it is what the sender really used;
    one dictionary-attack entry per (message, address), envelope recipients when present."""
    good = [link for link in links if link.visit_id]
    best: dict[str, str] = {}
    for link in sorted(good, key=lambda x: x.kind != "rcpt"):
        best.setdefault(link.message_id, str(link.visit_id))
    with_rcpt = {link.message_id for link in links if link.kind == "rcpt"}
    bad: dict[tuple[str, str], str] = {}
    for link in links:
        if link.visit_id or (link.message_id in with_rcpt and link.kind != "rcpt"):
            continue
        bad.setdefault((link.message_id, addresses.normalise(link.addr)), link.reason)
    return LinkPlan(tuple(good), best, bad)
