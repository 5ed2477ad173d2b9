"""Commands for networks: routing snapshots, feeds, enrichment, network ranking, dossiers.

Each command parses options, calls one library function from ``trapline.store.routing``,
``trapline.pipeline.adapters``, ``trapline.analyze.networks`` or ``trapline.export.dossier`` and renders.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.table import Table

from trapline.analyze.networks import network_scores
from trapline.cli.common import (
    AppContext,
    F,
    check_window,
    echo_json,
    hint,
    json_option,
    label_option,
    open_existing,
    pass_app,
    progress_bar,
    safe,
)
from trapline.enrich.feeds import KINDS
from trapline.errors import UsageError
from trapline.export.dossier import write_dossier
from trapline.pipeline.adapters.asn import enrich_all, remap_after_import
from trapline.pipeline.adapters.feeds import import_feeds
from trapline.routing.formats import FORMATS
from trapline.routing.lookup import CHOICES, unmapped_reason
from trapline.routing.snapshots import Snapshot
from trapline.store import routing as store_routing
from trapline.store.duckdb import open_store

# Markup off: AS names and notes come from imported files (cli.common.safe escapes the rest).
_out = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
if not _out.is_terminal:
    _out.width = 160  # pipes and logs: keep ranking rows on one line


def _date(_ctx: click.Context, _param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a date; write YYYY-MM-DD") from exc


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _parse_asn(text: str) -> int:
    """'AS26780', 'as26780' or '26780' → 26780."""
    body = text.strip().upper().removeprefix("AS")
    if not body.isdigit():
        raise UsageError(f"{text!r} is not an AS number; write it as AS26780 or 26780")
    return int(body)


def _date_option(name: str, help_text: str) -> Callable[[F], F]:
    return click.option(name, callback=_date, metavar="YYYY-MM-DD", default=None, help=help_text)


@click.group("routing")
def routing() -> None:
    """Routing snapshots: import prefix → origin-AS tables with their dates, list, look up.

    Example: trapline routing import ipasn_20080501_v12.dat.gz
    """


@routing.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_date_option("--as-of", "Day the table describes (default: the date in the file name).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice([*FORMATS, "asnames"]),
    default=None,
    help="Input format (default: guessed from the name and the first bytes).",
)
@json_option
@pass_app
def routing_import(
    app: AppContext, path: Path, as_of: date | None, fmt: str | None, as_json: bool
) -> None:
    """Import a routing table (pyasn .dat, MRT RIB dump, IP-range CSV) or an asnames.json.

    Example: trapline routing import rib.20081101.0000.bz2 --as-of 2008-11-01
    """
    remapped: dict[str, int] | None = None
    with open_store(app.data_dir) as store:
        result = store_routing.import_any(store, path, as_of=as_of, fmt=fmt)
        if result.snapshot is not None:
            # Stored mail is mapped in the same command: a new snapshot may be nearer its dates.
            with progress_bar(app, "re-map stored mail") as on_progress:
                mapped, changed = remap_after_import(store, app.settings, on_progress)
            ((with_ip,),) = store.con.execute(
                "SELECT count(*) FROM messages WHERE origin_ip IS NOT NULL"
            ).fetchall()
            remapped = {
                "messages_changed": changed,
                "messages_with_origin": int(with_ip),
                "addresses": mapped.rows,
                "addresses_mapped": mapped.mapped,
            }
    if as_json:
        echo_json(
            {
                "snapshot": result.snapshot and _snap_dict(result.snapshot),
                "names": result.names,
                "remapped": remapped,
            }
        )
        return
    _out.print(result.line(), markup=False)
    for note in result.snapshot.notes if result.snapshot else ():
        _out.print(f"note: {note}", markup=False)
    if remapped is not None:
        _out.print(
            f"re-mapped stored mail: {remapped['messages_changed']:,} of "
            f"{remapped['messages_with_origin']:,} messages with an origin IP changed network; "
            f"{remapped['addresses_mapped']:,} of {remapped['addresses']:,} addresses mapped",
            markup=False,
        )
    else:
        _out.print("AS names are read at report time: nothing to re-map", markup=False)


def _snap_dict(s: Snapshot) -> dict[str, object]:
    return {
        "snapshot": s.snapshot_id,
        "as_of": s.as_of,
        "source": s.source,
        "format": s.format,
        "ipv4": s.n_v4,
        "ipv6": s.n_v6,
        "asns": s.n_asns,
        "notes": list(s.notes),
    }


@routing.command("list")
@json_option
@pass_app
def routing_list(app: AppContext, as_json: bool) -> None:
    """List imported routing snapshots with their dates and sizes.

    Example: trapline routing list --json
    """
    with open_existing(app) as store:
        snaps = store_routing.list_snapshots(store)
    if as_json:
        echo_json([_snap_dict(s) for s in snaps])
        return
    table = Table("snapshot", "as of", "format", "IPv4", "IPv6", "ASes", "notes")
    for s in snaps:
        table.add_row(
            s.snapshot_id,
            str(s.as_of),
            s.format,
            f"{s.n_v4:,}",
            f"{s.n_v6:,}",
            f"{s.n_asns:,}",
            f"{len(s.notes)} (see --json)" if s.notes else "",
        )
    _out.print(table)


@routing.command("lookup")
@click.argument("ips", nargs=-1, required=True)
@_date_option("--at", "Map as of this day (default: the newest snapshot).")
@click.option(
    "--choice",
    type=click.Choice(CHOICES),
    default=None,
    help="Snapshot choice [settings routing_choice; default nearest].",
)
@json_option
@pass_app
def routing_lookup(
    app: AppContext, ips: tuple[str, ...], at: date | None, choice: str | None, as_json: bool
) -> None:
    """Prefix, origin AS, AS name and the snapshot that answered, for each IP.

    Example: trapline routing lookup 208.66.192.5 --at 2008-11-01 --json
    """
    bad = [ip for ip in ips if not _is_ip(ip)]
    if bad:
        for ip in bad:
            click.echo(f"error: {ip!r} is not an IP address (IPv4 or IPv6)", err=True)
        sys.exit(2)
    with open_existing(app) as store:
        answers = store_routing.lookup(
            store, list(ips), at, choice or app.settings["routing_choice"]
        )
    if as_json:
        echo_json(
            [
                {
                    "ip": a.ip,
                    "prefix": a.prefix,
                    "asn": a.asn,
                    "as_name": a.as_name,
                    "snapshot": a.snapshot,
                    "snapshot_date": a.snapshot_date,
                    "reason": None if a.asn is not None else unmapped_reason(a.ip, a.snapshot),
                }
                for a in answers
            ]
        )
        return
    table = Table("ip", "prefix", "asn", "as name", "snapshot")
    for a in answers:
        if a.asn is None:
            reason = unmapped_reason(a.ip, a.snapshot)
            table.add_row(a.ip, "-", "-", f"({reason})", a.snapshot or "-")
            continue
        table.add_row(
            a.ip,
            a.prefix or "-",
            f"AS{a.asn}",
            safe(a.as_name or "(name unknown)"),
            a.snapshot or "-",
        )
    _out.print(table)


@click.group("feeds")
def feeds() -> None:
    """External evidence: Spamhaus DROP/EDROP/ASN-DROP lists, CSV and STIX 2.1 indicators.

    Example: trapline feeds import spamhaus-drop-history/monthly/
    """


@feeds.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    default=None,
    help="Feed kind (default: from the file name, or the CSV's kind column).",
)
@_date_option(
    "--as-of", "Day a DROP-list file was published (a folder import uses each folder's date)."
)
@json_option
@pass_app
def feeds_import(
    app: AppContext, path: Path, kind: str | None, as_of: date | None, as_json: bool
) -> None:
    """Import a feed file or a folder of dated snapshots; duplicates merge into first/last seen.

    Example: trapline feeds import drop.txt --kind drop --as-of 2021-05-01
    """
    with open_store(app.data_dir) as store:
        result = import_feeds(store, path, kind, as_of, settings=app.settings)
    if as_json:
        echo_json(
            {
                "files": result.files,
                "sightings": result.sightings,
                "new_sightings": result.new_sightings,
                "indicators": result.indicators,
                "mapped": result.mapped,
                "notes": list(result.notes),
            }
        )
        return
    _out.print(result.line(), markup=False)
    for note in result.notes:
        _out.print(f"note: {note}", markup=False)


@click.command("enrich")
@json_option
@pass_app
def enrich(app: AppContext, as_json: bool) -> None:
    """(Re)map every stored message, hop, URL host, visit and feed indicator to its network.

    Example: trapline enrich
    """
    with open_existing(app, read_only=False) as store:
        result = enrich_all(store, app.settings)
    if as_json:
        echo_json(
            {
                "rows": result.rows,
                "mapped": result.mapped,
                "snapshots": result.snapshots,
                "by_subject": {
                    k: {"rows": n, "mapped": m} for k, (n, m) in result.by_subject.items()
                },
            }
        )
        return
    _out.print(result.summary(), markup=False)


@click.command("networks")
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="How many networks to show.",
)
@click.option(
    "--by",
    type=click.Choice(["asn", "prefix"]),
    default="asn",
    show_default=True,
    help="Rank ASes or announced prefixes.",
)
@_date_option("--since", "Only evidence seen on or after this day.")
@_date_option("--until", "Only evidence seen on or before this day.")
@label_option
@json_option
@pass_app
def networks(
    app: AppContext,
    top: int,
    by: str,
    since: date | None,
    until: date | None,
    label: str,
    as_json: bool,
) -> None:
    """Rank the networks hosting the abuse we see (score and BGP-Ranking-style baseline).

    Example: trapline networks --top 20 --since 2008-10-01 --until 2008-11-30 --json
    """
    check_window(since, until)
    with open_existing(app) as store:
        scores = network_scores(
            store, app.settings, since=since, until=until, by=by, top=top, label=label
        )
        snapshots = store_routing.list_snapshots(store)
    if not scores and not as_json:
        hint(
            "no network evidence in the window (--since/--until, --label)"
            if snapshots
            else "no network evidence yet: `trapline routing import FILE` maps stored mail "
            "to networks"
        )
    if as_json:
        echo_json([s.as_dict() for s in scores])
        return
    if not scores:
        return
    # One line per network in an 80-column terminal: evidence types no shown network has are
    # left out and long names are cut (--json has everything).
    kinds = [("spam", "spam"), ("harvester", "harv"), ("dictionary", "dict"), ("url_host", "url"),
             ("cc", "c&c"), ("blocklist", "blk")]  # fmt: skip
    kinds = [(k, h) for k, h in kinds if any(s.evidence.get(k) for s in scores)]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    cols = ["#", "asn", "name", *(["prefix"] if by == "prefix" else []), "score", "base",
            *(h for _, h in kinds), "days"]  # fmt: skip
    for col in cols:
        table.add_column(col, justify="left" if col in ("asn", "name", "prefix") else "right",
                         no_wrap=True, overflow="ellipsis")  # fmt: skip
    width = max(10, (36 if by == "asn" else 21) - 5 * len(kinds))
    for rank, s in enumerate(scores, 1):
        name = s.name or "-"
        table.add_row(
            str(rank),
            f"AS{s.asn}",
            safe(name if len(name) <= width else name[: width - 1] + "…"),
            *([s.prefix or "-"] if by == "prefix" else []),
            f"{s.score:.3f}",
            f"{s.baseline_score:.3f}",
            *(str(s.evidence.get(k, 0)) for k, _ in kinds),
            f"{s.longevity_days:.0f}",
        )
    _out.print(table)


@click.command("dossier")
@click.argument("asn_text", metavar="ASN")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Output .html (a .md twin is written beside it) [default AS<n>.html].",
)
@_date_option("--since", "Only evidence seen on or after this day.")
@_date_option("--until", "Only evidence seen on or before this day.")
@label_option
@click.option(
    "--no-redact",
    is_flag=True,
    help="Keep trap addresses and local file paths (redacted by default, to share safely).",
)
@pass_app
def dossier(
    app: AppContext,
    asn_text: str,
    out: Path | None,
    since: date | None,
    until: date | None,
    label: str,
    no_redact: bool,
) -> None:
    """Write a self-contained HTML (and Markdown) evidence report for one network.

    Example: trapline dossier AS26780 --out mccolo.html
    """
    check_window(since, until)
    number = _parse_asn(asn_text)
    with open_existing(app) as store:
        paths = write_dossier(
            store,
            app.settings,
            number,
            out or Path(f"AS{number}.html"),
            since=since,
            until=until,
            label=label,
            redact=not no_redact,
        )
    for path in paths:
        _out.print(str(path), markup=False)


commands: list[click.Command] = [routing, feeds, enrich, networks, dossier]
