"""Commands for volume over time: timeline, changes, takedown, report and the McColo replay."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click
import duckdb
from rich.table import Table

from trapline.cli.common import AppContext, console, echo_json, json_option, pass_app, safe, to_json
from trapline.store.duckdb import open_store

BY_CHOICES = ["none", "botnet", "campaign", "asn", "harvester-asn"]


def _by_option(default: str | None) -> Any:
    return click.option(
        "--by",
        type=click.Choice(BY_CHOICES),
        default=default,
        show_default=default is not None,
        help="Group the series by this (default for changes: botnet when botnets exist, "
        "else campaign).",
    )


_freq_option = click.option(
    "--freq", type=click.Choice(["hour", "day", "week"]), default="day", show_default=True,
    help="Period length.",
)  # fmt: skip
_label_option = click.option(
    "--label", default="spam", show_default=True,
    help="Count messages with this label only; 'all' counts every message.",
)  # fmt: skip


def _default_by(con: duckdb.DuckDBPyConnection) -> str:
    (n,) = con.execute("SELECT count(*) FROM botnets").fetchall()[0]
    if n:
        return "botnet"
    (n,) = con.execute("SELECT count(*) FROM campaigns").fetchall()[0]
    return "campaign" if n else "none"


@click.command("timeline")
@_by_option("none")
@_freq_option
@_label_option
@click.option("--top", type=int, default=10, show_default=True, help="Groups shown/charted.")
@click.option(
    "--chart", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Also write an SVG chart here (and its data as <name>.json beside it).",
)  # fmt: skip
@json_option
@pass_app
def timeline_cmd(
    app: AppContext, by: str, freq: str, label: str, top: int, chart: Path | None, as_json: bool
) -> None:
    """Message volume per period from the received time (never the Date: header).

    Periods in which no mail at all arrived are collection gaps, shown as gaps, not zeros.

    Example: trapline timeline --by botnet --freq day --chart volume.svg
    """
    from trapline.analyze.timeline import series

    with open_store(app.data_dir, read_only=True) as store:
        s = series(store.con, by=by, freq=freq, label=label)
    data = s.as_dict(top=top)
    if chart is not None:
        from trapline.report.charts import series_chart

        svg, twin = series_chart(s, top=top)
        chart.write_text(svg, encoding="utf-8")
        chart.with_suffix(".json").write_text(to_json(twin) + "\n", encoding="utf-8")
    if as_json:
        echo_json(data)
        return
    table = Table("period", "total", *[safe(g["name"][:20]) for g in data["groups"][:top]])
    for i, period in enumerate(s.periods):
        total = data["total"][i]
        cells = ["gap" if total is None else str(total)]
        cells += ["" if total is None else str(g["values"][i]) for g in data["groups"][:top]]
        table.add_row(
            f"{period:%Y-%m-%d %H:%M}" if freq == "hour" else f"{period:%Y-%m-%d}", *cells
        )
    console().print(table)
    if s.no_received_time:
        click.echo(f"{s.no_received_time} messages have no received time (Date: only): left out")


@click.command("changes")
@_by_option(None)
@_freq_option
@_label_option
@click.option("--per-group", is_flag=True, help="Also list change points inside each group.")
@json_option
@pass_app
def changes_cmd(
    app: AppContext, by: str | None, freq: str, label: str, per_group: bool, as_json: bool
) -> None:
    """Change points in volume: when, level before and after, size, and who explains it.

    Steps, one-day bursts and slow recoveries; the attribution shares of each change add up
    to 100% (the rest is "other"). See docs/timeline.md for the cost and the penalty.

    Example: trapline changes --by botnet --json
    """
    from trapline.analyze.changes import Params, detect, detect_groups
    from trapline.analyze.timeline import series

    params = Params.from_settings(app.settings)
    with open_store(app.data_dir, read_only=True) as store:
        s = series(store.con, by=by or _default_by(store.con), freq=freq, label=label)
    found = detect(s, params) + (detect_groups(s, params) if per_group else [])
    if as_json:
        echo_json([c.as_dict() for c in found])
        return
    if not found:
        click.echo("no change points: the volume stayed level (or the store is too short)")
        return
    table = Table("at", "series", "kind", "before", "after", "change", "explained by")
    for c in found:
        who = safe(", ".join(f"{a.name[:24]} {a.share:.0%}" for a in c.attribution[:4]))
        table.add_row(
            f"{c.at:%Y-%m-%d %H:%M}", safe(c.group.name[:20]) if c.group else "all", c.kind,
            f"{c.before:.1f}", f"{c.after:.1f}", "new" if c.relative_change is None else f"{c.relative_change:+.0%}", who,
        )  # fmt: skip
    console().print(table)


@click.command("takedown")
@click.argument("network")
@click.option("--at", "at", type=click.DateTime(), default=None,
              help="Date (UTC) the network goes dark [default: the end of the data].")  # fmt: skip
@_label_option
@json_option
@pass_app
def takedown_cmd(
    app: AppContext, network: str, at: datetime | None, label: str, as_json: bool
) -> None:
    """Share of spam predicted to stop if NETWORK (an AS or a prefix) goes dark at --at.

    Uses only data from before --at: campaigns and botnets whose C&C servers (feeds), senders,
    landing pages or harvesters sit in the network. When the data after --at shows a drop,
    prediction and observation are printed side by side. See docs/timeline.md.

    Example: trapline takedown AS26780 --at 2008-11-11 --json
    """
    from trapline.analyze.takedown import predict

    with open_store(app.data_dir, read_only=True) as store:
        result = predict(store.con, network, at, settings=app.settings, label=label)
    if as_json:
        echo_json(result.as_dict())
        return
    observed = (
        "no drop in the data"
        if result.observed_share is None
        else f"observed {result.observed_share:.0%}"
    )
    click.echo(
        f"{result.network} dark at {result.at:%Y-%m-%d %H:%M}: predicted "
        f"{result.predicted_share:.0%} of {result.messages:,} messages in the "
        f"{result.window_days:g} days before | {observed}"
    )
    if not result.dependents:
        click.echo("nothing in the window depends on this network")
        return
    table = Table("kind", "id", "name", "messages", "weight", "evidence")
    for d in result.dependents[:20]:
        table.add_row(
            d.kind,
            safe(d.id),
            safe(d.name[:30]),
            str(d.messages),
            f"{d.weight:g}",
            safe(", ".join(d.evidence[:3])),
        )
    console().print(table)


@click.command("report")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("report.html"),
              show_default=True, help="The HTML page; its data goes to <name>.json beside it.")  # fmt: skip
@click.option("--network", "networks", multiple=True,
              help="Network to predict a takedown for (repeatable) [default: top 3 senders].")  # fmt: skip
@click.option("--at", "at", type=click.DateTime(), default=None, help="Takedown date (UTC).")
@_freq_option
@pass_app
def report_cmd(
    app: AppContext, out: Path, networks: tuple[str, ...], at: datetime | None, freq: str
) -> None:
    """One self-contained HTML page: timeline, change points, networks, takedowns.

    Inline SVG charts, each with its data as a JSON twin; nothing is fetched when opened.

    Example: trapline report --out report.html --network AS26780 --at 2008-11-11
    """
    from trapline.report.page import build

    with open_store(app.data_dir, read_only=True) as store:
        page = build(store.con, settings=app.settings, networks=networks, takedown_at=at, freq=freq)
    out.write_text(page.html, encoding="utf-8")
    out.with_suffix(".json").write_text(to_json(page.data) + "\n", encoding="utf-8")
    click.echo(f"wrote {out} and {out.with_suffix('.json')}")


@click.group("replay")
def replay() -> None:
    """Build synthetic replay corpora of historic events (clearly labelled as replays).

    Example: trapline replay mccolo --out ./mccolo-2008
    """


@replay.command("mccolo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write replay.mbox, feeds.csv, truth.json and README.md into.")  # fmt: skip
@click.option("--seed", type=int, default=2008, show_default=True, help="Random seed.")
@click.option("--messages", type=click.IntRange(min=500), default=20_000, show_default=True,
              help="How many messages to write.")  # fmt: skip
@click.option(
    "--corpus", type=click.Path(exists=True, path_type=Path), default=None,
    help="Spam to take bodies from [default: ../shared/data/mail when present, else the "
    "bundled SpamAssassin sample].",
)  # fmt: skip
@json_option
def replay_mccolo(out: Path, seed: int, messages: int, corpus: Path | None, as_json: bool) -> None:
    """The McColo takedown of 11 Nov 2008 as a replay corpus (real spam, re-timed).

    Real spam bodies under Received chains from 2008 sender addresses, botnets with their
    shares from the public record, C&C servers in AS26780, the drop at 21:30 UTC, Srizbi's
    brief comeback and the slow recovery. Ingest replay.mbox, import feeds.csv; truth.json
    holds the answers. docs/replay.md has the sources.

    Example: trapline replay mccolo --out ./mccolo-2008 --seed 7
    """
    from trapline.replay.mccolo import build_replay

    started = datetime.now()
    result = build_replay(out, seed=seed, messages=messages, corpus=corpus)
    seconds = (datetime.now() - started).total_seconds()
    info = {
        "out": str(result.out), "messages": result.messages, "campaigns": result.campaigns,
        "bots": result.bots, "templates": result.templates,
        "drop_share": round(result.drop_share, 4), "seconds": round(seconds, 2),
    }  # fmt: skip
    if as_json:
        echo_json(info)
        return
    click.echo(
        f"wrote {result.messages:,} messages ({result.campaigns} campaigns, {result.bots:,} bots, "
        f"{result.templates:,} real templates) to {result.out}; drop {result.drop_share:.0%}. "
        f"Next: trapline ingest {result.out}/replay.mbox && trapline feeds import "
        f"{result.out}/feeds.csv"
    )


commands: list[click.Command] = [timeline_cmd, changes_cmd, takedown_cmd, report_cmd, replay]
