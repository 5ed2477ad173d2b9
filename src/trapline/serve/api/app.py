"""The web application: REST API under ``/api/v1``, dashboard pages at ``/``, one error body.

``create_app(state)`` builds a FastAPI app over a ``WebState`` (store access, caches, sessions,
settings). Every error answers ``{"error": {"status", "code", "message"}}`` (HTML pages render
the same message); times are ISO-8601 UTC with ``Z``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from trapline import __version__
from trapline.errors import Ambiguous, NotFound, ServiceError, TraplineError, UsageError
from trapline.serve.api.access import RequestTurns, StoreAccess
from trapline.serve.api.auth import Sessions
from trapline.serve.api.cache import AggregateCache
from trapline.serve.api.keys import KeyCache
from trapline.serve.api.responses import error_body
from trapline.serve.api.search_index import SearchIndexHolder
from trapline.serve.api.settings import WebSettings

API_PREFIX = "/api/v1"
DESCRIPTION = """Read what trapline caught and concluded: messages, campaigns, botnets, networks
and their scores, honeypot visits and harvesters, everything known about an IP, feeds and
exports; sensors fetch their own visits and addresses; admins manage keys and import mail.

Authenticate with `Authorization: Bearer KEY` (`trapline keys create --role analyst`). Errors
are `{"error": {"status", "code", "message"}}`; times are ISO-8601 UTC. Spam only by default
(`include_ham=true` to widen message searches)."""


@dataclass
class WebState:
    """What every request handler shares."""

    access: StoreAccess
    settings: dict[str, Any]
    anonymous_read: bool = False
    cache: AggregateCache = field(init=False)
    sessions: Sessions = field(init=False)
    keys: KeyCache = field(init=False)
    search: SearchIndexHolder = field(init=False)
    site: Any = None  # the honeypot's TrapSite when serve runs it: sensors can get addresses
    started_at: float = 0.0

    def __post_init__(self) -> None:
        self.cache = AggregateCache(self.access)
        web = WebSettings.from_settings(self.settings)
        self.sessions = Sessions(int(web.session_hours * 3600))
        self.keys = KeyCache()
        self.search = SearchIndexHolder(self.access, web.search_refresh_s)


def _status_of(exc: TraplineError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, ServiceError):  # read-only store, no honeypot in this process
        return 503
    if isinstance(exc, (UsageError, Ambiguous)):
        return 400
    return 500


def _wants_html(request: Request) -> bool:
    path = request.url.path
    return not path.startswith("/api/") and not path.endswith(".json")


def _error(request: Request, status: int, message: str, headers: Any = None) -> Response:
    if _wants_html(request) and status != 401:
        from trapline.serve.dashboard.pages import error_page

        return error_page(request, status, message)
    if _wants_html(request):
        from starlette.responses import RedirectResponse

        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
    return Response(error_body(status, message), status, headers, media_type="application/json")


def create_app(state: WebState) -> FastAPI:
    from trapline.serve.api import routes_admin, routes_read, timeline
    from trapline.serve.dashboard import pages

    app = FastAPI(
        title="trapline",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.web = state
    # Each request takes its turn on the store and gives it back when the response is sent.
    app.add_middleware(RequestTurns)

    @app.exception_handler(TraplineError)
    async def trapline_error(request: Request, exc: TraplineError) -> Response:
        return _error(request, _status_of(exc), str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return _error(request, 422, "; ".join(parts) or "invalid request")

    app.include_router(routes_read.router, prefix=API_PREFIX)
    app.include_router(routes_admin.router, prefix=API_PREFIX)
    app.include_router(timeline.router, prefix=API_PREFIX)
    app.include_router(pages.router)
    pages.mount_static(app)
    return app


def openapi_text(app: FastAPI) -> str:
    """The spec as committed in ``docs/openapi.json`` (stable key order, trailing newline)."""
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def packaged(path: str) -> bytes:
    return resources.files("trapline.serve.dashboard").joinpath(path).read_bytes()


__all__ = ["API_PREFIX", "HTTPException", "WebState", "create_app"]
