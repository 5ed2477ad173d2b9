"""Read routes of ``/api/v1`` (analyst, admin, or anonymous with ``--anonymous-read``)."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response, StreamingResponse

from trapline.errors import NotFound
from trapline.serve.api import iplookup, views
from trapline.serve.api.auth import reader
from trapline.serve.api.cache import params_key
from trapline.serve.api.jsonout import dumps
from trapline.serve.api.keys import Principal
from trapline.serve.api.responses import cached_response, json_response
from trapline.serve.api.search import (
    MessageFilter,
    count_messages,
    parse_asn,
    parse_ip,
    utc_naive,
)
from trapline.store.queries import show
from trapline.store.raw import read_raw, resolve_id

router = APIRouter(dependencies=[Depends(reader)])
Reader = Annotated[Principal, Depends(reader)]
Limit = Annotated[int, Query(ge=1, le=500, description="Items per page (1-500).")]
Top = Annotated[int, Query(ge=1, le=1000, description="How many to return.")]


def _state(request: Request) -> Any:
    return request.app.state.web


def message_filter(
    since: Annotated[datetime | None, Query(description="Received at or after (ISO-8601).")] = None,
    until: Annotated[datetime | None, Query(description="Received before (ISO-8601).")] = None,
    ip: Annotated[str | None, Query(description="Origin IP, exact.", max_length=64)] = None,
    asn: Annotated[str | None, Query(description="Origin AS: 26780 or AS26780.")] = None,
    campaign: Annotated[str | None, Query(description="Campaign id or prefix.", max_length=40)] = None,
    subject: Annotated[str | None, Query(description="Subject contains (any case).", max_length=200)] = None,
    domain: Annotated[str | None, Query(description="A URL in the body has this host or registered domain.", max_length=253)] = None,
    include_ham: Annotated[bool, Query(description="Also messages labelled ham.")] = False,
) -> MessageFilter:  # fmt: skip
    return MessageFilter(
        since=utc_naive(since),
        until=utc_naive(until),
        ip=parse_ip(ip),
        asn=parse_asn(asn),
        campaign=campaign or None,
        subject=subject or None,
        domain=domain or None,
        include_ham=include_ham,
    )


Filter = Annotated[MessageFilter, Depends(message_filter)]


@router.get("/overview", summary="Totals, spam volume per day, top campaigns, networks, harvesters")
def overview(request: Request) -> Response:
    st = _state(request)
    entry = st.cache.get(("overview",), lambda: views.overview(st.access, st.settings))
    return cached_response(request, entry)


@router.get("/status", summary="This server: store access, search index and cache state")
def status(request: Request) -> Response:
    st = _state(request)
    idx = st.search.index
    return json_response(
        {
            "writable": st.access.writable,
            "anonymous_read": st.anonymous_read,
            "search_index": {
                "ready": idx is not None,
                "messages": len(idx.neg_time) if idx is not None else None,
                "age_s": round(time.monotonic() - idx.built_at, 1) if idx is not None else None,
            },
        }
    )


@router.get("/volume", summary="Spam messages per day, week or month")
def volume(request: Request, bucket: Literal["day", "week", "month"] = "day") -> Response:
    st = _state(request)
    entry = st.cache.get(
        params_key("volume", b=bucket), lambda: views.volume(st.access, bucket=bucket)
    )
    return cached_response(request, entry)


@router.get("/messages", summary="Search messages, newest first (keyset pages via next_cursor)")
def messages(
    request: Request,
    f: Filter,
    limit: Limit = 50,
    cursor: Annotated[str | None, Query(max_length=400, description="next_cursor of the previous page.")] = None,
    count: Annotated[bool, Query(description="Also count all matches (a full scan).")] = False,
) -> Response:  # fmt: skip
    st = _state(request)
    page = st.search.page(f, limit=limit, cursor=cursor)
    page["filters"] = f.as_params()
    if count:
        page["total"] = count_messages(st.access, f)
    return json_response(page)


@router.get(
    "/messages/{message_id}", summary="One message: headers, hop chain with the origin marked, URLs"
)
def message(request: Request, message_id: Annotated[str, Path(max_length=64)]) -> Response:
    return json_response(show(_state(request).access.cursor(), message_id))


@router.get(
    "/messages/{message_id}/raw",
    summary="The message's original bytes (message/rfc822)",
    response_class=Response,
)
def message_raw(request: Request, message_id: Annotated[str, Path(max_length=64)]) -> Response:
    cur = _state(request).access.cursor()
    mid = resolve_id(cur, message_id)
    return Response(
        read_raw(cur, mid),
        media_type="message/rfc822",
        headers={"Content-Disposition": f'attachment; filename="{mid}.eml"'},
    )


@router.get("/campaigns", summary="Campaigns, largest first")
def campaigns(
    request: Request,
    top: Top = 50,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Response:
    st = _state(request)
    key = params_key("campaigns", top=top, since=since, until=until)
    entry = st.cache.get(key, lambda: views.campaigns(
        st.access, top=top, since=utc_naive(since), until=utc_naive(until)))  # fmt: skip
    return cached_response(request, entry)


@router.get("/campaigns/{campaign_id}", summary="One campaign: summary, members per day, networks")
def campaign(request: Request, campaign_id: Annotated[str, Path(max_length=40)]) -> Response:
    return json_response(views.campaign(_state(request).access, campaign_id))


@router.get("/botnets", summary="Botnets by volume: campaigns, hosts, networks, daily share")
def botnets(request: Request, top: Top = 50) -> Response:
    st = _state(request)
    entry = st.cache.get(params_key("botnets", top=top), lambda: views.botnets(st.access, top=top))
    return cached_response(request, entry)


@router.get("/botnets/{botnet_id}", summary="One botnet")
def botnet(request: Request, botnet_id: Annotated[str, Path(max_length=40)]) -> Response:
    st = _state(request)
    entry = st.cache.get(
        params_key("botnets", top=1000), lambda: views.botnets(st.access, top=1000)
    )
    for b in entry.value:
        if b["id"] == botnet_id:
            return json_response(b)
    raise NotFound(f"no botnet {botnet_id!r}; list them at /api/v1/botnets")


@router.get("/networks", summary="Networks ranked by score, with the score's breakdown")
def networks(
    request: Request,
    top: Top = 50,
    by: Literal["asn", "prefix"] = "asn",
    since: date | None = None,
    until: date | None = None,
) -> Response:
    st = _state(request)
    key = params_key("networks", top=top, by=by, since=since, until=until)
    entry = st.cache.get(key, lambda: views.networks(
        st.access, st.settings, by=by, top=top, since=since, until=until))  # fmt: skip
    return cached_response(request, entry)


@router.get("/networks/{asn}", summary="One network's dossier: score, prefixes, evidence, samples")
def network(request: Request, asn: Annotated[str, Path(max_length=12)]) -> Response:
    st = _state(request)
    number = parse_asn(asn)
    assert number is not None
    entry = st.cache.get(params_key("dossier", asn=number), lambda: views.dossier(
        st.access, st.settings, number))  # fmt: skip
    return cached_response(request, entry)


@router.get(
    "/networks/{asn}/dossier.{fmt}",
    summary="The dossier as a report (html or md)",
    response_class=Response,
)
def network_dossier(
    request: Request, asn: Annotated[str, Path(max_length=12)], fmt: Literal["html", "md"]
) -> Response:  # fmt: skip
    st = _state(request)
    number = parse_asn(asn)
    assert number is not None
    text = views.dossier_text(st.access, st.settings, number, fmt)
    media = "text/html" if fmt == "html" else "text/markdown"
    return Response(text, media_type=f"{media}; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="AS{number}-dossier.{fmt}"'})  # fmt: skip


@router.get("/visits", summary="Honeypot visits, newest first (all sensors, or one)")
def visits(
    request: Request,
    limit: Limit = 50,
    sensor: Annotated[str | None, Query(max_length=40, description="Only this sensor's visits.")] = None,
) -> Response:  # fmt: skip
    return json_response(views.visits(_state(request).access, limit=limit, sensor_id=sensor))


@router.get("/harvesters", summary="Harvester IPs ranked by the spam their addresses drew")
def harvesters(request: Request, limit: Limit = 50) -> Response:
    st = _state(request)
    entry = st.cache.get(
        params_key("harvesters", limit=limit), lambda: views.harvesters(st.access, limit)
    )
    return cached_response(request, entry)


def ip_index(state: Any) -> iplookup.IpIndex:
    entry = state.cache.get(
        ("ip-index",), lambda: iplookup.build_index(state.access, state.settings), serialise=False
    )
    return entry.value


@router.get(
    "/ip/{ip}",
    summary="Everything known about one IP: origin, relay, routing, listings, harvesting, botnets",
)
def ip(request: Request, ip: Annotated[str, Path(max_length=64)]) -> Response:
    st = _state(request)
    address = parse_ip(ip)
    assert address is not None
    return json_response(iplookup.lookup(ip_index(st), address))


@router.get("/feeds", summary="External indicators (blocklists, C&C, landing pages)")
def feeds(
    request: Request,
    kind: Annotated[str | None, Query(max_length=20)] = None,
    q: Annotated[str | None, Query(max_length=100, description="Indicator contains.")] = None,
    limit: Limit = 100,
) -> Response:
    return json_response(views.feeds(_state(request).access, kind=kind, q=q, limit=limit))


@router.get("/feeds/kinds", summary="Indicator counts per feed kind")
def feed_kinds(request: Request) -> Response:
    st = _state(request)
    return cached_response(
        request, st.cache.get(("feed-kinds",), lambda: views.feed_kinds(st.access))
    )


@router.get("/live", summary="Newest trap mail, honeypot visits and SMTP sessions")
def live(request: Request, limit: Limit = 20) -> Response:
    return json_response(views.live(_state(request).access, limit))


EXPORTS = {
    "stix.json": "A STIX 2.1 bundle: campaigns, sending hosts, networks, sightings (?since=&until=&asn=)",
    "misp.json": "The same evidence as one MISP event (?since=&until=&asn=)",
    "messages.csv": "Message search results as CSV (same filters as /messages, up to 100,000 rows)",
    "messages.jsonl": "Message search results as JSON lines (same filters, up to 100,000 rows)",
    "networks/{asn}/dossier.html": "A network's evidence dossier, one self-contained HTML file",
    "networks/{asn}/dossier.md": "The same dossier as Markdown",
}


@router.get("/exports", summary="What can be downloaded")
def exports() -> Response:
    def path(name: str) -> str:
        return f"/api/v1/{name}" if name.startswith("networks/") else f"/api/v1/exports/{name}"

    return json_response([{"path": path(k), "description": v} for k, v in EXPORTS.items()])


def _export_rows(state: Any, f: MessageFilter, cap: int) -> Iterator[dict[str, Any]]:
    cursor: str | None = None
    sent = 0
    while sent < cap:
        page = state.search.page(f, limit=min(500, cap - sent), cursor=cursor)
        yield from page["items"]
        sent += len(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return


@router.get(
    "/exports/{fmt}.json", summary="Download STIX 2.1 or MISP evidence", response_class=Response
)
def export_evidence(
    request: Request,
    fmt: Literal["stix", "misp"],
    since: date | None = None,
    until: date | None = None,
    asn: Annotated[str | None, Query(description="Only mail sent from this AS.")] = None,
) -> Response:
    from trapline.export import misp, stix
    from trapline.export.evidence import gather

    st = _state(request)
    number = parse_asn(asn)
    key = params_key("evidence", fmt=fmt, since=since, until=until, asn=number)

    def build() -> Any:
        ev = gather(views.as_store(st.access), since=since, until=until, network=number,
                    min_campaign_size=int(st.settings["export_min_campaign_size"]))  # fmt: skip
        return stix.build_bundle(ev) if fmt == "stix" else misp.build_event(ev)

    entry = st.cache.get(key, build)
    response = cached_response(request, entry)
    response.headers["Content-Disposition"] = f'attachment; filename="trapline-{fmt}.json"'
    return response


@router.get("/exports/messages.{fmt}", summary="Download a message search", response_class=Response)
def export_messages(
    request: Request,
    f: Filter,
    fmt: Literal["csv", "jsonl"],
    max_rows: Annotated[int, Query(ge=1, le=100_000)] = 100_000,
) -> Response:
    st = _state(request)

    def csv_lines() -> Iterator[str]:
        buf = io.StringIO()
        out = csv.writer(buf)
        first = True
        for row in _export_rows(st, f, max_rows):
            if first:
                out.writerow(row.keys())
                first = False
            out.writerow(["" if v is None else v for v in row.values()])
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()

    def json_lines() -> Iterator[bytes]:
        for row in _export_rows(st, f, max_rows):
            yield dumps(row) + b"\n"

    body = csv_lines() if fmt == "csv" else json_lines()
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    return StreamingResponse(body, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="messages.{fmt}"'})  # fmt: skip
