"""Write and per-key routes: keys and imports (admin), a sensor's own data (sensor keys)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from trapline.errors import ServiceError, UsageError
from trapline.serve.api import views
from trapline.serve.api.auth import admin, identify, sensor
from trapline.serve.api.keys import ANONYMOUS, Principal, create_key, list_keys, revoke_key
from trapline.serve.api.responses import json_response

router = APIRouter()
Admin = Annotated[Principal, Depends(admin)]
Sensor = Annotated[Principal, Depends(sensor)]
MAX_IMPORT_BYTES = 25 * 1024 * 1024


class KeyRequest(BaseModel):
    role: Literal["admin", "analyst", "sensor"]
    name: str | None = Field(default=None, max_length=200)


class AddressRequest(BaseModel):
    ip: str = Field(max_length=64)
    user_agent: str | None = Field(default=None, max_length=1000)
    path: str = Field(default="/", max_length=2000)
    referer: str | None = Field(default=None, max_length=2000)
    host: str | None = Field(default=None, max_length=255)


@router.get("/whoami", summary="The role of the key (or session) making the request")
def whoami(request: Request) -> Response:
    who = identify(request)
    if who is None and request.app.state.web.anonymous_read:
        who = ANONYMOUS
    if who is None:
        return json_response({"role": None, "anonymous_read": False})
    return json_response({"role": who.role, "name": who.name, "key_id": who.key_id,
                          "sensor_id": who.sensor_id})  # fmt: skip


@router.get("/keys", summary="List API keys (never the keys themselves)")
def keys_list(request: Request, who: Admin) -> Response:
    return json_response(list_keys(request.app.state.web.access.cursor()))


@router.post("/keys", status_code=201, summary="Make an API key; the key is in this answer only")
def keys_create(request: Request, body: KeyRequest, who: Admin) -> Response:
    state = request.app.state.web
    with state.access.writer() as store:
        made = create_key(store, body.role, body.name)
    return json_response(made.as_dict(), status=201)


@router.delete("/keys/{key_id}", summary="Revoke an API key (its dashboard sessions end too)")
def keys_revoke(
    request: Request, key_id: Annotated[str, Path(max_length=40)], who: Admin
) -> Response:
    state = request.app.state.web
    with state.access.writer() as store:
        revoke_key(store, key_id)
    state.keys.clear()
    state.sessions.end_key(key_id)
    return json_response({"id": key_id, "revoked": True})


@router.post(
    "/imports",
    status_code=201,
    summary="Import one message (the raw RFC 5322 bytes as the request body)",
)
async def imports(
    request: Request,
    who: Admin,
    label: Annotated[str | None, Query(pattern="^(spam|ham)$")] = None,
) -> Response:
    from starlette.concurrency import run_in_threadpool

    body = await request.body()
    if not body.strip():
        raise UsageError("send the message's bytes as the request body")
    if len(body) > MAX_IMPORT_BYTES:
        return json_response(
            {"error": {"status": 413, "code": "too_large",
                       "message": f"a message may be at most {MAX_IMPORT_BYTES} bytes"}},
            status=413,
        )  # fmt: skip
    state = request.app.state.web
    result = await run_in_threadpool(_import_one, state, body, who.name, label or "spam")
    return json_response(result, status=201)


def _import_one(state: Any, data: bytes, who: str, label: str) -> dict[str, Any]:
    from trapline.model import RawMessage
    from trapline.pipeline.core import IngestCore
    from trapline.pipeline.drain import store_messages

    notes: list[str] = []
    raw = RawMessage(data, f"api-import:{who}", None)
    with state.access.writer() as store:
        core = IngestCore(state.settings, notes.append, label=label)
        new = store_messages(store, core, [raw])
    state.cache.clear()
    return {"id": raw.id, "new": bool(new), "notes": notes}


@router.get("/sensor/visits", summary="This sensor's visits, newest first")
def sensor_visits(
    request: Request, who: Sensor, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> Response:
    rows = views.visits(request.app.state.web.access, limit=limit, sensor_id=who.sensor_id)
    return json_response(rows)


@router.get(
    "/sensor/addresses", summary="Addresses issued for this sensor's visits, with mail drawn"
)
def sensor_addresses(
    request: Request, who: Sensor, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> Response:
    assert who.sensor_id is not None
    return json_response(views.sensor_addresses(request.app.state.web.access, who.sensor_id, limit))


@router.post(
    "/sensor/address", summary="Issue a trap address for one page view on the sensor's site"
)
def sensor_address(request: Request, body: AddressRequest, who: Sensor) -> Response:
    site = request.app.state.web.site
    if site is None:
        raise ServiceError(
            "this server runs no honeypot; run `trapline serve` with --http on to issue addresses"
        )
    visit = site.issue(
        ip=body.ip.strip(),
        user_agent=body.user_agent or None,
        method="GET",
        host=body.host or None,
        path=body.path or "/",
        referer=body.referer or None,
        headers={},
        sensor_id=who.sensor_id,
    )
    return json_response({"address": visit["address"], "visit_id": visit["id"]}, status=201)
