"""Shared CLI plumbing: the context object, option decorators and output helpers.

Commands stay thin: parse options, call one library function, render with these helpers.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console

from trapline.config import Config

if TYPE_CHECKING:
    from trapline.store.duckdb import Store

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class AppContext:
    """What every command gets via ``@pass_app``: resolved settings and global flags."""

    settings: dict[str, Any]
    quiet: bool = False
    extras: dict[str, Any] = field(default_factory=dict)
    config: Config = field(default_factory=lambda: Config({}, {}))  # settings with their origins

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


# Characters that steer a terminal rather than show: C0 and C1 controls (ESC, CSI as U+009B),
# DEL, bidi overrides and isolates (text that reads differently than it sorts), line separators.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# The same minus what json.dumps already escapes (C0, as \uXXXX).
_UNSAFE_JSON = re.compile("[\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(value: Any) -> str:
    """``value`` as one line of inert text for a terminal: every control character (ESC, CSI,
    newline, bidi override, ...) written as a visible escape such as ``\\x1b``.

    Everything printed from the store is attacker-controlled (subjects, HELO names, user
    agents, paths): renderers pass each value through this and print with ``console()``, whose
    markup is off, so ``[link=...]`` stays text as well.
    """
    text = "" if value is None else value if isinstance(value, str) else str(value)
    if text.isascii() and text.isprintable():
        return text
    return _UNSAFE.sub(_visible, text)


def console(*, stderr: bool = False) -> Console:
    """A Rich console for store data: no markup, no emoji codes, no highlighting; when piped,
    wide enough not to fold table rows."""
    con = Console(stderr=stderr, markup=False, emoji=False, highlight=False, soft_wrap=True)
    if not con.is_terminal:
        con = Console(
            stderr=stderr, markup=False, emoji=False, highlight=False, soft_wrap=True, width=200
        )
    return con


def to_json(value: Any) -> str:
    """JSON text with datetimes as ISO-8601 UTC (naive datetimes are UTC by convention).

    Terminal control characters json.dumps leaves raw (C1, bidi) are written as ``\\uXXXX``.
    """
    text = json.dumps(value, default=_default, ensure_ascii=False, indent=2)
    return _UNSAFE_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def echo_json(value: Any) -> None:
    sys.stdout.write(to_json(value) + "\n")


def _check_label(allow_all: bool) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def check(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        from trapline.errors import UsageError
        from trapline.store.labels import check_label

        if value is None:
            return None
        try:
            return check_label(value, allow_all=allow_all)
        except UsageError as exc:
            raise click.BadParameter(str(exc).removeprefix("--label ")) from exc

    return check


def ingest_label_option(func: F) -> F:
    """``--label``: what the ingested sources hold (None when not given, so callers can hint)."""
    return click.option(
        "--label",
        "label",
        default=None,
        metavar="LABEL",
        callback=_check_label(False),
        help="What these sources hold: spam (default), ham or a name; reports count spam only.",
    )(func)


def label_option(func: F) -> F:
    """``--label``: which messages a report counts (spam unless asked)."""
    return click.option(
        "--label",
        "label",
        default="spam",
        show_default=True,
        metavar="LABEL",
        callback=_check_label(True),
        help="Count messages with this label only (ham, a name given at ingest, or all).",
    )(func)


@contextmanager
def progress_bar(app: AppContext, what: str) -> Iterator[Callable[[int, int], None] | None]:
    """A rich bar on stderr for ``what`` (done of total), or nothing for -q and non-terminals."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    err = Console(stderr=True)
    if app.quiet or not err.is_terminal:
        yield None
        return
    with Progress(
        TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(), console=err, transient=True
    ) as bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def open_existing(app: AppContext, *, read_only: bool = True) -> Store:
    """The store in --data-dir for a command that reads (or derives from) stored data: a
    missing store is an error that says what to do, never a new empty store."""
    from trapline.errors import StoreError
    from trapline.store.duckdb import DB_FILENAME, open_store

    path = app.data_dir / DB_FILENAME
    if not path.is_file():
        raise StoreError(
            f"no store at {path}; run `trapline ingest PATH` (or `trapline demo`) first, "
            "or pass --data-dir"
        )
    return open_store(app.data_dir, read_only=read_only)


def check_window(since: Any, until: Any) -> None:
    """``--since`` after ``--until`` is a usage error (it would select nothing, silently)."""
    if since is not None and until is not None and since > until:
        raise click.UsageError(f"--since {since} is after --until {until}; swap them")


def hint(text: str) -> None:
    """One line on stderr saying why a result is empty and what to run (not silenced by -q:
    it explains the empty output)."""
    click.echo(f"hint: {text}", err=True)
