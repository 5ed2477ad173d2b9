"""Commands over the core store: ingest, stats, show, query, demo.

Each command parses options, calls one library function and renders its result; the work lives
in ``trapline.pipeline``, ``trapline.store.queries`` and ``trapline.pipeline.demo``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from trapline.cli.common import (
    AppContext,
    console,
    echo_json,
    ingest_label_option,
    json_option,
    label_option,
    pass_app,
    safe,
    to_json,
)
from trapline.pipeline.run import IngestSummary, ingest
from trapline.store.duckdb import Store

_err = console(stderr=True)
_out = console()


class _Bar:
    """The ingest bar's updates (``on_progress``) and its last frame (``finish``)."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.task = bar.add_task("ingest", total=None, msgs="0", rate="-")

    def __call__(self, done: int, nbytes: int, total: int | None) -> None:
        elapsed = self.bar.tasks[0].elapsed or 0.0
        rate = f"{done / elapsed:,.0f}" if elapsed > 0 else "-"
        # Nothing finished yet (the first batch is still being parsed): keep pulsing, so the
        # bar moves from the first second instead of sitting at 0%.
        self.bar.update(
            self.task, completed=nbytes, total=total if done else None, msgs=f"{done:,}", rate=rate
        )

    def finish(self, summary: IngestSummary) -> None:
        """Last frame: the summary's own count and rate, so the two never disagree."""
        self.bar.update(
            self.task,
            completed=summary.bytes_read,
            total=summary.bytes_read or None,
            msgs=f"{summary.read:,}",
            rate=f"{summary.rate():,.0f}",
        )


@contextmanager
def _progress(app: AppContext) -> Iterator[_Bar | None]:
    """A rich bar on stderr (messages, MB, msgs/s), or nothing for --quiet and non-terminals."""
    if app.quiet or not _err.is_terminal:
        yield None
        return
    columns = (
        TextColumn("[bold]ingest"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[msgs]} msgs · {task.fields[rate]} msgs/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=_err, transient=False, refresh_per_second=10) as bar:
        yield _Bar(bar)


def _note(app: AppContext) -> Callable[[str], None]:
    def note(text: str) -> None:
        # --quiet silences notes too; problems still count in the summary line and the store
        # (quarantine), so nothing is lost, only not narrated.
        if not app.quiet:
            _err.print(Text.assemble(("note:", "yellow"), " ", safe(text)))

    return note


def _summary(summary: IngestSummary) -> None:
    _err.print(summary.line())
    for line in summary.stage_notes:
        _err.print(safe(line))


@click.command("ingest")
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--trust",
    "trust",
    multiple=True,
    metavar="SPEC",
    help="Trusted relay: CIDR, IP, host name or .domain (repeatable); private ranges always are.",
)
@ingest_label_option
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Parse processes (0 = one per core).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Messages per write transaction [2000].",
)
@click.option(
    "--follow-symlinks",
    is_flag=True,
    default=None,
    help="Read symlinks that point out of the folders given (default: a source problem).",
)
@pass_app
def ingest_cmd(
    app: AppContext,
    paths: tuple[str, ...],
    trust: tuple[str, ...],
    label: str | None,
    workers: int | None,
    batch_size: int | None,
    follow_symlinks: bool | None,
) -> None:
    """Store mail (mbox, Maildir, .eml, folders, .gz/.bz2/.xz/.zst, - for stdin) and parse it.

    Raw bytes are archived first (content-addressed); ingesting the same bytes again stores
    nothing. Interrupted runs resume where they stopped. Every message keeps the --label it was
    first stored with; analyses and reports count spam unless given --label.

    Example: trapline ingest ~/spam/2008-11.mbox ./Maildir --trust mx.example.org
    """
    from trapline.store.labels import SPAM, looks_like_ham

    if label is None and not app.quiet:
        hammy = [p for p in paths if looks_like_ham(p)]
        if hammy:
            _note(app)(
                f"{hammy[0]} looks like legitimate mail; stored as spam: pass --label ham if it is"
            )
    stdin = sys.stdin.buffer if "-" in paths else None
    with _progress(app) as on_progress:
        try:
            settings = app.settings
            if follow_symlinks:
                settings = {**settings, "follow_symlinks": True}
            summary = ingest(
                paths,
                settings=settings,
                trust=trust,
                workers=workers,
                batch_size=batch_size,
                stdin=stdin,
                on_progress=on_progress,
                on_note=_note(app),
                label=label or SPAM,
            )
        except KeyboardInterrupt:
            _err.print("interrupted: committed batches are kept; run the same command to resume")
            sys.exit(130)
        if on_progress is not None:
            on_progress.finish(summary)
    _summary(summary)
    if summary.read == 0 and summary.resumed == 0:
        # A script must see that nothing arrived, not a green run over unreadable input.
        _err.print(
            "error: no message could be read from the given paths"
            + (f" ({summary.problems} source problems above)" if summary.problems else "")
            + "; check the paths and formats (`trapline stats` lists the problems)",
        )
        sys.exit(1)


def _open_read(app: AppContext) -> Store:
    from trapline.store.duckdb import open_store

    return open_store(app.data_dir, read_only=True)


@click.command("stats")
@json_option
@label_option
@pass_app
def stats_cmd(app: AppContext, as_json: bool, label: str) -> None:
    """Counts, date range, top origin networks and parse problems of the store.

    Counts every message; the date range and the tables count spam only unless given --label.

    Example: trapline stats --label all --json
    """
    from trapline.store.queries import stats

    with _open_read(app) as store:
        report = stats(store.con, label=label)
    if as_json:
        echo_json(report)
    else:
        render_stats(report)


def render_stats(report: dict[str, Any]) -> None:
    """The text form of ``stats`` (also used by ``demo``)."""
    out = _out
    out.print(
        f"seen {report['seen']:,}  messages {report['messages']:,}  quarantined "
        f"{report['quarantined']:,} ({report['source_problems']:,} source problems)"
    )
    labels = report.get("labels") or {}
    if labels:
        shown = ", ".join(f"{n:,} {safe(name)}" for name, n in labels.items())
        which = "every label" if report["label"] == "all" else f"label {safe(report['label'])}"
        out.print(f"labels {shown}; below: {which} ({report['counted']:,})")
    out.print(f"received {safe(report['first_received'])} .. {safe(report['last_received'])}")
    for title, key, cols in (
        ("top origin networks", "top_origin_networks", ("network", "name", "messages", "ips")),
        ("top subjects", "top_subjects", ("subject", "messages")),
        ("parse problems (quarantine)", "quarantine_reasons", ("reason", "count")),
        ("parse problems (defects)", "top_defects", ("defect", "count")),
    ):
        rows = report.get(key) or []
        if not rows:
            continue
        table = Table(title=title, title_justify="left", show_edge=False)
        for col in cols:
            # Long subjects and names are cut, not folded: the table stays readable at 80 columns.
            wide = col in ("subject", "name")
            table.add_column(
                col,
                justify="right" if col in ("messages", "ips", "count") else "left",
                max_width=40 if wide else None,
                overflow="ellipsis" if wide else "fold",
                no_wrap=wide,
            )
        for row in rows[:10]:
            table.add_row(*(safe(row.get(c)) for c in cols))
        out.print(table)
        if len(rows) > 10:
            out.print(f"… {len(rows) - 10} more (--json has all)")


@click.command("show")
@click.argument("message_id")
@json_option
@click.option("--raw", is_flag=True, help="Write the exact original bytes to stdout.")
@pass_app
def show_cmd(app: AppContext, message_id: str, as_json: bool, raw: bool) -> None:
    """One message: hops (origin marked), origin IP, URLs, attachments, defects.

    MESSAGE_ID is the SHA-256 id or a unique prefix of it.

    Example: trapline show 3f2a9c --raw > copy.eml
    """
    from trapline.store.queries import show
    from trapline.store.raw import read_raw, resolve_id

    with _open_read(app) as store:
        if raw:
            data = read_raw(store.con, resolve_id(store.con, message_id))
            stream = sys.stdout.buffer
            stream.write(data)
            stream.flush()
            return
        view = show(store.con, message_id)
    if as_json:
        echo_json(view)
        return
    render_message(view)


def render_message(view: dict[str, Any]) -> None:
    out = _out
    w = 20
    for key in (
        "id", "status", "label", "source", "size", "received_at", "received_at_source", "subject",
    ):  # fmt: skip
        if key in view:
            out.print(f"{key:<{w}}{safe(view[key])}")
    if view["status"] != "parsed":
        out.print(f"{'quarantine':<{w}}{safe(to_json(view.get('quarantine')))}")
        return
    sender = view["from"]
    out.print(f"{'from':<{w}}{safe(sender['name'])} <{safe(sender['addr'])}>")
    hop = f"  (hop {view['origin_hop']})" if view["origin_ip"] else ""
    out.print(f"{'origin_ip':<{w}}{safe(view['origin_ip'] or '-')}{hop}")
    if view.get("origin_asn") is not None:
        name = safe(view.get("origin_as_name") or "name unknown")
        out.print(f"{'origin_network':<{w}}AS{view['origin_asn']} {name}")
        out.print(f"{'origin_prefix':<{w}}{safe(view.get('origin_prefix') or '-')}")
        out.print(f"{'routing_snapshot':<{w}}{safe(view.get('routing_snapshot') or '-')}")
    elif view["origin_ip"]:
        out.print(f"{'origin_network':<{w}}not mapped (`trapline routing import FILE` maps it)")
    table = Table(title="Received hops (0 = top)", title_justify="left", show_edge=False)
    for col in ("", "#", "from_ip", "from_rdns", "from_helo", "by_host", "timestamp", "trusted"):
        # Fold rather than truncate: an IPv6 address or a forged HELO cut to "…" is useless.
        table.add_column(col, overflow="fold")
    for hop in view["hops"]:
        table.add_row(
            "origin →" if hop["origin"] else "",
            str(hop["index"]),
            *(safe(hop[k]) for k in ("from_ip", "from_rdns", "from_helo", "by_host", "timestamp")),
            "yes" if hop["trusted"] else "",
        )
    out.print(table)
    for url in view["urls"][:50]:
        flag = "  (obfuscated)" if url["obfuscated"] else ""
        out.print(f"{'url':<{w}}{safe(url['url'])}{flag}")
    if len(view["urls"]) > 50:
        out.print(f"{'':<{w}}… {len(view['urls']) - 50} more (--json has all)")
    for att in view["attachments"]:
        text = f"{att['filename']} {att['content_type']} {att['size']} B {att['sha256']}"
        out.print(f"{'attachment':<{w}}{safe(text)}")
    if view["defects"]:
        out.print(f"{'defects':<{w}}{safe(', '.join(view['defects']))}")


@click.command("query")
@click.argument("sql")
@json_option
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Rows to print as a table [query_print_rows: 100]; --json prints every row.",
)
@click.option("--all", "all_rows", is_flag=True, help="Print every row.")
@pass_app
def query_cmd(app: AppContext, sql: str, as_json: bool, limit: int | None, all_rows: bool) -> None:
    """Run read-only SQL on the store (tables: see docs/schema.md).

    Example: trapline query "select origin_ip, count(*) from messages group by 1 order by 2 desc limit 10"
    """
    from trapline.config import DEFAULTS
    from trapline.store.queries import query

    cap = (
        None
        if as_json or all_rows
        else int(limit or app.settings.get("query_print_rows", DEFAULTS["query_print_rows"]))
    )
    with _open_read(app) as store:
        result = query(store.con, sql, limit=cap)
    if as_json:
        echo_json([dict(zip(result["columns"], row, strict=True)) for row in result["rows"]])
        return
    table = Table(show_edge=False)
    for col in result["columns"]:
        table.add_column(safe(col), overflow="fold")
    for row in result["rows"]:
        table.add_row(*(safe(v) for v in row))
    _out.print(table)
    # The count goes with the table (same stream), so a pager or a file shows both.
    shown, total = len(result["rows"]), result["total"]
    if shown < total:
        _out.print(f"{shown:,} of {total:,} rows shown (--limit N or --all for more)")
    else:
        _out.print(f"{total:,} row{'' if total == 1 else 's'}")


@click.command("demo")
@pass_app
def demo_cmd(app: AppContext) -> None:
    """Ingest the bundled real sample (SpamAssassin 2002) into --data-dir and report on it.

    Example: trapline --data-dir /tmp/demo demo
    """
    from trapline.pipeline.demo import run_demo

    with _progress(app) as on_progress:
        result = run_demo(app.settings, on_progress=on_progress, on_note=_note(app))
    for label, summary in result["summaries"]:
        _err.print(f"{safe(label)}: ", end="")
        _summary(summary)
    for line in result["notes"]:
        _err.print(safe(line))
    _out.print(f"store: {safe(Path(app.data_dir) / 'trapline.duckdb')}")
    render_stats(result["stats"])
    render_demo_findings(result, app.data_dir)


def render_demo_findings(result: dict[str, Any], data_dir: Path) -> None:
    """What the demo found (networks with names, largest spam campaigns) and what to try next."""
    out = _out
    nets = Table(title="top networks by abuse score (spam only)", title_justify="left",
                 show_edge=False)  # fmt: skip
    for col in ("asn", "name", "score", "messages"):
        nets.add_column(col, justify="right" if col in ("score", "messages") else "left")
    for n in result["networks"]:
        nets.add_row(f"AS{n['asn']}", (n["name"] or "name unknown")[:40], f"{n['score']:.2f}",
                     str(n["messages"]))  # fmt: skip
    out.print(nets)
    camps = Table(title="largest spam campaigns", title_justify="left", show_edge=False)
    for col in ("campaign", "messages", "first seen", "subject"):
        camps.add_column(col, justify="right" if col == "messages" else "left")
    for c in result["campaigns"]:
        subject = (c["subjects"] or [""])[0] or ""
        camps.add_row(c["id"], str(c["size"]), str(c["first_seen"])[:10], subject[:40])
    out.print(camps if result["campaigns"] else "no campaign of 2 or more messages")
    where = f"--data-dir {data_dir} " if Path(data_dir) != Path("trapline-data") else ""
    top = f"AS{result['networks'][0]['asn']}" if result["networks"] else "AS7132"
    out.print("try next:", markup=False)
    for cmd in (
        f"trapline {where}networks --top 10",
        f"trapline {where}dossier {top} --out {top.lower()}.html",
        f"trapline {where}serve",
    ):
        out.print(f"  {cmd}", markup=False)


@click.command("reparse")
@click.option(
    "--source", default=None, metavar="PATH", help="Only messages first read from PATH (a prefix)."
)
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Only mail received on or after this day.",
)
@click.option(
    "--until",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Only mail received on or before this day.",
)
@click.option(
    "--where",
    "where",
    default=None,
    metavar="SQL",
    help="Only messages matching one SQL condition on `messages`.",
)
@click.option(
    "--trust",
    "trust",
    multiple=True,
    metavar="SPEC",
    help="Trusted relay (repeatable), as for ingest.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Parse processes (0 = one per core).",
)
@pass_app
def reparse_cmd(
    app: AppContext,
    source: str | None,
    since: Any,
    until: Any,
    where: str | None,
    trust: tuple[str, ...],
    workers: int | None,
) -> None:
    """Parse stored mail again from the raw archive with the current settings and --trust.

    Rebuilds the parsed tables and every derived column (origin, routing, fingerprints,
    campaigns) for all stored messages or a selection; labels are kept.

    Example: trapline reparse --trust mx.example.org --since 2008-11-01
    """
    from trapline.pipeline.reparse import Selection, reparse

    selection = Selection(
        source=source,
        since=since.date() if since else None,
        until=until.date() if until else None,
        where=where,
    )
    with _progress(app) as on_progress:
        try:
            result = reparse(
                app.settings,
                selection,
                trust=trust,
                workers=workers,
                on_progress=on_progress,
                on_note=_note(app),
            )
        except KeyboardInterrupt:
            _err.print("interrupted: run `trapline ingest` with no new files, or reparse again")
            sys.exit(130)
    _err.print(safe(result.line()))
    for line in result.ingest.stage_notes:
        _err.print(safe(line))


commands: list[click.Command] = [ingest_cmd, reparse_cmd, stats_cmd, show_cmd, query_cmd, demo_cmd]
