"""Network scores: which ASes (and prefixes) host the abuse we see, normalised for their size.

Two scores per network, both explained in docs/networks.md:

- ``baseline_score``, in the manner of BGP Ranking: weighted evidence per /24 of announced IPv4
  space, ``Σ weight[type] × count[type] ÷ max(1, announced_v4 / 256)``.
- ``score``, trapline's: the same weighted evidence divided by the size term raised to
  ``size_exponent`` (0.5 by default, so a lone hit in a tiny network does not outrank sustained
  abuse in a large one), times a longevity factor (how long the evidence persisted, as FIRE
  measures it) and a breadth factor (how many kinds of evidence point at the network).

Evidence is read from the store (SQL first, ARCHITECTURE rule 4): mapped message origins, URL
hosts that are literal IPs, honeypot visits tied to spam (harvesters), dictionary attackers, and
feed indicators (C&C, landing pages, harvesters, DROP listings). Traps-area tables are used when
they exist.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from typing import Any

from trapline.config import DEFAULTS
from trapline.errors import ConfigError
from trapline.routing import index as routing_index
from trapline.store.duckdb import Store
from trapline.store.labels import ALL, SPAM, label_filter
from trapline.store.routing import as_names, index_dir, list_snapshots

EVIDENCE_TYPES = ("spam", "harvester", "dictionary", "url_host", "cc", "blocklist")
# Weights and the other knobs live in trapline.config.DEFAULTS ("network_*"); the reasons:
#   spam 1.0       one spamming host: common, often a hijacked home PC
#   harvester 3.0  address harvesters are run by the spam operation itself
#   dictionary 0.5 noisy and cheap to spread over a botnet
#   url_host 2.0   the page the spam sells: infrastructure, not a victim
#   cc 5.0         botnet control: the strongest single sign of a rogue host
#   blocklist 4.0  an independent curated list (Spamhaus DROP) agreed
DEFAULT_WEIGHTS: dict[str, float] = dict(DEFAULTS["network_weights"])
BLOCKLIST_KINDS = ("drop", "edrop", "dropv6", "asn-drop")


@dataclass(slots=True, frozen=True)
class NetworkScore:
    asn: int
    name: str | None
    prefix: str | None  # None for an AS-level row
    score: float
    baseline_score: float
    evidence: dict[str, int]  # distinct items per evidence type
    messages: int
    announced_v4: int  # addresses announced (AS union, or the prefix size)
    snapshot_id: str | None
    first_seen: datetime | None
    last_seen: datetime | None
    longevity_days: float
    breadth: int
    reasons: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {
            "asn": self.asn,
            "name": self.name,
            "prefix": self.prefix,
            "score": round(self.score, 6),
            "baseline_score": round(self.baseline_score, 6),
            **{k: self.evidence.get(k, 0) for k in EVIDENCE_TYPES},
            "messages": self.messages,
            "announced_v4": self.announced_v4,
            "snapshot": self.snapshot_id,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "longevity_days": round(self.longevity_days, 3),
            "breadth": self.breadth,
            "reasons": list(self.reasons),
        }


@dataclass(slots=True, frozen=True)
class Params:
    weights: dict[str, float]
    size_exponent: float
    longevity_weight: float
    longevity_cap_days: float
    breadth_weight: float

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> Params:
        raw = settings.get("network_weights") or {}
        if isinstance(raw, str):  # TRAPLINE_NETWORK_WEIGHTS='{"cc": 8}'
            try:
                raw = json.loads(raw)
            except ValueError as exc:
                raise ConfigError(f"network_weights {raw!r} is not a JSON object") from exc
        unknown = set(raw) - set(EVIDENCE_TYPES)
        if unknown:
            raise ConfigError(
                f"network_weights: unknown evidence types {sorted(unknown)}; use {EVIDENCE_TYPES}"
            )
        weights = dict(DEFAULT_WEIGHTS)
        weights.update({k: float(v) for k, v in dict(raw).items()})
        get = lambda key: float(settings.get(key, DEFAULTS[key]))  # noqa: E731
        return cls(
            weights,
            get("network_size_exponent"),
            get("network_longevity_weight"),
            get("network_longevity_cap_days"),
            get("network_breadth_weight"),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights,
            "size_exponent": self.size_exponent,
            "longevity_weight": self.longevity_weight,
            "longevity_cap_days": self.longevity_cap_days,
            "breadth_weight": self.breadth_weight,
        }


def _evidence_sql(store: Store, label: str = SPAM) -> str:
    """(type, asn, prefix, snapshot_id, item, first_at, last_at, message_id) for every piece;
    message evidence counts messages with ``label`` only (``all``: every message)."""
    counted = (
        ""
        if label == ALL
        else f" AND message_id IN (SELECT id FROM messages WHERE {label_filter(label)})"
    )
    parts = [
        "SELECT 'spam', asn, prefix, snapshot_id, ip, seen_at, seen_at, message_id "
        f"FROM ip_routing WHERE subject = 'origin' AND asn IS NOT NULL{counted}",
        "SELECT 'url_host', asn, prefix, snapshot_id, ip, seen_at, seen_at, message_id "
        f"FROM ip_routing WHERE subject = 'url' AND asn IS NOT NULL{counted}",
        "SELECT 'dictionary', asn, prefix, snapshot_id, ip, seen_at, seen_at, NULL "
        "FROM ip_routing WHERE subject = 'dictionary' AND asn IS NOT NULL",
        # Feed indicators: the window test below is an overlap test on [first_seen, last_seen].
        f"""SELECT CASE WHEN kind = 'cc' THEN 'cc' WHEN kind = 'landing' THEN 'url_host'
                        WHEN kind = 'harvester' THEN 'harvester' ELSE 'blocklist' END,
                   asn, prefix, snapshot_id, kind || ':' || indicator, first_seen, last_seen, NULL
            FROM feed_indicators WHERE asn IS NOT NULL
              AND kind IN ('cc', 'landing', 'harvester', {", ".join(f"'{k}'" for k in BLOCKLIST_KINDS)})""",
    ]
    # A harvester is the visit whose issued address later received spam (ARCHITECTURE).
    parts.append(
        "SELECT 'harvester', asn, prefix, snapshot_id, ip, seen_at, seen_at, NULL FROM ip_routing "
        "WHERE subject = 'visit' AND asn IS NOT NULL AND subject_id IN ("
        "SELECT trap_visit_id FROM messages WHERE trap_visit_id IS NOT NULL UNION "
        "SELECT trap_visit_id FROM recipients WHERE trap_visit_id IS NOT NULL)"
    )
    return " UNION ALL ".join(parts)


def evidence_rows(
    store: Store,
    since: date | None = None,
    until: date | None = None,
    asn: int | None = None,
    label: str = SPAM,
) -> list[tuple[Any, ...]]:
    """Every piece of evidence in the window (``until`` inclusive), optionally for one AS;
    messages count when they carry ``label`` (spam unless asked)."""
    lo = datetime.combine(since, time()) if since else datetime(1, 1, 1)
    hi = datetime.combine(until, time.max) if until else datetime(9999, 12, 31)
    sql = (
        f"SELECT * FROM ({_evidence_sql(store, label)}) e(type, asn, prefix, snapshot_id, item, first_at, "
        "last_at, message_id) WHERE coalesce(last_at, ?) >= ? AND coalesce(first_at, ?) <= ?"
    )
    params: list[Any] = [hi, lo, lo, hi]
    if asn is not None:
        sql += " AND asn = ?"
        params.append(asn)
    return store.con.execute(sql + " ORDER BY type, asn, item", params).fetchall()


def _announced(store: Store, snapshot_ids: set[str]) -> dict[str, dict[int, int]]:
    """IPv4 addresses announced per AS in each snapshot (nested same-AS blocks counted once)."""
    out: dict[str, dict[int, int]] = {}
    for sid in snapshot_ids:
        folder = index_dir(store, sid)
        if routing_index.is_saved(folder):
            asns, sizes = routing_index.announced_v4(routing_index.load(folder))
            out[sid] = dict(zip(asns.tolist(), sizes.tolist(), strict=True))
    return out


def _prefix_size(prefix: str) -> int:
    if "/" in prefix and ":" not in prefix:
        return 1 << (32 - int(prefix.rsplit("/", 1)[1]))
    return 256  # IPv6 or a range: one /24-equivalent (BGP Ranking normalises IPv4 only)


def score_one(
    evidence: dict[str, int],
    announced: int,
    first: datetime | None,
    last: datetime | None,
    p: Params,
) -> tuple[float, float, float, int, list[str]]:
    """(score, baseline, longevity_days, breadth, reasons) for one network: the documented formula."""
    weighted = sum(p.weights.get(t, 0.0) * n for t, n in evidence.items())
    units = max(1.0, announced / 256)
    baseline = weighted / units
    days = (last - first).total_seconds() / 86400 if first and last else 0.0
    longevity = (
        min(1.0, math.log1p(days) / math.log1p(p.longevity_cap_days))
        if p.longevity_cap_days > 0
        else 0.0
    )
    breadth = sum(1 for n in evidence.values() if n > 0)
    size_term = units**p.size_exponent
    long_f = 1 + p.longevity_weight * longevity
    breadth_f = 1 + p.breadth_weight * max(0, breadth - 1)
    score = weighted / size_term * long_f * breadth_f
    reasons = [f"{n} {t} × {p.weights.get(t, 0.0):g}" for t, n in sorted(evidence.items()) if n]
    reasons += [
        f"weighted evidence {weighted:g} over {units:g} announced /24s",
        f"size term {units:g}^{p.size_exponent:g} = {size_term:.4g}",
        f"longevity {days:.1f} days → ×{long_f:.4g}",
        f"breadth {breadth} evidence types → ×{breadth_f:.4g}",
    ]
    return score, baseline, days, breadth, reasons


def network_scores(
    store: Store,
    settings: dict[str, Any],
    *,
    since: date | None = None,
    until: date | None = None,
    by: str = "asn",
    asn: int | None = None,
    top: int | None = None,
    label: str = SPAM,
) -> list[NetworkScore]:
    """Ranked networks (``by`` = 'asn' or 'prefix'); ties broken by ASN then prefix. Message
    evidence counts messages with ``label`` (spam unless asked; ``all`` for every message)."""
    p = Params.from_settings(settings)
    # A type weighted 0 is switched off: it adds nothing to breadth or longevity either.
    found = evidence_rows(store, since, until, asn, label)
    rows = [r for r in found if p.weights.get(r[0], 0.0) > 0]
    groups: dict[tuple[int, str | None], list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        if by == "prefix" and row[2] is None:
            continue  # ASN-DROP listings name no prefix
        groups[(row[1], row[2] if by == "prefix" else None)].append(row)
    snapshots = {s.snapshot_id: s for s in list_snapshots(store)}
    latest = (
        max(snapshots.values(), key=lambda s: (s.as_of, s.n_v4)).snapshot_id if snapshots else None
    )
    chosen: dict[tuple[int, str | None], str | None] = {}
    for key, items in groups.items():
        used = Counter(r[3] for r in items if r[3])
        chosen[key] = min(used, key=lambda s: (-used[s], s)) if used else latest
    announced = _announced(store, {s for s in chosen.values() if s})
    out = []
    for key in sorted(groups):
        items = groups[key]
        evidence = {t: len({r[4] for r in items if r[0] == t}) for t in EVIDENCE_TYPES}
        firsts = [r[5] for r in items if r[5] is not None]
        lasts = [r[6] for r in items if r[6] is not None]
        sid = chosen[key]
        size = _prefix_size(key[1]) if key[1] else announced.get(sid or "", {}).get(key[0], 0)
        score, baseline, days, breadth, reasons = score_one(
            evidence, size, min(firsts, default=None), max(lasts, default=None), p
        )
        out.append(
            NetworkScore(
                key[0],
                None,
                key[1],
                score,
                baseline,
                evidence,
                len({r[7] for r in items if r[7]}),
                size,
                sid,
                min(firsts, default=None),
                max(lasts, default=None),
                days,
                breadth,
                tuple(reasons),
            )
        )
    out.sort(key=lambda s: (-s.score, s.asn, s.prefix or ""))
    if top:
        out = out[:top]
    # Names as they were when the evidence was seen (AS26780 is McColo in 2008), else as of
    # the snapshot that mapped it.
    dates = [
        s.last_seen.date()
        if s.last_seen
        else (snapshots[s.snapshot_id].as_of if s.snapshot_id in snapshots else None)
        for s in out
    ]
    names = as_names(store, [s.asn for s in out], dates)
    return [replace(s, name=names.get((s.asn, d))) for s, d in zip(out, dates, strict=True)]
