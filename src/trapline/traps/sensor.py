"""Sensor mode: other websites ask this server for a trap address per page view.

Many small sites form one trap network (as in Project Honey Pot), but every address is issued
here, under this site's secret, so it still decodes offline. A sensor authenticates with its own
API key (``trapline sensor add``; only the key's SHA-256 is stored) and can only write visits
tagged with its id and read those same visits back.

API (JSON over HTTP, ``Authorization: Bearer <key>``):

* ``POST /api/sensor/v1/address`` body ``{"ip", "user_agent", "path", "referer", "host"}`` →
  ``{"address", "visit_id"}``
* ``GET /api/sensor/v1/visits?limit=50`` → this sensor's visits, newest first (as stored; a
  visit appears once the spool is drained, normally within a second)

The embed is a few lines on the sensor's server (never in the browser, where the key would
leak); ``EMBED_PHP`` and ``fetch_address`` are ready-made ones.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from trapline.errors import StoreError
from trapline.model import utcnow
from trapline.store.duckdb import Store


class SensorSite(Protocol):
    """What the sensor API uses of the honeypot (``web.TrapSite``), named here so this module
    does not import the web module that mounts it."""

    @property
    def sensor_lookup(self) -> Callable[[str], str | None]: ...

    @property
    def sensor_visits(self) -> Callable[[str, int], list[dict[str, Any]]]: ...

    def issue(
        self,
        *,
        ip: str,
        user_agent: str | None,
        method: str,
        host: str | None,
        path: str,
        referer: str | None,
        headers: dict[str, str],
        sensor_id: str | None = None,
    ) -> dict[str, Any]: ...


API_PREFIX = "/api/sensor/v1"
_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
MAX_BODY = 16 * 1024

EMBED_PHP = """<?php
// trapline sensor embed: prints a fresh trap address for this page view (hidden from humans).
$ctx = stream_context_create(['http' => ['method' => 'POST', 'timeout' => 2,
  'header' => "Content-Type: application/json\\r\\nAuthorization: Bearer {KEY}\\r\\n",
  'content' => json_encode(['ip' => $_SERVER['REMOTE_ADDR'], 'user_agent' => $_SERVER['HTTP_USER_AGENT'] ?? '',
    'path' => $_SERVER['REQUEST_URI'], 'referer' => $_SERVER['HTTP_REFERER'] ?? '', 'host' => $_SERVER['HTTP_HOST'] ?? ''])]]);
$r = @file_get_contents('{URL}/api/sensor/v1/address', false, $ctx);
if ($r && ($a = json_decode($r, true)['address'] ?? null)) {
  echo '<a href="mailto:' . htmlspecialchars($a) . '" style="display:none">' . htmlspecialchars($a) . '</a>';
}
"""


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def mint_key() -> str:
    """A new sensor API key (256 random bits)."""
    return "tls_" + secrets.token_urlsafe(32)


def add_sensor(store: Store, name: str) -> tuple[str, str]:
    """Register a sensor; returns ``(sensor_id, api_key)``. The key is shown once, never stored."""
    sensor_id = "s" + uuid.uuid4().hex[:12]
    key = mint_key()
    store.con.execute(
        "INSERT INTO sensors (id, name, key_sha256, created_at) VALUES (?, ?, ?, ?)",
        [sensor_id, name, key_hash(key), utcnow()],
    )
    return sensor_id, key


class StoreSensors:
    """Sensor lookups for the web app, each in its own short read window on the store
    (``read`` is ``ServeContext.read``: a read-only store, closed when the lookup ends)."""

    def __init__(self, read: Callable[[], AbstractContextManager[Store]]) -> None:
        self._read = read

    def lookup(self, key: str) -> str | None:
        with self._read() as store:
            row = store.con.execute(
                "SELECT id FROM sensors WHERE key_sha256 = ?", [key_hash(key)]
            ).fetchone()
        return str(row[0]) if row else None

    def visits(self, sensor_id: str, limit: int) -> list[dict[str, Any]]:
        with self._read() as store:
            cur = store.con.execute(
                "SELECT id, address, visited_at, ip, user_agent, path, referer, ignored_robots "
                "FROM visits WHERE sensor_id = ? ORDER BY seq DESC LIMIT ?",
                [sensor_id, limit],
            )
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        return [dict(zip(names, r, strict=True)) for r in rows]


# --- HTTP side ----------------------------------------------------------------------------------


async def _sensor_of(site: SensorSite, request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, key = auth.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    try:  # a store query: keep it off the event loop
        return await run_in_threadpool(site.sensor_lookup, key.strip())
    except StoreError:
        return None


def _unauthorised() -> Response:
    # Exactly the honeypot's own 404: a visitor without a key must not learn that an API, let
    # alone which tool, is behind the site. (Sensor operators: a wrong key looks like this.)
    return PlainTextResponse("Not Found", status_code=404)


def routes(site: SensorSite) -> list[BaseRoute]:
    async def address(request: Request) -> Response:
        sensor_id = await _sensor_of(site, request)
        if sensor_id is None:
            return _unauthorised()
        body = await request.body()
        try:
            data = json.loads(body[:MAX_BODY] or b"{}")
        except ValueError:
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        if not isinstance(data, dict) or not str(data.get("ip") or "").strip():
            return JSONResponse({"error": "give at least the visitor's 'ip'"}, status_code=400)
        visit = site.issue(
            ip=str(data["ip"]).strip()[:64],
            user_agent=str(data.get("user_agent") or "")[:1000] or None,
            method="GET",
            host=str(data.get("host") or "")[:255] or None,
            path=str(data.get("path") or "/")[:2000],
            referer=str(data.get("referer") or "")[:2000] or None,
            headers={},
            sensor_id=sensor_id,
        )
        return JSONResponse({"address": visit["address"], "visit_id": visit["id"]})

    async def visits(request: Request) -> Response:
        sensor_id = await _sensor_of(site, request)
        if sensor_id is None:
            return _unauthorised()
        try:
            limit = max(1, min(1000, int(request.query_params.get("limit", "50"))))
        except ValueError:
            limit = 50
        rows = await run_in_threadpool(site.sensor_visits, sensor_id, limit)
        return JSONResponse(json.loads(json.dumps(rows, default=str)))

    async def address_any(request: Request) -> Response:
        return await address(request) if request.method == "POST" else _unauthorised()

    async def visits_any(request: Request) -> Response:
        return await visits(request) if request.method == "GET" else _unauthorised()

    # Every method routed: a 405 for the wrong one would confirm the path exists.
    return [
        Route(f"{API_PREFIX}/address", address_any, methods=_ANY_METHOD),
        Route(f"{API_PREFIX}/visits", visits_any, methods=_ANY_METHOD),
    ]


def fetch_address(
    server_url: str, key: str, ip: str, user_agent: str = "", path: str = "/", timeout: float = 2.0
) -> str | None:
    """Embed for Python sites: ask the trapline server for this visit's address (None on error)."""
    import urllib.request

    body = json.dumps({"ip": ip, "user_agent": user_agent, "path": path}).encode()
    req = urllib.request.Request(
        server_url.rstrip("/") + f"{API_PREFIX}/address",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return str(json.load(resp)["address"])
    except (OSError, ValueError, KeyError):
        return None


def register_sensor(settings: dict[str, Any], name: str, url: str) -> tuple[str, str, str]:
    """Add a sensor to the configured store; returns ``(sensor_id, api_key, php_embed)``."""
    from pathlib import Path

    from trapline.store.duckdb import open_store

    with open_store(Path(str(settings["data_dir"]))) as store:
        sensor_id, key = add_sensor(store, name)
    embed = EMBED_PHP.replace("{KEY}", key).replace("{URL}", url.rstrip("/"))
    return sensor_id, key, embed
