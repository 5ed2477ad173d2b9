"""Takedown impact: the share of spam predicted to stop if one network goes dark.

Only data from before ``at`` is used for the prediction. A message in the window (the
``takedown_window_days`` before ``at``) depends on the network through:

- ``cc``: its botnet's family has a C&C indicator (feeds, kind ``cc``) inside the network,
  first seen before ``at``. Orphaned bots stop sending: weight 1.
- ``sender``: its origin address is inside the network: weight 1.
- ``landing``: a URL in it points at a host inside the network. Spam continues for a while
  with new landing pages, so only part of it stops: weight 0.3.
- ``harvester``: its recipient was harvested by a visitor from the network. Addresses
  already harvested keep receiving spam: weight 0.1.

The weights (``takedown_weights``) are what a message contributes to the predicted share;
a message with several dependencies counts with the largest. When the store also holds the
time after ``at``, the overall change point within a day of ``at`` is the observation,
printed beside the prediction (``observed_share`` is null when there is no such drop).
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb

from trapline.analyze.changes import Params, detect
from trapline.analyze.timeline import RECEIVED, series
from trapline.config import DEFAULTS
from trapline.errors import ConfigError, NotFound, UsageError
from trapline.store.labels import label_filter

KINDS = ("cc", "sender", "landing", "harvester")


@dataclass(slots=True, frozen=True)
class Dependent:
    kind: str  # cc | sender | landing | harvester
    id: str  # botnet or campaign id
    name: str
    messages: int  # messages in the window depending this way
    weight: float
    evidence: tuple[str, ...]  # C&C indicators, sender IPs, URL hosts, harvester IPs


@dataclass(slots=True, frozen=True)
class Takedown:
    network: str
    at: datetime
    window_days: float
    messages: int  # spam in the window
    predicted_share: float
    observed_share: float | None
    dependents: tuple[Dependent, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "at": self.at,
            "window_days": self.window_days,
            "messages": self.messages,
            "predicted_share": round(self.predicted_share, 4),
            "observed_share": None if self.observed_share is None else round(self.observed_share, 4),
            "dependents": [
                {"kind": d.kind, "id": d.id, "name": d.name, "messages": d.messages,
                 "share": round(d.messages / self.messages, 4) if self.messages else 0.0,
                 "weight": d.weight, "evidence": list(d.evidence)}
                for d in self.dependents
            ],
        }  # fmt: skip


def weights_from(settings: dict[str, Any] | None) -> dict[str, float]:
    raw = {**DEFAULTS, **(settings or {})}["takedown_weights"]
    try:
        return {k: float(raw[k]) for k in KINDS}
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"takedown_weights needs numbers for {', '.join(KINDS)}") from exc


@dataclass(slots=True, frozen=True)
class _Net:
    name: str
    asn: int | None
    first: int = 0
    last: int = 0

    def sql(self, alias: str, ip_column: str) -> str:
        """Condition: the row's address (or mapped AS) is inside this network."""
        if self.asn is not None:
            return f"{alias}.asn = {self.asn}"
        ip = f"{alias}.{ip_column}"
        as_int = " + ".join(
            f"try_cast(split_part({ip}, '.', {i + 1}) AS BIGINT) * {256 ** (3 - i)}"
            for i in range(4)
        )
        return f"({ip} NOT LIKE '%:%' AND ({as_int}) BETWEEN {self.first} AND {self.last})"


def _network(text: str) -> _Net:
    value = text.strip().upper()
    if re.fullmatch(r"(AS)?\d+", value):
        asn = int(value.removeprefix("AS"))
        return _Net(f"AS{asn}", asn)
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as exc:
        raise UsageError(
            f"{text!r} is neither an AS (AS26780) nor a prefix (208.72.168.0/21)"
        ) from exc
    if net.version != 4:
        raise UsageError("prefix takedowns are IPv4 only for now; give the AS instead")
    return _Net(str(net), None, int(net.network_address), int(net.broadcast_address))


def _dependency_sql(net: _Net, table: str) -> str:
    """(message_id, kind, group id, group name, evidence) for every dependency in the window."""
    parts = [
        f"""SELECT w.id, '{kind}', coalesce(w.campaign_id, w.id), coalesce(c.subjects[1], w.id),
                   r.ip
            FROM {table} w JOIN ip_routing r ON r.subject = '{subject}' AND r.{key} = w.{wkey}
            LEFT JOIN campaigns c ON c.id = w.campaign_id WHERE {net.sql("r", "ip")}"""
        for kind, subject, key, wkey in (
            ("sender", "origin", "message_id", "id"),
            ("landing", "url", "message_id", "id"),
            ("harvester", "visit", "subject_id", "trap_visit_id"),
        )
    ]
    parts.append(
        f"""SELECT w.id, 'cc', bc.botnet_id, array_to_string(b.families, '+'), fi.indicator
            FROM {table} w JOIN botnet_campaigns bc ON bc.campaign_id = w.campaign_id
            JOIN botnets b ON b.id = bc.botnet_id
            JOIN feed_indicators fi ON fi.kind = 'cc' AND list_contains(b.families, fi.family)
            WHERE fi.first_seen < ? AND {net.sql("fi", "indicator")}"""
    )
    return " UNION ALL ".join(f"({p})" for p in parts)


def predict(
    con: duckdb.DuckDBPyConnection,
    network: str,
    at: datetime | None = None,
    *,
    settings: dict[str, Any] | None = None,
    label: str = "spam",
) -> Takedown:
    """Predicted (and, when the data shows it, observed) share of spam stopping at ``at``."""
    weights = weights_from(settings)
    window = float({**DEFAULTS, **(settings or {})}["takedown_window_days"])
    net = _network(network)
    (n_routing,) = con.execute("SELECT count(*) FROM routing_snapshots").fetchall()[0]
    if not n_routing:
        raise NotFound(
            "no routing data in the store: run `trapline routing import TABLE` and "
            "`trapline enrich` first, so trapline knows which addresses the network held"
        )
    (last,) = con.execute(f"SELECT max(received_at) FROM messages WHERE {RECEIVED}").fetchall()[0]
    if last is None:
        raise NotFound("no mail with a received time in the store: run `trapline ingest PATH`")
    at = at or (last + timedelta(seconds=1))
    start = at - timedelta(days=window)
    table = f"_takedown_{uuid.uuid4().hex}"  # cursors of one connection share temp tables
    con.execute(
        f"CREATE TEMP TABLE {table} AS SELECT id, campaign_id, trap_visit_id "
        f"FROM messages m WHERE {RECEIVED.replace('received_at', 'm.received_at')} AND "
        f"{label_filter(label, 'm.label')} AND m.received_at >= ? AND m.received_at < ?",
        [start, at],
    )
    try:
        return _predict(con, net, table, at, last, window, weights, label, settings)
    finally:
        con.execute(f"DROP TABLE IF EXISTS {table}")


def _predict(
    con: duckdb.DuckDBPyConnection, net: _Net, table: str, at: datetime, last: datetime, window: float,
    weights: dict[str, float], label: str, settings: dict[str, Any] | None,
) -> Takedown:  # fmt: skip
    (total,) = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0]
    if not total:
        raise NotFound(
            f"no spam in the {window:g} days before {at:%Y-%m-%d %H:%M}: pick an --at inside "
            f"the data (it ends {last:%Y-%m-%d})"
        )
    dep_sql = _dependency_sql(net, table)
    rows = con.execute(
        f"WITH d(mid, kind, gid, gname, evidence) AS ({dep_sql}) "
        "SELECT mid, kind, gid, gname, evidence FROM d",
        [at],
    ).fetchall()
    best: dict[str, float] = {}
    groups: dict[tuple[str, str], tuple[str, set[str], set[str]]] = {}
    for mid, kind, gid, gname, evidence in rows:
        best[mid] = max(best.get(mid, 0.0), weights[kind])
        _, members, ev = groups.setdefault((kind, gid), (gname or gid, set(), set()))
        members.add(mid)
        ev.add(str(evidence))
    dependents = tuple(
        sorted(
            (
                Dependent(kind, gid, gname, len(members), weights[kind], tuple(sorted(ev))[:20])
                for (kind, gid), (gname, members, ev) in groups.items()
            ),
            key=lambda d: (-d.messages * d.weight, d.kind, d.id),
        )
    )
    predicted = sum(best.values()) / total
    return Takedown(
        net.name, at, window, int(total), predicted, _observed(con, at, label, settings), dependents
    )


def _observed(
    con: duckdb.DuckDBPyConnection, at: datetime, label: str, settings: dict[str, Any] | None
) -> float | None:
    """The size of an overall drop within a day of ``at``, if the data after it shows one."""
    (after,) = con.execute(
        f"SELECT count(*) FROM messages WHERE {RECEIVED} AND received_at >= ?", [at]
    ).fetchall()[0]
    if not after:
        return None
    try:
        found = detect(series(con, freq="day", label=label), Params.from_settings(settings))
    except UsageError:
        return None
    for change in found:
        near = abs((change.at - at).total_seconds()) <= 86400
        if near and change.relative_change is not None and change.relative_change < 0:
            return -change.relative_change
    return None
