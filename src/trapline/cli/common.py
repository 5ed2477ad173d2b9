"""Shared CLI plumbing: the context object, option decorators and output helpers.

Commands stay thin: parse options, call one library function, render with these helpers.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class AppContext:
    """What every command gets via ``@pass_app``: resolved settings and global flags."""

    settings: dict[str, Any]
    quiet: bool = False
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return Path(self.settings["data_dir"])


pass_app = click.make_pass_decorator(AppContext)


def json_option(func: F) -> F:
    """``--json``: print machine-readable output instead of a table."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(func)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat() + ("Z" if value.tzinfo is None else "")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def to_json(value: Any) -> str:
    """JSON text with datetimes as ISO-8601 UTC (naive datetimes are UTC by convention)."""
    return json.dumps(value, default=_default, ensure_ascii=False, indent=2)


def echo_json(value: Any) -> None:
    sys.stdout.write(to_json(value) + "\n")
