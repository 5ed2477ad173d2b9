"""The ``export`` group: the store in formats other tools read (STIX, MISP, ARF, Parquet, CSV).

Other areas add subcommands with ``from trapline.cli.export import export`` and
``export.add_command(...)``. Each command calls one function of ``trapline.export`` and renders.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import click

from trapline.cli.common import AppContext, F, echo_json, json_option, label_option, pass_app
from trapline.export import arf, misp, stix, tables
from trapline.export.evidence import Evidence, ExportSettings, gather, parse_network
from trapline.store.duckdb import open_store

EMPTY_HINT = "nothing to export yet: run `trapline ingest PATH` (and `trapline analyze campaigns`)"


def _day(value: datetime | None) -> date | None:
    return value.date() if value else None


def _selection(func: F) -> F:
    """Options shared by the evidence exports: time window, one network, labels."""
    func = label_option(func)
    for option in reversed(
        [
            click.option(
                "--since", type=click.DateTime(["%Y-%m-%d"]), help="Received on or after (UTC)."
            ),
            click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="Received before."),
            click.option("--network", metavar="ASN", help="Only mail sent from this AS (AS26780)."),
        ]
    ):
        func = option(func)
    return func


def _out_option(default_help: str) -> Callable[[F], F]:
    return click.option(
        "--out",
        type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
        default=Path("-"),
        help=f"File to write ('-' = stdout) [{default_help}].",
    )


def _folder_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help=help_text
    )


def _evidence(app: AppContext, opts: dict[str, Any]) -> Evidence:
    with open_store(app.data_dir, read_only=True) as store:
        return gather(
            store,
            label=opts["label"],
            since=_day(opts["since"]),
            until=_day(opts["until"]),
            network=parse_network(opts["network"]) if opts["network"] else None,
            min_campaign_size=ExportSettings.from_settings(app.settings).min_campaign_size,
        )


def _write_json(doc: dict[str, Any], out: Path) -> None:
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if str(out) == "-":
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")


def _report(app: AppContext, summary: dict[str, Any], line: str, out: Path, as_json: bool) -> None:
    """Summary on stderr when the document itself went to stdout, else on stdout."""
    to_err = str(out) == "-"
    if as_json and not to_err:
        echo_json(summary)
    elif not app.quiet or not to_err:
        click.echo(line, err=to_err)


@click.group("export")
def export() -> None:
    """Write the store in formats other tools read: STIX, MISP, ARF, Parquet, CSV.

    Example: trapline export stix --out bundle.json
    """


@export.command("stix")
@_out_option("stdout")
@_selection
@json_option
@pass_app
def export_stix(app: AppContext, out: Path, as_json: bool, **opts: Any) -> None:
    """A STIX 2.1 bundle: spam campaigns, sender indicators with sightings, their ASes.

    Example: trapline export stix --out bundle.json --since 2008-01-01
    """
    ev = _evidence(app, opts)
    bundle = stix.build_bundle(ev)
    _write_json(bundle, out)
    counts: dict[str, int] = {}
    for obj in bundle["objects"]:
        counts[obj["type"]] = counts.get(obj["type"], 0) + 1
    line = f"wrote {out}: " + ", ".join(f"{n} {t}" for t, n in sorted(counts.items()))
    _report(
        app, {"out": str(out), "objects": counts}, EMPTY_HINT if ev.empty else line, out, as_json
    )


@export.command("misp")
@_out_option("stdout")
@_selection
@click.option("--info", default=None, help="Event title (default: a summary of its contents).")
@json_option
@pass_app
def export_misp(app: AppContext, out: Path, info: str | None, as_json: bool, **opts: Any) -> None:
    """A MISP event: sender IPs, ASes, campaign domains and subjects as attributes.

    Example: trapline export misp --out event.json
    """
    ev = _evidence(app, opts)
    event = misp.build_event(ev, info=info)
    _write_json(event, out)
    counts: dict[str, int] = {}
    for attr in event["Event"]["Attribute"]:
        counts[attr["type"]] = counts.get(attr["type"], 0) + 1
    line = f"wrote {out}: " + (", ".join(f"{n} {t}" for t, n in sorted(counts.items())) or "empty")
    _report(
        app, {"out": str(out), "attributes": counts}, EMPTY_HINT if ev.empty else line, out, as_json
    )


@export.command("arf")
@click.option("--network", metavar="ASN", required=True, help="The AS to report (AS26780).")
@_folder_option("Folder for the reports (one .eml per message).")
@click.option("--to", default=None, help="To: address, the network's abuse contact.")
@click.option("--from", "sender", default=None, help="From: address [setting arf_from].")
@click.option(
    "--limit", type=int, default=None, help="Most reports, oldest first; 0 = all [arf_max_reports]."
)
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="Received on or after (UTC).")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="Received before.")
@label_option
@json_option
@pass_app
def export_arf(
    app: AppContext,
    network: str,
    out: Path,
    to: str | None,
    sender: str | None,
    limit: int | None,
    since: datetime | None,
    until: datetime | None,
    label: str,
    as_json: bool,
) -> None:
    """RFC 5965 abuse reports for an AS, one per spam message, the original attached unchanged.

    Example: trapline export arf --network AS26780 --out reports/ --to abuse@example.net
    """
    asn = parse_network(network)
    conf = ExportSettings.from_settings(app.settings)
    with open_store(app.data_dir, read_only=True) as store:
        run = arf.write_reports(
            store,
            asn,
            out,
            reporter=sender or conf.arf_from,
            to=to,
            label=label,
            since=_day(since),
            until=_day(until),
            limit=conf.arf_max_reports if limit is None else limit,
        )
    if as_json:
        echo_json({"asn": asn, "matched": run.matched, "written": [str(p) for p in run.written]})
    elif not run.written:
        click.echo(f"no stored spam from AS{asn} (check `trapline networks`); nothing written")
    else:
        click.echo(
            f"wrote {len(run.written)} reports to {out} ({run.matched} messages from AS{asn})"
        )


@export.command("parquet")
@_folder_option("Folder to write (one sub-folder per table).")
@click.option("--force", is_flag=True, help="Replace an earlier export in the same folder.")
@json_option
@pass_app
def export_parquet(app: AppContext, out: Path, force: bool, as_json: bool) -> None:
    """Every table as Parquet with the store's schema (the layout `attach parquet` reads).

    Example: trapline export parquet --out trapline-parquet/
    """
    with open_store(app.data_dir, read_only=True) as store:
        files = tables.export_parquet(store, out, force=force)
    if as_json:
        echo_json({f.table: {"rows": f.rows, "path": str(f.path)} for f in files})
        return
    total = sum(f.rows for f in files)
    click.echo(f"wrote {len(files)} tables, {total:,} rows to {out}")


@export.command("csv")
@click.option("--table", required=True, help="A store table, or `networks` (the ranking).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default=Path("-"),
    help="File to write ('-' = stdout) [stdout].",
)
@pass_app
def export_csv(app: AppContext, table: str, out: Path) -> None:
    """One table as CSV with a header row (lists as JSON, binary as hex).

    Example: trapline export csv --table networks --out networks.csv
    """
    with open_store(app.data_dir, read_only=True) as store:
        if str(out) == "-":
            n = tables.export_csv(store, table, sys.stdout, app.settings)
        else:
            with out.open("w", encoding="utf-8", newline="") as fh:
                n = tables.export_csv(store, table, fh, app.settings)
    if n == 0:
        click.echo(f"{table}: no rows yet ({EMPTY_HINT})", err=True)
    elif str(out) != "-" and not app.quiet:
        click.echo(f"wrote {n:,} rows of {table} to {out}")


commands = [export]
