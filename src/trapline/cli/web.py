"""API keys and the dashboard: ``trapline keys ...`` and ``trapline web``."""

from __future__ import annotations

import logging
import sys

import click

from trapline.cli.common import AppContext, echo_json, json_option, pass_app


@click.group()
def keys() -> None:
    """API keys for the REST API and the dashboard (admin, analyst, sensor).

    Example: trapline keys create --role analyst --name alice
    """


@keys.command("create")
@click.option(
    "--role",
    type=click.Choice(["admin", "analyst", "sensor"]),
    required=True,
    help="admin: keys and imports; analyst: read everything; sensor: its own visits only.",
)
@click.option("--name", default=None, help="Who or what the key is for (shown in `keys list`).")
@json_option
@pass_app
def keys_create(app: AppContext, role: str, name: str | None, as_json: bool) -> None:
    """Make an API key and print it once (only its SHA-256 is stored).

    A sensor key is also a honeypot sensor: the same key asks for trap addresses. Needs the
    store, so run it while `trapline serve` is stopped, or POST /api/v1/keys with an admin key.

    Example: trapline keys create --role sensor --name blog.example.net --json
    """
    from trapline.serve.api.keys import create_key
    from trapline.store.duckdb import open_store

    with open_store(app.data_dir) as store:
        made = create_key(store, role, name)
    if as_json:
        echo_json(made.as_dict())
        return
    click.echo(f"{made.role} key {made.id} ({made.name}); shown once, keep it secret:")
    click.echo(made.key)


@keys.command("list")
@json_option
@pass_app
def keys_list(app: AppContext, as_json: bool) -> None:
    """List API keys: id, name, role, when made and revoked (never the keys).

    Example: trapline keys list --json
    """
    from trapline.serve.api.keys import list_keys
    from trapline.store.duckdb import open_store

    with open_store(app.data_dir, read_only=True) as store:
        rows = list_keys(store.con)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no API keys yet; make one with `trapline keys create --role admin`")
    for r in rows:
        state = f"revoked {r['revoked_at']:%Y-%m-%d}" if r["revoked_at"] else "active"
        click.echo(f"{r['id']:<14} {r['role']:<8} {state:<18} {r['name']}")


@keys.command("revoke")
@click.argument("key_id")
@pass_app
def keys_revoke(app: AppContext, key_id: str) -> None:
    """Revoke an API key by its id (from `trapline keys list`).

    Example: trapline keys revoke k3f9a0c1d2e4b
    """
    from trapline.serve.api.keys import revoke_key
    from trapline.store.duckdb import open_store

    with open_store(app.data_dir) as store:
        revoke_key(store, key_id)
    click.echo(f"revoked {key_id}")


@click.command("web")
@click.argument("listen", required=False, metavar="[HOST:PORT]")
@click.option(
    "--anonymous-read",
    is_flag=True,
    help="Let anyone read without a key (public deployments); writes still need one.",
)
@pass_app
def web(app: AppContext, listen: str | None, anonymous_read: bool) -> None:
    """Serve the dashboard and REST API on their own, over a read-only store.

    Dashboard at /, API at /api/v1, OpenAPI spec at /openapi.json, reference at /api/docs.
    Default address 127.0.0.1:8090 (never the honeypot's). Keys and imports need the store
    writable: run the dashboard inside `trapline serve --web ...` for those.

    Example: trapline web 127.0.0.1:8090
    """
    from trapline.serve.runner import Running
    from trapline.serve.web import run_standalone

    logging.basicConfig(level=logging.ERROR if app.quiet else logging.WARNING)

    def ready(svc: Running) -> None:
        click.echo(f"web listening on http://{svc.host}:{svc.port}/ (read-only store)")
        sys.stdout.flush()

    from trapline.serve.api.settings import WebSettings

    web_settings = WebSettings.from_settings(app.settings)
    run_standalone(
        app.settings,
        listen or web_settings.default_listen,
        anonymous_read=anonymous_read or web_settings.anonymous_read,
        on_ready=ready,
    )


commands: list[click.Command] = [keys, web]
