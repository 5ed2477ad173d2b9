"""Read functions behind the API and the dashboard: the analyses' own functions, made JSON-ready.

Each takes a ``StoreAccess`` (this thread's cursor) and returns plain data; the route layer
adds caching and HTTP. Nothing here re-implements an analysis: network scores come from
``analyze.networks``, campaigns from ``analyze.campaign_report``, botnets from
``analyze.botnets``, harvesters from ``enrich.harvest``, dossiers from ``export.dossier``.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime, timedelta
from typing import Any

import duckdb

from trapline.serve.api.access import StoreAccess
from trapline.store.duckdb import Store
from trapline.store.queries import NETWORK_SQL, plain_value


def as_store(access: StoreAccess) -> Store:
    """This thread's cursor wearing the ``Store`` interface the analysis functions take."""
    view = object.__new__(Store)
    view.data_dir, view.path, view.con = access.store.data_dir, access.store.path, access.cursor()
    return view


def rows(access: StoreAccess, sql: str, args: list[Any] | None = None) -> list[dict[str, Any]]:
    cur = access.cursor().execute(sql, args or [])
    names = [d[0] for d in cur.description or []]
    return [{n: plain_value(v) for n, v in zip(names, r, strict=True)} for r in cur.fetchall()]


def _safe_rows(
    access: StoreAccess, sql: str, args: list[Any] | None = None
) -> list[dict[str, Any]]:
    try:
        return rows(access, sql, args)
    except duckdb.CatalogException:  # an area's tables missing from an older store
        return []


def volume(access: StoreAccess, *, bucket: str = "day") -> list[dict[str, Any]]:
    """Spam messages per day (or week/month) over the whole store."""
    unit = {"day": "day", "week": "week", "month": "month"}[bucket]
    return rows(
        access,
        f"SELECT date_trunc('{unit}', received_at)::DATE AS day, count(*) AS messages "
        f"FROM messages WHERE received_at IS NOT NULL AND {access.spam_only()} "
        "GROUP BY 1 ORDER BY 1",
    )


def chart_series(daily: list[dict[str, Any]]) -> dict[str, Any]:
    """The daily series rebinned so a chart stays readable: days up to ~13 months, weeks up to
    ~8 years, months beyond (a 20-year archive in days is 7,000 hairline bars)."""
    if not daily:
        return {"bucket": "day", "points": []}
    span = (date.fromisoformat(daily[-1]["day"]) - date.fromisoformat(daily[0]["day"])).days
    bucket = "day" if span <= 400 else "week" if span <= 8 * 366 else "month"
    if bucket == "day":
        return {"bucket": bucket, "points": daily}
    sums: dict[str, int] = {}
    for row in daily:
        d = date.fromisoformat(row["day"])
        start = d - timedelta(days=d.weekday()) if bucket == "week" else d.replace(day=1)
        sums[start.isoformat()] = sums.get(start.isoformat(), 0) + int(row["messages"])
    return {
        "bucket": bucket,
        "points": [{"day": k, "messages": v} for k, v in sorted(sums.items())],
    }


def totals(access: StoreAccess) -> dict[str, Any]:
    spam = access.spam_only()
    out = rows(
        access,
        f"SELECT count(*) AS messages, count(DISTINCT origin_ip) AS origin_ips, "
        f"count(DISTINCT origin_asn) AS origin_asns, min(received_at) AS first_received, "
        f"max(received_at) AS last_received FROM messages WHERE {spam}",
    )[0]
    for table in ("campaigns", "botnets", "visits", "feed_indicators"):
        found = _safe_rows(access, f"SELECT count(*) AS n FROM {table}")
        out[table] = found[0]["n"] if found else 0
    return out


def top_networks(access: StoreAccess, top: int = 10) -> list[dict[str, Any]]:
    """Origin networks by spam volume (AS once mapped, else the /24 or /48), with AS names."""
    found = rows(
        access,
        f"SELECT {NETWORK_SQL} AS network, any_value(origin_asn) AS asn, count(*) AS messages, "
        f"count(DISTINCT origin_ip) AS ips FROM messages WHERE origin_ip IS NOT NULL "
        f"AND {access.spam_only()} GROUP BY 1 ORDER BY 3 DESC, 1 LIMIT ?",
        [top],
    )
    names = as_names(access, [r["asn"] for r in found if r["asn"] is not None])
    for r in found:
        r["name"] = names.get(r["asn"])
    return found


def as_names(access: StoreAccess, asns: list[int]) -> dict[int, str]:
    """AS names from the routing area (imported and bundled names, the latest for each AS)."""
    from trapline.store.routing import names_on

    found = names_on(access.cursor(), asns, [None] * len(asns))
    return {asn: name for (asn, _), name in found.items() if name}


def campaigns(
    access: StoreAccess,
    *,
    top: int = 50,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict[str, Any]]:
    from trapline.analyze.campaign_report import list_campaigns

    try:
        found = list_campaigns(access.cursor(), top=top, since=since, until=until)
    except duckdb.CatalogException:
        return []
    return [{k: plain_value(v) for k, v in r.items()} for r in found]


def campaign(access: StoreAccess, ident: str) -> dict[str, Any]:
    from trapline.analyze.campaign_report import campaign_detail

    found = campaign_detail(access.cursor(), ident)
    return {k: plain_value(v) for k, v in found.items()}


def botnets(access: StoreAccess, *, top: int = 50) -> list[dict[str, Any]]:
    from trapline.analyze.botnets import list_botnets

    try:
        return [plain_value(b) for b in list_botnets(access.cursor(), top=top, max_hosts=200)]
    except duckdb.CatalogException:
        return []


def networks(
    access: StoreAccess,
    settings: dict[str, Any],
    *,
    by: str = "asn",
    top: int = 50,
    since: date | None = None,
    until: date | None = None,
    asn: int | None = None,
) -> list[dict[str, Any]]:
    """Ranked networks with their score breakdown (evidence counts, factors, reasons)."""
    from trapline.analyze.networks import network_scores

    found = network_scores(
        as_store(access), settings, by=by, top=top, since=since, until=until, asn=asn
    )
    return [plain_value(s.as_dict()) for s in found]


def dossier(access: StoreAccess, settings: dict[str, Any], asn: int) -> dict[str, Any]:
    """The network's evidence dossier as data (the page renders it; .html/.md downloads too)."""
    from trapline.export.dossier import build_dossier

    d = build_dossier(as_store(access), settings, asn)
    out = asdict(d)
    out["title"] = d.title
    out["score"] = d.score.as_dict() if d.score else None
    return plain_value(out)


def dossier_text(access: StoreAccess, settings: dict[str, Any], asn: int, fmt: str) -> str:
    from trapline.export.dossier import build_dossier, render_html, render_markdown

    d = build_dossier(as_store(access), settings, asn)
    return render_html(d) if fmt == "html" else render_markdown(d)


def harvesters(access: StoreAccess, limit: int = 50) -> list[dict[str, Any]]:
    from trapline.analyze.harvesters import harvesters as ranked

    try:
        return [plain_value(h.to_dict()) for h in ranked(as_store(access), limit)]
    except duckdb.CatalogException:
        return []


def visits(
    access: StoreAccess, *, limit: int = 50, sensor_id: str | None = None
) -> list[dict[str, Any]]:
    from trapline.analyze.harvesters import recent_visits

    try:
        return [plain_value(v) for v in recent_visits(as_store(access), limit, sensor_id)]
    except duckdb.CatalogException:
        return []


def sensor_addresses(access: StoreAccess, sensor_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """Addresses issued to one sensor's visits, with the mail each drew."""
    return _safe_rows(
        access,
        "SELECT v.address, v.id AS visit_id, v.visited_at, v.ip, "
        "(SELECT count(*) FROM recipients r WHERE r.trap_visit_id = v.id) AS messages "
        "FROM visits v WHERE v.sensor_id = ? ORDER BY v.visited_at DESC, v.seq DESC LIMIT ?",
        [sensor_id, limit],
    )


def feeds(
    access: StoreAccess, *, kind: str | None = None, q: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    where, args = ["TRUE"], []
    if kind:
        where.append("kind = ?")
        args.append(kind)
    if q:
        where.append("contains(lower(indicator), ?)")
        args.append(q.lower())
    return _safe_rows(
        access,
        "SELECT kind, indicator, indicator_type AS type, first_seen, last_seen, n_sightings, "
        f"sources, family, asn, prefix FROM feed_indicators WHERE {' AND '.join(where)} "
        "ORDER BY last_seen DESC, kind, indicator LIMIT ?",
        [*args, limit],
    )


def feed_kinds(access: StoreAccess) -> list[dict[str, Any]]:
    return _safe_rows(
        access,
        "SELECT kind, count(*) AS indicators, min(first_seen) AS first_seen, "
        "max(last_seen) AS last_seen FROM feed_indicators GROUP BY 1 ORDER BY 2 DESC",
    )


def overview(access: StoreAccess, settings: dict[str, Any]) -> dict[str, Any]:
    """The dashboard's front page: totals, volume, top campaigns and networks, harvesters."""
    daily = volume(access)
    return {
        "totals": totals(access),
        "volume": daily,
        "chart": chart_series(daily),
        "top_campaigns": campaigns(access, top=10),
        "top_networks": top_networks(access, 10),
        "harvesters": harvesters(access, 10),
    }


def live(access: StoreAccess, limit: int = 20) -> dict[str, Any]:
    """What the traps did lately: newest trap mail, visits and SMTP sessions."""
    spam = access.spam_only()
    return {
        "messages": rows(
            access,
            "SELECT id, received_at, ingested_at, origin_ip, subject, source FROM messages "
            f"WHERE {spam} ORDER BY ingested_at DESC, id LIMIT ?",
            [limit],
        ),
        "visits": _safe_rows(
            access,
            "SELECT id, visited_at, ip, path, user_agent, ignored_robots FROM visits "
            "ORDER BY visited_at DESC, seq DESC LIMIT ?",
            [limit],
        ),
        "sessions": _safe_rows(
            access,
            "SELECT session_id, peer_ip, started_at, helo, messages, end_reason FROM smtp_sessions "
            "ORDER BY started_at DESC NULLS LAST LIMIT ?",
            [limit],
        ),
    }
