"""The REST API over a real socket: search, detail, aggregates, IP lookup, errors, the spec."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ROOT
from trapline.serve.api.app import openapi_text
from web_helpers import WebServer, serving


@pytest.fixture(scope="module")
def web(web_store: tuple[Path, dict[str, Any]]) -> Iterator[WebServer]:
    # The DNSBL lists evidence of any age here (archive mode): the corpus is from 2001-2005.
    with serving(web_store, dnsbl_max_age_days=0) as server:
        yield server


@pytest.fixture(scope="module")
def client(web: WebServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web.base, headers=web.headers("analyst"), timeout=60) as c:
        yield c


def sql(web: WebServer, query: str, args: list[Any] | None = None) -> list[tuple[Any, ...]]:
    return web.store.con.cursor().execute(query, args or []).fetchall()


def test_search_by_asn_pages_through_every_match_once(web: WebServer, client: httpx.Client) -> None:
    ((asn, n),) = sql(web, "SELECT origin_asn, count(*) FROM messages WHERE label = 'spam' AND origin_asn IS NOT NULL "
                           "GROUP BY 1 ORDER BY 2 DESC LIMIT 1")  # fmt: skip
    assert n > 20
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"asn": f"AS{asn}", "limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/v1/messages", params=params).json()
        assert all(m["origin_asn"] == asn for m in page["items"])
        seen += [m["id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == n
    times = [m[0] for m in sql(web, "SELECT received_at FROM messages WHERE label = 'spam' AND origin_asn = ? "
                                    "ORDER BY received_at DESC, id DESC", [asn])]  # fmt: skip
    assert len(times) == n
    counted = client.get("/api/v1/messages", params={"asn": asn, "count": "true", "limit": 1})
    assert counted.json()["total"] == n


@pytest.mark.parametrize("field", ["ip", "subject", "campaign", "domain"])
def test_each_search_filter_matches_sql(web: WebServer, client: httpx.Client, field: str) -> None:
    if field == "domain":
        ((value, n),) = sql(web, "SELECT u.registered_domain, count(DISTINCT u.message_id) FROM urls u "
                                 "JOIN messages m ON m.id = u.message_id WHERE m.label = 'spam' "
                                 "AND u.registered_domain IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1")  # fmt: skip
    elif field == "subject":
        value = "paypal"
        ((n,),) = sql(web, "SELECT count(*) FROM messages WHERE lower(subject) LIKE '%paypal%' "
                           "AND label = 'spam'")  # fmt: skip
    else:
        column = {"ip": "origin_ip", "campaign": "campaign_id"}[field]
        ((value, n),) = sql(web, f"SELECT {column}, count(*) FROM messages WHERE {column} IS NOT NULL "
                                 "AND label = 'spam' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1")  # fmt: skip
    assert n > 1
    body = client.get("/api/v1/messages", params={field: value, "limit": 500, "count": 1}).json()
    assert body["total"] == len(body["items"]) == n
    assert body["filters"][field] == value


def test_search_by_time_window(web: WebServer, client: httpx.Client) -> None:
    ((n,),) = sql(web, "SELECT count(*) FROM messages WHERE label = 'spam' AND received_at >= '2002-08-01' "
                       "AND received_at < '2002-08-03'")  # fmt: skip
    body = client.get("/api/v1/messages", params={
        "since": "2002-08-01T00:00:00Z", "until": "2002-08-03T00:00:00+00:00", "count": 1}).json()  # fmt: skip
    assert body["total"] == n > 0
    assert all(m["received_at"].endswith("Z") for m in body["items"])
    assert all("2002-08-01" <= m["received_at"][:10] <= "2002-08-02" for m in body["items"])


@pytest.mark.parametrize(
    ("params", "status", "word"),
    [
        ({"asn": "ASxyz"}, 400, "AS number"),
        ({"ip": "999.1.1.1"}, 400, "not an IPv4"),
        ({"limit": 0}, 422, "limit"),
        ({"limit": 100000}, 422, "limit"),
        ({"since": "yesterday"}, 422, "since"),
        ({"cursor": "!!!"}, 400, "cursor"),
    ],
)
def test_bad_parameters_get_one_clear_error_body(
    client: httpx.Client, params: dict[str, Any], status: int, word: str
) -> None:
    r = client.get("/api/v1/messages", params=params)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["status"] == status and err["code"] and word in err["message"]


def test_unknown_things_are_404_with_the_same_body(client: httpx.Client) -> None:
    for path in ("/api/v1/messages/ffffffffffffffff", "/api/v1/campaigns/cdeadbeef",
                 "/api/v1/botnets/bnothing", "/api/v1/no-such-route"):  # fmt: skip
        r = client.get(path)
        assert r.status_code == 404, path
        assert r.json()["error"]["code"] == "not_found"


def test_message_detail_marks_the_origin_hop_and_raw_is_byte_identical(
    web: WebServer, client: httpx.Client
) -> None:
    ((mid, ip, hop),) = sql(web, "SELECT id, origin_ip, origin_hop FROM messages WHERE origin_ip "
                                 "IS NOT NULL AND n_hops > 2 ORDER BY id LIMIT 1")  # fmt: skip
    detail = client.get(f"/api/v1/messages/{mid[:12]}").json()
    assert detail["id"] == mid and detail["origin_ip"] == ip
    origin = [h for h in detail["hops"] if h["origin"]]
    assert len(origin) == 1 and origin[0]["index"] == hop and origin[0]["from_ip"] == ip
    raw = client.get(f"/api/v1/messages/{mid}/raw")
    assert raw.headers["content-type"].startswith("message/rfc822")
    assert hashlib.sha256(raw.content).hexdigest() == mid


def test_aggregates_carry_etags_and_answer_304(client: httpx.Client) -> None:
    for path in ("/api/v1/overview", "/api/v1/networks", "/api/v1/campaigns", "/api/v1/botnets"):
        first = client.get(path)
        assert first.status_code == 200 and first.headers["etag"], path
        assert "max-age" in first.headers["cache-control"]
        again = client.get(path, headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304, path


def test_overview_counts_the_spam_the_store_holds(web: WebServer, client: httpx.Client) -> None:
    body = client.get("/api/v1/overview").json()
    ((n, first),) = sql(web, "SELECT count(*), min(received_at) FROM messages WHERE label = 'spam'")
    assert body["totals"]["messages"] == n
    assert sum(d["messages"] for d in body["volume"]) == n - sql(
        web, "SELECT count(*) FROM messages WHERE received_at IS NULL AND label = 'spam'")[0][0]  # fmt: skip
    assert body["totals"]["first_received"] == first.isoformat() + "Z"
    assert body["top_campaigns"] and body["top_networks"]
    named = [n for n in body["top_networks"] if n["asn"] is not None]
    assert all(n["name"] != "None" for n in named)  # a missing name is null, not the text
    assert sum(1 for n in named if n["name"]) > len(named) // 2  # from the imported asnames.json


def test_networks_show_the_score_breakdown(client: httpx.Client) -> None:
    top = client.get("/api/v1/networks", params={"top": 5}).json()
    assert len(top) == 5
    for n in top:
        assert {"score", "baseline_score", "spam", "blocklist", "longevity_days", "reasons"} <= set(
            n
        )
        assert any("size term" in r for r in n["reasons"])
    assert [n["score"] for n in top] == sorted((n["score"] for n in top), reverse=True)
    dossier = client.get(f"/api/v1/networks/AS{top[0]['asn']}").json()
    assert dossier["asn"] == top[0]["asn"] and dossier["score"]["score"] == top[0]["score"]
    html = client.get(f"/api/v1/networks/AS{top[0]['asn']}/dossier.html")
    assert html.status_code == 200 and "<h1>Evidence dossier" in html.text


def test_campaign_and_botnet_details(web: WebServer, client: httpx.Client) -> None:
    camp = client.get("/api/v1/campaigns", params={"top": 1}).json()[0]
    detail = client.get(f"/api/v1/campaigns/{camp['id'][:8]}").json()
    assert detail["id"] == camp["id"]
    assert sum(d["messages"] for d in detail["per_day"]) <= camp["size"]
    bot = client.get("/api/v1/botnets", params={"top": 1}).json()[0]
    assert client.get(f"/api/v1/botnets/{bot['id']}").json()["messages"] == bot["messages"]


def test_ip_lookup_gathers_origin_relay_routing_and_listings(
    web: WebServer, client: httpx.Client
) -> None:
    ((ip, n, asn),) = sql(web, "SELECT origin_ip, count(*), any_value(origin_asn) FROM messages "
                               "WHERE label = 'spam' AND origin_asn IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1")  # fmt: skip
    body = client.get(f"/api/v1/ip/{ip}").json()
    assert body["known"] and body["origin"]["messages"] == n and body["origin"]["asn"] == asn
    assert body["routing"]["asn"] == asn and body["campaigns"]
    assert body["first_seen"].endswith("Z")
    # What trapline's own DNSBL answers for it, from the DNSBL's listing functions.
    senders = [x for x in body["dnsbl"] if x["list"] == "senders"]
    assert senders and senders[0]["code"] == "127.0.0.2" and senders[0]["hits"] == n
    reversed_ip = ".".join(reversed(ip.split(".")))
    assert senders[0]["query"] == f"{reversed_ip}.senders.bl.example.org"
    # An address inside a DROP-listed block (from the real Spamhaus history) is listed.
    ((cidr,),) = sql(web, "SELECT indicator FROM feed_indicators WHERE kind = 'drop' "
                          "AND indicator LIKE '%/2%' ORDER BY indicator LIMIT 1")  # fmt: skip
    inside = cidr.split("/")[0].rsplit(".", 1)[0] + ".77"
    listed = client.get(f"/api/v1/ip/{inside}").json()
    assert any(item["indicator"] == cidr and item["kind"] == "drop" for item in listed["listings"])
    unknown = client.get("/api/v1/ip/192.0.2.55").json()
    assert unknown["known"] is False and unknown["listings"] == []
    assert client.get("/api/v1/ip/not-an-ip").status_code == 400


def test_feeds_visits_harvesters_live_and_exports(web: WebServer, client: httpx.Client) -> None:
    kinds = {k["kind"]: k["indicators"] for k in client.get("/api/v1/feeds/kinds").json()}
    assert kinds["drop"] > 100
    drop = client.get("/api/v1/feeds", params={"kind": "drop", "limit": 5}).json()
    assert len(drop) == 5 and all(d["kind"] == "drop" for d in drop)
    assert client.get("/api/v1/visits").json() == []  # no honeypot ran for this store
    assert client.get("/api/v1/harvesters").json() == []
    live = client.get("/api/v1/live").json()
    assert len(live["messages"]) == 20
    ((asn, n),) = sql(web, "SELECT origin_asn, count(*) FROM messages WHERE label = 'spam' AND origin_asn IS NOT NULL "
                           "GROUP BY 1 ORDER BY 2 DESC LIMIT 1")  # fmt: skip
    csv_text = client.get("/api/v1/exports/messages.csv", params={"asn": asn}).text
    assert len(csv_text.strip().splitlines()) == n + 1 and csv_text.startswith("id,received_at")
    lines = client.get("/api/v1/exports/messages.jsonl", params={"asn": asn}).text.splitlines()
    assert len(lines) == n and json.loads(lines[0])["origin_asn"] == asn


def test_openapi_spec_is_committed_and_current(web: WebServer, client: httpx.Client) -> None:
    served = client.get("/openapi.json").json()
    assert served["openapi"].startswith("3.")
    committed = (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")
    assert committed == openapi_text(web.server.config.app), (
        "docs/openapi.json is stale: run `python -m trapline.serve.api.spec > docs/openapi.json`"
    )
    assert json.loads(committed) == served
    for path in ("/api/v1/messages", "/api/v1/ip/{ip}", "/api/v1/keys", "/api/v1/sensor/visits"):
        assert path in served["paths"]


def test_docs_page_is_self_contained(client: httpx.Client) -> None:
    page = client.get("/api/docs")
    assert page.status_code == 200
    assert "http://" not in page.text and "https://" not in page.text  # no CDN, no remote asset


def test_ham_is_left_out_unless_asked_for(web: WebServer, client: httpx.Client) -> None:
    ((ham, ham_ip),) = sql(web, "SELECT count(*), any_value(origin_ip) FROM messages "
                                "WHERE label = 'ham'")  # fmt: skip
    assert ham == 250  # SpamAssassin hard_ham, ingested with --label ham
    ((spam,),) = sql(web, "SELECT count(*) FROM messages WHERE label = 'spam'")
    only_spam = client.get("/api/v1/messages", params={"count": 1, "limit": 1}).json()["total"]
    both = client.get("/api/v1/messages", params={"count": 1, "limit": 1, "include_ham": 1}).json()
    assert only_spam == spam and both["total"] == spam + ham
    ((ham_from_ip,),) = sql(web, "SELECT count(*) FROM messages WHERE origin_ip = ? "
                                 "AND label = 'spam'", [ham_ip])  # fmt: skip
    found = client.get(f"/api/v1/ip/{ham_ip}").json()
    assert (found["origin"] or {"messages": 0})["messages"] == ham_from_ip


def test_stix_and_misp_downloads_come_from_the_export_functions(
    web: WebServer, client: httpx.Client
) -> None:
    from trapline.export import stix
    from trapline.export.evidence import gather

    bundle = client.get("/api/v1/exports/stix.json")
    assert bundle.status_code == 200 and bundle.headers["etag"]
    assert "attachment" in bundle.headers["content-disposition"]
    doc = bundle.json()
    assert doc["type"] == "bundle"
    expected = stix.build_bundle(gather(web.store, min_campaign_size=2))
    assert {o["id"] for o in doc["objects"]} == {o["id"] for o in expected["objects"]}
    event = client.get("/api/v1/exports/misp.json", params={"asn": "AS7018"}).json()
    assert "Event" in event or "info" in event
    listed = [e["path"] for e in client.get("/api/v1/exports").json()]
    assert "/api/v1/exports/stix.json" in listed and "/api/v1/exports/messages.csv" in listed
    for path in listed:
        if "{asn}" not in path:
            assert client.get(path).status_code == 200, path


def test_timeline_changes_and_takedown_come_from_the_timeline_analysis(
    web: WebServer, client: httpx.Client
) -> None:
    from trapline.analyze.changes import Params, detect
    from trapline.analyze.takedown import predict
    from trapline.analyze.timeline import series

    got = client.get("/api/v1/timeline", params={"by": "asn", "freq": "week", "top": 5})
    assert got.status_code == 200 and got.headers["etag"]
    body = got.json()
    want = series(web.store.con.cursor(), by="asn", freq="week")
    assert body["total"] == want.values() and len(body["groups"]) == 5
    assert body["periods"][0].endswith("Z")
    changes = client.get("/api/v1/changes", params={"by": "asn", "freq": "week"}).json()
    expected = detect(want, Params.from_settings(web.state.settings))
    assert [c["kind"] for c in changes] == [c.kind for c in expected]
    assert [c["at"][:10] for c in changes] == [c.at.date().isoformat() for c in expected]
    ((asn,),) = sql(web, "SELECT origin_asn FROM messages WHERE label = 'spam' AND origin_asn "
                         "IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")  # fmt: skip
    at = "2002-08-10T00:00:00Z"
    take = client.get(f"/api/v1/takedown/AS{asn}", params={"at": at}).json()
    ref = predict(web.store.con.cursor(), f"AS{asn}", datetime(2002, 8, 10),
                  settings=web.state.settings)  # fmt: skip
    assert (
        take["predicted_share"] == round(ref.predicted_share, 4)
        and take["messages"] == ref.messages
    )
    # The overview marks the same change points on its chart.
    overview = client.get("/index.json").json()
    assert len(overview["change_points"]) == len(detect(series(
        web.store.con.cursor(), by="asn", freq="week"), Params.from_settings(web.state.settings)))  # fmt: skip
    assert client.get("/api/v1/timeline", params={"by": "nope"}).status_code == 422
