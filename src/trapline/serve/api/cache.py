"""Cached aggregates: computed once per store version, served with an ETag.

Heavy aggregates (overview, network scores, botnets, the IP index) scan the whole store. They are
recomputed only when the store changed (``StoreAccess.version``, itself checked at most every
``check_s`` seconds), so a dashboard under load reads memory, not a million rows.
"""

from __future__ import annotations

import gc
import hashlib
import json
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from trapline.serve.api.access import StoreAccess
from trapline.serve.api.jsonout import dumps


@dataclass(slots=True, frozen=True)
class Cached:
    value: Any
    body: bytes  # the JSON text, so a hit costs no serialisation
    etag: str
    version: tuple[Any, ...]


class AggregateCache:
    """``get(key, compute)`` → the value for the store's current version (one compute at a time
    per key; other askers wait for it rather than scanning too)."""

    def __init__(
        self, access: StoreAccess, *, check_s: float = 2.0, max_entries: int = 512
    ) -> None:
        self.access = access
        self.check_s = check_s
        self.max_entries = max_entries
        self._entries: dict[Hashable, Cached] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def version(self) -> tuple[Any, ...]:
        return self.access.version_now(self.check_s)

    def get(self, key: Hashable, compute: Callable[[], Any], *, serialise: bool = True) -> Cached:
        version = self.version()
        hit = self._entries.get(key)
        if hit is not None and hit.version == version:
            return hit
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            hit = self._entries.get(key)
            if hit is not None and hit.version == version:
                return hit
            value = compute()
            gc.freeze()  # long-lived aggregates: keep the collector from walking them again
            body = dumps(value) if serialise else b""
            etag = '"' + hashlib.sha256(body or repr(version).encode()).hexdigest()[:32] + '"'
            entry = Cached(value, body, etag, version)
            with self._guard:
                if len(self._entries) >= self.max_entries:
                    self._entries.pop(next(iter(self._entries)))
                self._entries[key] = entry
            return entry

    def clear(self) -> None:
        with self._guard:
            self._entries.clear()
        self.access.forget_version()


def params_key(name: str, **params: Any) -> tuple[str, str]:
    return name, json.dumps(params, sort_keys=True, default=str)
