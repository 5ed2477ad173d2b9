"""``trapline status``: is a ``serve`` running on this data dir, where, and what has it done."""

from __future__ import annotations

import time
from typing import Any

import click

from trapline.cli.common import AppContext, echo_json, json_option, pass_app


def _lines(report: dict[str, Any]) -> list[str]:
    serve = report["serve"]
    out = [f"data dir: {report['data_dir']}"]
    if not serve["running"]:
        out.append("serve: not running on this data dir (start it with `trapline serve`)")
    else:
        where = ", ".join(f"{s['name']} {s['host']}:{s['port']}" for s in serve.get("services", []))
        up = time.time() - float(serve.get("started_at") or time.time())
        drain = f" (drain pid {serve['drain_pid']})" if serve.get("drain_pid") else ""
        out.append(
            f"serve: running, pid {serve.get('pid')}{drain}, up {up:.0f}s; {where or 'starting'}"
        )
        c = serve.get("counters") or {}
        out.append(
            f"  {c.get('accepted', 0)} accepted, {c.get('drained', 0)} drained "
            f"({c.get('new', 0)} new), {c.get('stages_run', 0)} stage runs, "
            f"drain lag {float(c.get('drain_lag_s', 0)):.1f}s, "
            f"{c.get('drain_errors', 0)} drain errors"
        )
        if c.get("last_error"):
            out.append(f"  WARNING: the drain is failing ({c['last_error']}); mail stays spooled")
    writer = report["store_writer"]
    if writer:
        out.append(f"store: being written by `{writer['who']}` (pid {writer['pid']})")
    else:
        out.append("store: no writer right now")
    return out


@click.command()
@json_option
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Say whether `trapline serve` runs on this data dir, on which ports, and what it did.

    Shows the messages the trap accepted, those drained into the store, stage runs, how far
    the drain lags behind the spool, and which process writes to the store right now. Reads
    only small files next to the store, so it answers at once even while the store is busy.

    Example: trapline status --json
    """
    from trapline.serve.status import status as read_status

    report = read_status(app.data_dir)
    if as_json:
        echo_json(report)
        return
    for line in _lines(report):
        click.echo(line)


commands: list[click.Command] = [status]
