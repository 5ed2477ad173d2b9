"""Dashboard pages: server-rendered Jinja2, each with a ``.json`` twin holding the same data.

Every page reads through the same view functions as the API. Templates autoescape everything
(subjects, names and headers are attacker-written); chart data travels in
``<script type="application/json">`` blocks through ``tojson`` (which escapes ``<``, ``>`` and
``&``), and the Content-Security-Policy allows scripts and requests from this server only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

import jinja2
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from trapline import __version__
from trapline.serve.api import iplookup, views
from trapline.serve.api.auth import COOKIE, reader
from trapline.serve.api.cache import params_key
from trapline.serve.api.keys import Principal, authenticate
from trapline.serve.api.responses import json_response
from trapline.serve.api.routes_read import Filter, ip_index
from trapline.serve.api.search import parse_asn, parse_ip
from trapline.store.queries import show

router = APIRouter(include_in_schema=False)
Reader = Annotated[Principal, Depends(reader)]
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("trapline.serve.dashboard", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _fmt_time(value: Any) -> str:
    text = str(value or "")
    return text.replace("T", " ")[:16] if text else "–"


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


_env.filters["t"] = _fmt_time
_env.filters["num"] = _num


def render(request: Request, template: str, code: int = 200, **context: Any) -> HTMLResponse:
    state = request.app.state.web
    html = _env.get_template(template).render(
        request=request,
        path=request.url.path,
        version=__version__,
        anonymous=state.anonymous_read,
        **context,
    )
    return HTMLResponse(html, code, headers=SECURITY_HEADERS)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "error.html", status, status=status, message=message)


def page(
    request: Request, template: str, data: dict[str, Any], json_twin: bool, **extra: Any
) -> Response:
    """The page, or its JSON twin (the same ``data`` the template was given)."""
    if json_twin:
        return json_response(data)
    return render(request, template, data=data, **extra)


def _twin(path: str) -> tuple[str, str]:
    return path, path + ".json"


def mount_static(app: Any) -> None:
    app.mount(
        "/static",
        StaticFiles(packages=[("trapline.serve.dashboard", "static")]),
        name="static",
    )


# --- login ----------------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    # Only paths on this server: never an absolute or scheme-relative URL (open redirect).
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    return render(request, "login.html", next=_safe_next(next), error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    form = parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0].strip()
    target = _safe_next((form.get("next") or ["/"])[0])
    state = request.app.state.web
    who = authenticate(state.access.cursor(), key) if key else None
    if who is None or not who.can_read_all:
        message = "That key is not valid here." if who is None else (
            "Sensor keys cannot open the dashboard; use an analyst or admin key.")  # fmt: skip
        resp = render(request, "login.html", 401, next=target, error=message)
        return resp
    token = state.sessions.start(who)
    done = RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
    done.set_cookie(
        COOKIE,
        token,
        max_age=state.sessions.max_age_s,
        httponly=True,
        secure=request.url.scheme == "https",
        samesite="strict",
        path="/",
    )
    return done


@router.post("/logout")
def logout(request: Request) -> Response:
    token = request.cookies.get(COOKIE)
    if token:
        request.app.state.web.sessions.end(token)
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(COOKIE, path="/")
    return resp


@router.get("/api/docs")
@router.get("/api/docs.json")
def api_docs(request: Request) -> Response:
    """The reference page; its JSON twin is the OpenAPI spec itself."""
    if request.url.path.endswith(".json"):
        return json_response(request.app.openapi())
    return render(request, "apidocs.html")


# --- pages ----------------------------------------------------------------------------------------


def _cached(request: Request, key: Any, compute: Callable[[], Any]) -> Any:
    return request.app.state.web.cache.get(key, compute).value


@router.get("/")
@router.get("/index.json")
def overview_page(request: Request, who: Reader) -> Response:
    st = request.app.state.web
    data = _cached(request, ("overview",), lambda: views.overview(st.access, st.settings))
    data = {**data, "change_points": _change_points(request)}
    return page(request, "overview.html", data, request.url.path.endswith(".json"))


def _change_points(request: Request) -> list[dict[str, Any]]:
    """Change points in daily volume, from the timeline analysis when this build has it."""
    from trapline.serve.api.timeline import change_points

    st = request.app.state.web
    try:
        return _cached(request, ("change-points",), lambda: change_points(st.access, st.settings))
    except ImportError:  # a build without the timeline analysis: no marks
        return []


@router.get("/messages")
@router.get("/messages.json")
def messages_page(
    request: Request, who: Reader, f: Filter, cursor: Annotated[str | None, Query(max_length=400)] = None
) -> Response:  # fmt: skip
    st = request.app.state.web
    result = st.search.page(f, limit=50, cursor=cursor)
    params = {k: str(v) for k, v in f.as_params().items()}
    result["filters"] = params
    nxt = urlencode({**params, "cursor": result["next_cursor"]}) if result["next_cursor"] else None
    return page(
        request, "messages.html", result, request.url.path.endswith(".json"), next_query=nxt
    )


@router.get("/messages/{message_id}")
@router.get("/messages/{message_id}.json")
def message_page(
    request: Request, who: Reader, message_id: Annotated[str, Path(max_length=64)]
) -> Response:
    data = show(request.app.state.web.access.cursor(), message_id)
    return page(request, "message.html", data, request.url.path.endswith(".json"))


@router.get("/campaigns")
@router.get("/campaigns.json")
def campaigns_page(request: Request, who: Reader) -> Response:
    st = request.app.state.web
    data = {"campaigns": _cached(request, params_key("campaigns", top=100, since=None, until=None),
                                 lambda: views.campaigns(st.access, top=100))}  # fmt: skip
    return page(request, "campaigns.html", data, request.url.path.endswith(".json"))


@router.get("/campaigns/{campaign_id}")
@router.get("/campaigns/{campaign_id}.json")
def campaign_page(
    request: Request, who: Reader, campaign_id: Annotated[str, Path(max_length=40)]
) -> Response:
    data = views.campaign(request.app.state.web.access, campaign_id)
    return page(request, "campaign.html", data, request.url.path.endswith(".json"))


@router.get("/networks")
@router.get("/networks.json")
def networks_page(request: Request, who: Reader) -> Response:
    st = request.app.state.web
    key = params_key("networks", top=100, by="asn", since=None, until=None)
    data = {
        "networks": _cached(request, key, lambda: views.networks(st.access, st.settings, top=100))
    }
    return page(request, "networks.html", data, request.url.path.endswith(".json"))


@router.get("/networks/{asn}")
@router.get("/networks/{asn}.json")
def network_page(
    request: Request, who: Reader, asn: Annotated[str, Path(max_length=12)]
) -> Response:
    st = request.app.state.web
    number = parse_asn(asn)
    assert number is not None
    data = _cached(request, params_key("dossier", asn=number),
                   lambda: views.dossier(st.access, st.settings, number))  # fmt: skip
    return page(request, "network.html", data, request.url.path.endswith(".json"))


@router.get("/botnets")
@router.get("/botnets.json")
def botnets_page(request: Request, who: Reader) -> Response:
    st = request.app.state.web
    data = {"botnets": _cached(request, params_key("botnets", top=50),
                               lambda: views.botnets(st.access, top=50))}  # fmt: skip
    return page(request, "botnets.html", data, request.url.path.endswith(".json"))


@router.get("/ip")
@router.get("/ip.json")
def ip_form(
    request: Request, who: Reader, q: Annotated[str | None, Query(max_length=64)] = None
) -> Response:
    if q:
        return RedirectResponse(f"/ip/{parse_ip(q)}", status_code=303)
    data = {"harvesters": _cached(request, params_key("harvesters", limit=20),
                                  lambda: views.harvesters(request.app.state.web.access, 20))}  # fmt: skip
    return page(request, "ip_form.html", data, request.url.path.endswith(".json"))


@router.get("/ip/{ip}")
@router.get("/ip/{ip}.json")
def ip_page(request: Request, who: Reader, ip: Annotated[str, Path(max_length=64)]) -> Response:
    st = request.app.state.web
    address = parse_ip(ip)
    assert address is not None
    data = iplookup.lookup(ip_index(st), address)
    return page(request, "ip.html", data, request.url.path.endswith(".json"))


@router.get("/live")
@router.get("/live.json")
def live_page(request: Request, who: Reader) -> Response:
    data = views.live(request.app.state.web.access, 20)
    return page(request, "live.html", data, request.url.path.endswith(".json"))
