"""API keys: made once, shown once, kept as SHA-256, each with one role.

Roles: ``admin`` (everything, including keys and imports), ``analyst`` (read everything),
``sensor`` (its own visits and trap addresses only). A sensor key is also a honeypot sensor
(a ``sensors`` row with the same hash), so one key serves the honeypot's address API and the
REST API; keys made earlier with ``trapline sensor add`` are accepted as sensor keys.
"""

from __future__ import annotations

import hmac
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

from trapline.errors import NotFound, UsageError
from trapline.store.duckdb import Store
from trapline.traps.sensor import key_hash, mint_key

ROLES = ("admin", "analyst", "sensor")


@dataclass(slots=True, frozen=True)
class Principal:
    """Who is asking: a key's id, name and role (anonymous readers have no key)."""

    key_id: str | None
    name: str
    role: str  # admin | analyst | sensor | anonymous
    sensor_id: str | None = None

    @property
    def can_read_all(self) -> bool:
        return self.role in ("admin", "analyst", "anonymous")


ANONYMOUS = Principal(None, "anonymous", "anonymous")


@dataclass(slots=True, frozen=True)
class NewKey:
    id: str
    name: str
    role: str
    key: str
    sensor_id: str | None
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "key": self.key,
            "sensor_id": self.sensor_id,
            "created_at": self.created_at,
        }


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def create_key(store: Store, role: str, name: str | None = None) -> NewKey:
    """Make a key with ``role``; only its hash is stored. Sensor keys also register a sensor."""
    if role not in ROLES:
        raise UsageError(f"role {role!r} is not one of {', '.join(ROLES)}")
    key_id = ("s" if role == "sensor" else "k") + uuid.uuid4().hex[:12]
    label = (name or f"{role}-{key_id}").strip()[:200]
    key, now = mint_key(), _now()
    con = store.con
    con.execute("BEGIN TRANSACTION")
    try:
        if role == "sensor":
            con.execute(
                "INSERT INTO sensors (id, name, key_sha256, created_at) VALUES (?, ?, ?, ?)",
                [key_id, label, key_hash(key), now],
            )
        con.execute(
            "INSERT INTO api_keys (id, name, role, key_sha256, sensor_id, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [key_id, label, role, key_hash(key), key_id if role == "sensor" else None, now],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return NewKey(key_id, label, role, key, key_id if role == "sensor" else None, now)


def revoke_key(store: Store, key_id: str) -> None:
    """Revoke a key (a sensor key stops working for the honeypot's address API too)."""
    con = store.con
    row = con.execute(
        "SELECT role FROM api_keys WHERE id = ? AND revoked_at IS NULL", [key_id]
    ).fetchone()
    if row is None:
        raise NotFound(f"no active key {key_id!r}; list them with `trapline keys list`")
    con.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", [_now(), key_id])
    if row[0] == "sensor":
        # The sensors table has no revoked flag: an impossible hash locks the key out.
        con.execute("UPDATE sensors SET key_sha256 = 'revoked' WHERE id = ?", [key_id])


def list_keys(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every key without its hash, newest first."""
    cur = con.execute(
        "SELECT id, name, role, sensor_id, created_at, revoked_at FROM api_keys "
        "ORDER BY created_at DESC, id"
    )
    names = [d[0] for d in cur.description or []]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def authenticate(con: duckdb.DuckDBPyConnection, key: str) -> Principal | None:
    """The principal a presented key stands for, or None for an unknown or revoked key."""
    if not key or len(key) > 200:
        return None
    digest = key_hash(key)
    row = con.execute(
        "SELECT id, name, role, sensor_id, key_sha256 FROM api_keys "
        "WHERE key_sha256 = ? AND revoked_at IS NULL",
        [digest],
    ).fetchone()
    if row is not None and hmac.compare_digest(str(row[4]), digest):
        return Principal(str(row[0]), str(row[1]), str(row[2]), row[3])
    try:  # keys from `trapline sensor add` predate api_keys: they are sensor keys
        sensor = con.execute(
            "SELECT id, name FROM sensors WHERE key_sha256 = ? "
            "AND id NOT IN (SELECT id FROM api_keys WHERE revoked_at IS NOT NULL)",
            [digest],
        ).fetchone()
    except duckdb.CatalogException:
        return None
    if sensor is None:
        return None
    return Principal(str(sensor[0]), str(sensor[1]), "sensor", str(sensor[0]))


class KeyCache:
    """Recent answers of ``authenticate`` by key hash, for ``ttl_s`` seconds: a request then
    costs a dictionary read instead of a query. Revoking through the API clears it; a key
    revoked from the CLI stops working within ``ttl_s``."""

    def __init__(self, ttl_s: float = 10.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._seen: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def authenticate(
        self, connect: Callable[[], duckdb.DuckDBPyConnection], key: str
    ) -> Principal | None:
        """``connect`` is called only on a miss: a cached key costs no store turn."""
        digest = key_hash(key)
        now = time.monotonic()
        hit = self._seen.get(digest)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        found = authenticate(connect(), key)
        with self._lock:
            if len(self._seen) >= self.max_entries:
                self._seen.clear()
            self._seen[digest] = (now, found)
        return found

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()
