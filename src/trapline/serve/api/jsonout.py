"""JSON for the API: ISO-8601 UTC times ending in ``Z``, bytes as hex, sets as lists."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any

import orjson

from trapline.store.queries import plain_value


def _default(value: Any) -> Any:
    """What orjson cannot write itself: store values (``plain_value``), sets, dataclasses."""
    if isinstance(value, (set, frozenset)):
        return list(value)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    converted = plain_value(value)
    if converted is value:
        raise TypeError(f"cannot serialise {type(value).__name__}")
    return converted


def dumps(value: Any) -> bytes:
    """UTF-8 JSON; naive datetimes are UTC (the store's convention) and get a ``Z``."""
    return orjson.dumps(
        value,
        default=_default,
        option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS,
    )
