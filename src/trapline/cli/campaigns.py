"""Commands for campaigns and botnets; defines the ``analyze`` group other areas extend.

Other areas add subcommands with ``from trapline.cli.campaigns import analyze`` and
``analyze.add_command(...)``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import unquote

import click
from rich.table import Table

from trapline.cli.common import (
    AppContext,
    check_window,
    console,
    echo_json,
    hint,
    json_option,
    label_option,
    open_existing,
    pass_app,
    safe,
)
from trapline.errors import UsageError
from trapline.store.duckdb import Store


def _store(app: AppContext, *, read_only: bool) -> Store:
    return open_existing(app, read_only=read_only)


def _count(store: Store, sql: str) -> int:
    return int(store.con.execute(sql).fetchall()[0][0])


def _day(value: Any) -> str:
    return value.strftime("%Y-%m-%d") if isinstance(value, datetime) else str(value or "")[:10]


def _fmt(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, list):
        return safe(", ".join(str(v) for v in value[:3]) + (" ..." if len(value) > 3 else ""))
    return safe(value)


@click.group("analyze")
def analyze() -> None:
    """Run analyses over the stored mail (derived tables; safe to re-run).

    Example: trapline analyze campaigns && trapline analyze botnets
    """


@analyze.command("campaigns")
@click.option("--rebuild", is_flag=True, help="Forget campaign state and cluster everything again.")
@click.option("--limit", type=int, default=None, help="Cluster at most this many new messages.")
@click.option(
    "--refingerprint",
    is_flag=True,
    help="Recompute every stored fingerprint first (after an upgrade); implies --rebuild.",
)
@label_option
@json_option
@pass_app
def analyze_campaigns_cmd(
    app: AppContext,
    rebuild: bool,
    limit: int | None,
    refingerprint: bool,
    label: str,
    as_json: bool,
) -> None:
    """Group messages into campaigns (incremental: only new messages are processed).

    Near-duplicate texts (MinHash + LSH, Jaccard >= campaign_jaccard) and shared tracking-URL
    templates within campaign_url_window_days join one campaign. Only spam is clustered unless
    given --label (another label than the last run's rebuilds). See docs/campaigns.md.

    Example: trapline analyze campaigns
    """
    from trapline.analyze.campaigns import analyze_campaigns

    with _store(app, read_only=False) as store:
        run = analyze_campaigns(
            store,
            app.settings,
            rebuild=rebuild,
            limit=limit,
            refingerprint=refingerprint,
            label=label,
        )
    if as_json:
        echo_json({k: getattr(run, k) for k in run.__slots__})
        return
    click.echo(
        f"fingerprinted {run.fingerprinted}, clustered {run.clustered} new messages, "
        f"{run.campaigns_touched} campaigns updated, {run.merges} merged"
        + (" (rebuilt from scratch)" if run.rebuilt else "")
    )


@analyze.command("botnets")
@json_option
@pass_app
def analyze_botnets_cmd(app: AppContext, as_json: bool) -> None:
    """Group campaigns that share sending hosts into botnets (run after `analyze campaigns`).

    Example: trapline analyze botnets
    """
    from trapline.analyze.botnets import analyze_botnets

    with _store(app, read_only=False) as store:
        if not _count(store, "SELECT count(*) FROM campaigns"):
            raise UsageError(
                "no campaigns to group into botnets: run `trapline analyze campaigns` first"
            )
        run = analyze_botnets(store, app.settings)
    if as_json:
        echo_json({k: getattr(run, k) for k in run.__slots__})
        return
    click.echo(
        f"{run.botnets} botnets from {run.campaigns} campaigns, {run.hosts} hosts, "
        f"{run.links} campaign links"
    )


@click.command("campaigns")
@click.option("--top", type=int, default=20, show_default=True, help="How many to list.")
@click.option("--since", type=click.DateTime(), default=None, help="Active on or after (UTC).")
@click.option("--until", type=click.DateTime(), default=None, help="Active before (UTC).")
@click.option("--min-size", type=int, default=1, show_default=True, help="Smallest size shown.")
@json_option
@pass_app
def campaigns_cmd(
    app: AppContext,
    top: int,
    since: datetime | None,
    until: datetime | None,
    min_size: int,
    as_json: bool,
) -> None:
    """List the largest campaigns.

    Example: trapline campaigns --top 20 --since 2026-01-01 --json
    """
    from trapline.analyze.campaign_report import list_campaigns

    check_window(since, until)
    with _store(app, read_only=True) as store:
        rows = list_campaigns(store.con, top=top, since=since, until=until, min_size=min_size)
        analysed = _count(store, "SELECT count(*) FROM campaign_state")
    if not rows and not as_json:
        hint(
            "no campaign matches --since/--until/--min-size"
            if analysed
            else "no campaigns yet: run `trapline analyze campaigns` to group the stored spam"
        )
    if as_json:
        echo_json(rows)
        return
    if not rows:
        return
    # One line per campaign at 80 columns: first day, size, senders and the top subject (cut
    # with an ellipsis); `trapline campaign ID` and --json show everything.
    table = Table(show_edge=False)
    table.add_column("id", no_wrap=True, min_width=17)
    table.add_column("size", justify="right", no_wrap=True, min_width=4)
    table.add_column("first seen", no_wrap=True, min_width=10)
    table.add_column("IPs", justify="right", no_wrap=True, min_width=3)
    table.add_column("top subject", no_wrap=True, overflow="ellipsis")
    for r in rows:
        subject = " ".join(str((r["subjects"] or [""])[0]).split())
        table.add_row(
            safe(r["id"]), str(r["size"]), _day(r["first_seen"]), str(r["n_origin_ips"]),
            safe(subject),
        )  # fmt: skip
    console().print(table)


@click.command("campaign")
@click.argument("ident")
@json_option
@pass_app
def campaign_cmd(app: AppContext, ident: str, as_json: bool) -> None:
    """Show one campaign: members over time, templates, URLs, senders, networks.

    IDENT is a campaign id, a unique prefix of one, or an id that was merged into another.

    Example: trapline campaign c3dc2769
    """
    from trapline.analyze.campaign_report import campaign_detail

    with _store(app, read_only=True) as store:
        detail = campaign_detail(store.con, ident)
    if as_json:
        echo_json(detail)
        return
    for key in ("id", "size", "first_seen", "last_seen", "representative", "domains",
                "origin_ips", "asns", "merged_from"):  # fmt: skip
        click.echo(f"{key:>15}: {_fmt(detail[key])}")
    click.echo("       subjects:")
    for subject in detail["subjects"] or ["(none)"]:
        click.echo(f"                 {safe(' '.join(str(subject).split()))}")
    click.echo("  url templates: (<d> digits, <h> hex id, <a> random letters, name# name+number)")
    for template in detail["url_templates"] or ["(none)"]:
        click.echo(f"                 {safe(unquote(str(template)))}")
    click.echo(
        "        per day: "
        + safe(", ".join(f"{d['day']}={d['messages']}" for d in detail["per_day"]))
    )


@click.command("botnets")
@click.option("--top", type=int, default=50, show_default=True, help="How many to list.")
@json_option
@pass_app
def botnets_cmd(app: AppContext, top: int, as_json: bool) -> None:
    """List botnets: campaigns, sending hosts, networks and volume share over time.

    Example: trapline botnets --json
    """
    from trapline.analyze.botnets import list_botnets

    with _store(app, read_only=True) as store:
        rows = list_botnets(store.con, top=top)
        campaigns = _count(store, "SELECT count(*) FROM campaigns")
    if not rows and not as_json:
        hint(
            "no botnets: run `trapline analyze botnets` (if it has run, no campaigns share "
            "enough sending hosts; see botnet_min_shared_hosts)"
            if campaigns
            else "no botnets yet: run `trapline analyze campaigns`, then `trapline analyze botnets`"
        )
    if as_json:
        echo_json(rows)
        return
    if not rows:
        return
    table = Table("id", "campaigns", "hosts", "messages", "first seen", "last seen", "families")
    for r in rows:
        table.add_row(
            safe(r["id"]), str(r["n_campaigns"]), str(r["n_hosts"]), str(r["messages"]),
            _fmt(r["first_seen"]), _fmt(r["last_seen"]), _fmt(r["families"]),
        )  # fmt: skip
    console().print(table)


commands: list[click.Command] = [analyze, campaigns_cmd, campaign_cmd, botnets_cmd]
