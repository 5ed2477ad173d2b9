"""Who is asking: a Bearer key, the dashboard's session cookie, or (if allowed) nobody.

The dashboard asks for a key once and keeps a random session token in an HTTP-only,
SameSite=Strict cookie (``Secure`` whenever the request came over HTTPS); the key itself never
goes back to the browser. Sessions live in this process and end with it.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

from fastapi import HTTPException, Request

from trapline.serve.api.keys import ANONYMOUS, Principal

COOKIE = "trapline_session"


class AuthError(HTTPException):
    """401/403 with the WWW-Authenticate header a Bearer API answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message, headers={"WWW-Authenticate": "Bearer"})


@dataclass(slots=True)
class Session:
    principal: Principal
    expires: float


class Sessions:
    """Dashboard sessions: token → principal, bounded in number and age."""

    def __init__(self, max_age_s: int, max_sessions: int = 10_000) -> None:
        self.max_age_s = max_age_s
        self.max_sessions = max_sessions
        self._by_token: dict[str, Session] = {}
        self._lock = threading.Lock()

    def start(self, principal: Principal) -> str:
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            if len(self._by_token) >= self.max_sessions:
                for old in [t for t, s in self._by_token.items() if s.expires < now]:
                    del self._by_token[old]
                if len(self._by_token) >= self.max_sessions:
                    self._by_token.pop(next(iter(self._by_token)))
            self._by_token[token] = Session(principal, now + self.max_age_s)
        return token

    def get(self, token: str) -> Principal | None:
        with self._lock:
            found = self._by_token.get(token)
            if found is None:
                return None
            if found.expires < time.monotonic():
                del self._by_token[token]
                return None
            return found.principal

    def end(self, token: str) -> None:
        with self._lock:
            self._by_token.pop(token, None)

    def end_key(self, key_id: str) -> None:
        """A revoked key's sessions end at once."""
        with self._lock:
            for token in [t for t, s in self._by_token.items() if s.principal.key_id == key_id]:
                del self._by_token[token]


def bearer(request: Request) -> str | None:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None


def identify(request: Request) -> Principal | None:
    """The key's or session's principal; None when neither is presented.

    Raises 401 for a presented key that is unknown or revoked (never falls back to anonymous).
    """
    state = request.app.state.web
    key = bearer(request)
    if key is not None:
        found = state.keys.authenticate(state.access.cursor, key)
        if found is None:
            raise AuthError(401, "unknown or revoked API key; make one with `trapline keys create`")
        return found
    token = request.cookies.get(COOKIE)
    if token:
        return state.sessions.get(token)
    return None


def reader(request: Request) -> Principal:
    """Dependency: anyone who may read everything (analyst, admin, or anonymous when enabled)."""
    who = identify(request)
    if who is None:
        if request.app.state.web.anonymous_read:
            return ANONYMOUS
        raise AuthError(401, "an API key is required: send `Authorization: Bearer KEY`")
    if not who.can_read_all:
        raise AuthError(403, f"a {who.role} key cannot read this; use an analyst or admin key")
    return who


def admin(request: Request) -> Principal:
    """Dependency: admin keys only (never anonymous)."""
    who = identify(request)
    if who is None:
        raise AuthError(401, "an admin API key is required: send `Authorization: Bearer KEY`")
    if who.role != "admin":
        raise AuthError(403, f"a {who.role} key cannot do this; it needs an admin key")
    return who


def sensor(request: Request) -> Principal:
    """Dependency: a sensor key (its own data only)."""
    who = identify(request)
    if who is None:
        raise AuthError(401, "a sensor API key is required: send `Authorization: Bearer KEY`")
    if who.role != "sensor" or not who.sensor_id:
        raise AuthError(403, f"a {who.role} key is not a sensor key; use the sensor's own key")
    return who
