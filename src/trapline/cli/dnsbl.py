"""``trapline dnsbl`` (the DNSBL alone; ``trapline serve --dns`` runs it beside the traps) and
``trapline export rbldnsd`` (the same lists as rbldnsd data)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from trapline.cli.common import AppContext, echo_json, json_option, pass_app
from trapline.cli.export import export


@click.command()
@click.option("--listen", metavar="HOST:PORT", help="UDP+TCP address [default 127.0.0.1:5353].")
@click.option(
    "--zone", "zones", multiple=True, metavar="ZONE", help="Zone apex to serve (repeatable)."
)
@click.option(
    "--max-age",
    type=float,
    metavar="DAYS",
    help="Expire a listing this long after its evidence; 0 = never (archives) [default 30].",
)
@click.option("--workers", type=int, help="UDP answering processes (SO_REUSEPORT) [default 1].")
@click.option("--rate-limit", type=float, help="Queries/s allowed per source address; 0 = off.")
@click.option(
    "--reload", "reload_s", type=float, metavar="SECONDS", help="Re-read the store this often."
)
@pass_app
def dnsbl(
    app: AppContext,
    listen: str | None,
    zones: tuple[str, ...],
    max_age: float | None,
    workers: int | None,
    rate_limit: float | None,
    reload_s: float | None,
) -> None:
    """Serve the listings over DNS (RFC 5782 DNSBL) until Ctrl-C or SIGTERM.

    Lists spam senders, dictionary attackers, address harvesters and the networks of the
    top-ranked ASes under ZONE, plus an http:BL-compatible zone; docs/dnsbl.md has the return
    codes. Reads the store read-only and re-reads it periodically, so it runs beside ingest;
    `trapline serve --dns` runs it inside the trap process instead.

    Example: trapline dnsbl --listen 127.0.0.1:5353 --zone bl.example.org --max-age 0
    """
    from trapline.serve.dnsbl.run import run_standalone, zone_names
    from trapline.serve.dnsbl.server import DnsblServer

    logging.basicConfig(
        level=logging.ERROR if app.quiet else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = dict(app.settings)
    for key, value in (
        ("dnsbl_listen", listen),
        ("dnsbl_zones", list(zones) or None),
        ("dnsbl_max_age_days", max_age),
        ("dnsbl_workers", workers),
        ("dnsbl_rate_limit", rate_limit),
        ("dnsbl_reload_s", reload_s),
    ):
        if value is not None:
            settings[key] = value

    def ready(server: DnsblServer) -> None:
        assert server.responder is not None
        size = server.responder.index.size
        click.echo(
            f"dns listening on {server.host}:{server.port} "
            f"(zones: {', '.join(zone_names(settings))}; {size} listed)"
        )
        if not size:
            click.echo(
                "nothing listed yet: ingest spam (`trapline ingest`) or run `trapline serve`; "
                "archives need --max-age 0",
                err=True,
            )
        sys.stdout.flush()

    run_standalone(settings, ready)
    click.echo("stopped")


@export.command("rbldnsd")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write (replaced atomically, so a running rbldnsd reloads cleanly).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["ip4set", "combined"]),
    default="ip4set",
    show_default=True,
    help="ip4set: one list, IPv4; combined: every list and subzone, IPv6 and networks too.",
)
@click.option(
    "--list",
    "list_name",
    type=click.Choice(["senders", "dictionary", "harvesters"]),
    default="senders",
    show_default=True,
    help="The list an ip4set export holds.",
)
@click.option("--zone", metavar="ZONE", help="Zone apex for SOA/NS [default: dnsbl_zones].")
@click.option(
    "--max-age", type=float, metavar="DAYS", help="Listing age as the DNSBL uses; 0 = all."
)
@json_option
@pass_app
def export_rbldnsd_cmd(
    app: AppContext,
    out: Path,
    fmt: str,
    list_name: str,
    zone: str | None,
    max_age: float | None,
    as_json: bool,
) -> None:
    """Export the DNSBL listings as an rbldnsd dataset (same codes and TXT as `trapline dnsbl`).

    Serve an ip4set export with `rbldnsd -n -b 127.0.0.1/5353 senders.bl.example.org:ip4set:bl.zone`,
    a combined one with `... bl.example.org:combined:bl.zone`.

    Example: trapline export rbldnsd --out bl.zone --max-age 0
    """
    from trapline.export.rbldnsd import export_rbldnsd
    from trapline.serve.dnsbl.run import read_only_source

    settings = dict(app.settings)
    if zone:
        settings["dnsbl_zones"] = [zone]
    if max_age is not None:
        settings["dnsbl_max_age_days"] = max_age
    result = export_rbldnsd(
        read_only_source(settings)(), settings, out, fmt=fmt, list_name=list_name
    )
    if as_json:
        echo_json(result.as_dict())
        return
    click.echo(f"wrote {result.entries} entries ({result.format}) to {result.path}")
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    if result.entries <= 1:
        click.echo(
            "nothing listed yet besides the RFC 5782 test point: ingest spam first", err=True
        )


commands: list[click.Command] = [dnsbl]
