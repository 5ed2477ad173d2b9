"""Trap commands: serve, visits, address decode, sensor add."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import click

from trapline.cli.common import AppContext, echo_json, json_option, pass_app, safe


@click.command()
@click.option(
    "--smtp",
    "smtp",
    metavar="HOST:PORT",
    help="SMTP trap address, or 'off' [default 127.0.0.1:2525].",
)
@click.option(
    "--http",
    "http",
    metavar="HOST:PORT",
    help="Web honeypot + sensor API address, or 'off' [default 127.0.0.1:8080].",
)
@click.option(
    "--dns",
    "dns",
    metavar="HOST:PORT",
    help="DNSBL address (UDP+TCP), or 'off' [default off]; see `trapline dnsbl`.",
)
@click.option(
    "--zone", "zones", multiple=True, metavar="ZONE", help="DNSBL zone apex (repeatable)."
)
@click.option(
    "--web",
    "web",
    metavar="HOST:PORT",
    help="Dashboard + REST API address (never the honeypot's), or 'off' [default off].",
)
@click.option(
    "--anonymous-read", is_flag=True, help="With --web: anyone may read; writes still need a key."
)
@click.option(
    "--trap-domain",
    "trap_domains",
    multiple=True,
    metavar="DOMAIN",
    help="Domain the traps accept mail for (repeatable).",
)
@pass_app
def serve(
    app: AppContext,
    smtp: str | None,
    http: str | None,
    dns: str | None,
    zones: tuple[str, ...],
    web: str | None,
    anonymous_read: bool,
    trap_domains: tuple[str, ...],
) -> None:
    """Run the SMTP trap and the web honeypot (and with --dns the DNSBL) until Ctrl-C or SIGTERM.

    Listens on loopback by default and logs one line per service once it is listening. Mail is
    spooled durably before it is accepted and drained into the store in the background, in
    short turns: every other command keeps working while it runs (`trapline status` shows it).

    With --web HOST:PORT the dashboard and REST API run in this process too, on their own
    address, reading the store this process holds.

    Example: trapline serve --smtp 0.0.0.0:25 --http 0.0.0.0:8080 --web 127.0.0.1:8090 --trap-domain traps.example.org
    """
    from trapline.serve.runner import Running
    from trapline.serve.runner import serve as run

    # Limit hits, relay attempts and drain problems are logged; one line each on stderr.
    logging.basicConfig(
        level=logging.ERROR if app.quiet else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings: dict[str, Any] = dict(app.settings)
    for value, key in (
        (smtp, "smtp_listen"),
        (http, "http_listen"),
        (dns, "dns_listen"),
        (web, "web_listen"),
    ):
        if value is not None:
            settings[key] = value  # "off" switches the service off
    if zones:
        settings["dnsbl_zones"] = list(zones)
    if anonymous_read:
        settings["web_anonymous_read"] = True
    if trap_domains:
        settings["trap_domains"] = [d.lower().rstrip(".") for d in trap_domains]

    def ready(svc: Running) -> None:
        extra = (
            f" (trap domains: {', '.join(settings['trap_domains'])})" if svc.name == "smtp" else ""
        )
        click.echo(f"{svc.name} listening on {svc.host}:{svc.port}{extra}")
        sys.stdout.flush()

    def note(text: str) -> None:
        if not app.quiet:
            click.echo(text, err=True)

    total = asyncio.run(run(settings, on_ready=ready, on_note=note))
    click.echo(
        f"stopped; {total.messages} messages drained into the store ({total.new_messages} new)"
    )


@click.command()
@click.option(
    "--harvesters", is_flag=True, help="Rank visitor IPs by the spam their addresses drew."
)
@click.option("--limit", default=50, show_default=True, help="Rows to show.")
@json_option
@pass_app
def visits(app: AppContext, harvesters: bool, limit: int, as_json: bool) -> None:
    """Show honeypot visits, or the harvesters behind the spam the traps caught.

    With --harvesters: one row per harvester IP with its visits, addresses that received mail,
    messages and the shortest harvest-to-first-spam delay. Works while `trapline serve` runs.

    Example: trapline visits --harvesters --json
    """
    from trapline.analyze.harvesters import harvesters_report, visits_report

    if harvesters:
        rows = [h.to_dict() for h in harvesters_report(app.settings, limit)]
        if as_json:
            echo_json(rows)
            return
        if not rows:
            click.echo(
                "hint: no harvesters yet: no trap address issued by the honeypot has received mail",
                err=True,
            )
            return
        click.echo("ip, visits, trap addresses that got mail, messages, first spam after, AS")
        for h in rows:
            delay = "-" if h["first_spam_delay_s"] is None else f"{h['first_spam_delay_s']:.0f}s"
            asn = f" AS{h['asn']}" if h.get("asn") else ""
            click.echo(
                f"{safe(h['ip']):<40} visits={h['visits']:<5} addresses={h['addresses']:<4} "
                f"messages={h['messages']:<6} first-spam={delay}{asn}"
            )
        return
    rows = visits_report(app.settings, limit)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("hint: no honeypot visits yet: `trapline serve` runs the web honeypot", err=True)
        return
    click.echo(f"{'visit':<10} {'visited at (UTC)':<19} {'ip':<16} {'path':<20} issued address")
    for v in rows:
        flag = " ignored-robots" if v["ignored_robots"] else ""
        when = str(v["visited_at"])[:19]
        click.echo(
            f"{v['id']:<10} {when:<19} {safe(v['ip']):<16} {safe(v['path']):<20} "
            f"{safe(v['address'])}{flag}"
        )


@click.group()
def address() -> None:
    """Trap addresses: decode one offline.

    Example: trapline address decode anna.kovacs.lusabgutihbabad@traps.example.org
    """


@address.command("decode")
@click.argument("addr")
@json_option
@pass_app
def address_decode(app: AppContext, addr: str, as_json: bool) -> None:
    """Decode a trap address: which visit it was issued to, when, to whom.

    Works offline with only the site secret; visit details (time, IP, user agent) come from the
    store when it is readable. Exit code 1 when the address is not one we issued.

    Example: trapline address decode k3v9q2m8xw@traps.example.org --json
    """
    from trapline.analyze.harvesters import decode_report

    report = decode_report(app.settings, addr)
    if as_json:
        echo_json(report)
    elif not report["valid"]:
        click.echo(f"{safe(report['address'])}: not a trap address we issued ({report['reason']})")
    else:
        click.echo(
            f"{safe(report['address'])}: visit {report['visit_id']} ({report['style']} style)"
        )
        if report["store"] == "ok":
            click.echo(
                f"  visited {report['visited_at']} from {safe(report['ip'])} "
                f"path {safe(report['path'])}"
            )
            click.echo(f"  user agent: {safe(report['user_agent'])}")
            click.echo(f"  messages received: {report['messages']}")
        elif report["store"] == "locked":
            click.echo("  (visit details unavailable: the store is busy; retry, or raise --wait)")
        else:
            click.echo(f"  (visit details unavailable: {safe(report['store'])})")
    if not report["valid"]:
        sys.exit(1)


@click.group()
def sensor() -> None:
    """Sensors: other websites that ask this server for trap addresses.

    Example: trapline sensor add blog.example.net
    """


@sensor.command("add")
@click.argument("name")
@click.option(
    "--url",
    default="http://127.0.0.1:8080",
    show_default=True,
    help="Public URL of this server's HTTP service, for the embed snippet.",
)
@json_option
@pass_app
def sensor_add(app: AppContext, name: str, url: str, as_json: bool) -> None:
    """Register a sensor site and print its API key (shown once) and a PHP embed.

    Needs the store, so run it while `trapline serve` is stopped; serve picks the sensor up
    on its next start.

    Example: trapline sensor add blog.example.net --url https://traps.example.org
    """
    from trapline.traps.sensor import register_sensor

    sensor_id, key, embed = register_sensor(app.settings, name, url)
    if as_json:
        echo_json({"sensor_id": sensor_id, "name": name, "api_key": key})
        return
    click.echo(f"sensor {sensor_id} ({name}) added.\nAPI key (shown once, keep it secret): {key}")
    click.echo("\nPHP embed for the sensor's pages:\n")
    click.echo(embed)


commands: list[click.Command] = [serve, visits, address, sensor]
