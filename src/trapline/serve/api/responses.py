"""Response helpers shared by the API routes and the dashboard pages."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from trapline.serve.api.cache import Cached
from trapline.serve.api.jsonout import dumps


def error_body(status: int, message: str) -> bytes:
    code = {
        400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
        405: "method_not_allowed", 409: "conflict", 413: "too_large", 422: "invalid_parameter",
        503: "unavailable",
    }.get(status, "error")  # fmt: skip
    return dumps({"error": {"status": status, "code": code, "message": message}})


def json_response(
    value: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(dumps(value), status, headers, media_type="application/json")


def cached_response(request: Request, entry: Cached, *, max_age: int = 10) -> Response:
    """A cached aggregate with its ETag; 304 when the client already has this version."""
    headers = {"ETag": entry.etag, "Cache-Control": f"private, max-age={max_age}"}
    if request.headers.get("if-none-match") == entry.etag:
        return Response(status_code=304, headers=headers)
    return Response(entry.body, 200, headers, media_type="application/json")
