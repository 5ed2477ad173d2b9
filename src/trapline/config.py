"""Settings: every default in one place, overridden by ``trapline.toml`` and ``TRAPLINE_*``.

Precedence, lowest first: the defaults below, ``trapline.toml`` in the working directory (or the
file named by ``TRAPLINE_CONFIG``), ``TRAPLINE_<KEY>`` environment variables, then command-line
options. Zero configuration runs everything on loopback with ``./trapline-data``. A key that is
not in ``DEFAULTS`` is an error (with the nearest known key), so a typo never passes silently.

Areas read typed, frozen views of the settings (Scrapy's ``from_settings``): subclass
``SettingsView``, name each field after its key (or give ``setting("key")``), and call
``View.from_settings(settings)``; the default comes from ``DEFAULTS``, never from the view.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from trapline.errors import ConfigError

DEFAULTS: dict[str, Any] = {
    # where the DuckDB file and everything else live
    "data_dir": "trapline-data",
    # ingest
    "batch_size": 2000,  # messages per write transaction
    "workers": 0,  # parse processes; 0 = one per core
    # Parse processes run this much nicer than the rest: on a busy machine the trap and
    # interactive commands go first, a batch ingest takes what is left (0 = same priority).
    "ingest_worker_nice": 5,
    # DuckDB's memory cap for the ingest writer: without it the buffer pool caches every block
    # written in the run and the writer's memory grows with the input ("" = DuckDB's default).
    "store_memory_limit": "256MB",
    # store access: how long a command or service waits for its turn on the store (-1 = for ever)
    "store_wait_s": 600.0,
    "serve_report_interval_s": 60.0,  # serve logs what it did once per interval
    "trust": [],  # extra trusted CIDRs / host names / domains for the origin walk
    # Stages run after each ingest batch is stored, in order ("module:function"). A stage gets
    # (store, message_ids, settings), returns a one-line summary, or raises NotConfigured to
    # switch itself off (say, no routing snapshot imported yet).
    "post_ingest_stages": [
        "trapline.pipeline.adapters.harvest:harvest_stage",
        "trapline.pipeline.adapters.asn:asn_stage",
    ],
    # Near-duplicate signatures computed by the parse workers from the parsed records
    # and stored in each batch's transaction. False leaves them to `analyze campaigns` (or to
    # the stage "trapline.pipeline.adapters.fingerprint:fingerprint_stage"), which reads stored rows.
    "fingerprint_at_ingest": True,
    # Run the post-ingest stages on a background thread (own DuckDB cursor) while the next batch is
    # stored, instead of stopping the pipeline for them; false = strictly one after the other.
    "post_ingest_background": True,
    # campaigns and botnets (docs/campaigns.md explains each threshold)
    "campaign_jaccard": 0.45,  # estimated Jaccard at which two texts are one template
    "campaign_lsh_bands": 32,  # bands x rows <= 128 MinHash permutations
    "campaign_lsh_rows": 4,
    "campaign_url_window_days": 3.0,  # URL-template joins: same or adjacent period of this length
    "botnet_window_days": 30.0,  # two campaigns share a host if both used it within this window
    "botnet_min_shared_hosts": 3,  # hosts two campaigns must share to link (one relay is not enough)
    "botnet_min_overlap": 0.1,  # ... and that share of the smaller campaign's hosts
    "botnet_max_host_campaigns": 200,  # hosts used by more campaigns are relays/shared: ignored
    # output: rows `trapline query` prints as a table unless --limit/--all (--json prints all)
    "query_print_rows": 100,
    # Sending-software and landing evidence (docs/campaigns.md): a campaign pair links when the
    # weights of what it agrees on reach botnet_link_score; no single trait reaches it alone.
    "botnet_trait_weights": {
        "msgid_shape": 0.4,
        "boundary_shape": 0.25,
        "header_order": 0.4,
        "mailer": 0.2,
        "helo_shape": 0.2,
        "landing": 0.5,
    },
    "botnet_link_score": 1.0,
    "botnet_max_domain_campaigns": 5,  # landing domains in more campaigns are common, not evidence
    # software seen in 5+ campaigns from fewer hosts than this per campaign is a relay, not bots
    "botnet_relay_hosts_per_campaign": 0.5,
    # timeline and change points (docs/timeline.md explains each number)
    "changes_penalty_beta": 2.0,  # penalty = beta * sigma^2 * log(n) per change point
    "changes_min_relative_change": 0.15,  # smaller level changes are not reported
    "changes_attribution_top": 5,  # groups named per change point; the rest is "other"
    "changes_attribution_min_share": 0.02,  # smaller shares go to "other"
    # takedown impact (docs/timeline.md): how much of a message's volume stops when the
    # network it depends on this way goes dark
    "takedown_weights": {"cc": 1.0, "sender": 1.0, "landing": 0.3, "harvester": 0.1},
    "takedown_window_days": 14.0,  # volume measured over this many days before the date
    # routing
    "routing_choice": "nearest",  # or "latest-before"
    # network score (docs/networks.md explains each number)
    "network_weights": {
        "spam": 1.0,
        "harvester": 3.0,
        "dictionary": 0.5,
        "url_host": 2.0,
        "cc": 5.0,
        "blocklist": 4.0,
    },
    "network_size_exponent": 0.5,
    "network_longevity_weight": 1.0,
    "network_longevity_cap_days": 365,
    "network_breadth_weight": 0.5,
    # traps
    "trap_domains": ["traps.example.org"],
    "smtp_listen": "127.0.0.1:2525",
    "http_listen": "127.0.0.1:8080",
    # the DNSBL inside `trapline serve`: off unless --dns (port 5353 is often taken already)
    "dns_listen": "off",
    "trusted_proxies": [],
    "smtp_max_message_bytes": 10 * 1024 * 1024,
    "smtp_max_recipients": 100,
    "smtp_max_connections": 200,
    "smtp_per_ip_per_minute": 600,
    "smtp_command_timeout_s": 30.0,
    "smtp_data_timeout_s": 120.0,
    "site_secret_file": "",  # default <data_dir>/site.secret, created with mode 0600
    "smtp_hostname": "mx.traps.example.org",  # name in the banner and our Received: line
    "spool_dir": "",  # default <data_dir>/spool
    "trap_templates_dir": "",  # folder of page templates overriding the packaged set
    "http_site_name": "",  # the honeypot's name; "" = one of several themes, chosen per site
    "smtp_tls_cert": "",  # PEM certificate: offer STARTTLS (bots that use it are fingerprinted)
    "smtp_tls_key": "",  # PEM private key for smtp_tls_cert (if not inside the cert file)
    "serve_modules": [],  # extra modules that register_service() for `trapline serve`
    # hardening: input sources
    # Read symlinks whose target lies outside the directory given (off: a Maildir entry linked
    # to /etc/shadow is a source problem, not a message).
    "follow_symlinks": False,
    # hardening: SMTP trap limits under abuse (docs/security.md)
    "smtp_max_sessions_per_ip": 10,  # concurrent sessions from one IP (421 beyond)
    "smtp_max_idle_commands": 20,  # NOOP/RSET/HELP/VRFY/EXPN in a row before 421
    "smtp_max_refused_rcpts": 20,  # relay-refused RCPTs per session before 421
    "smtp_listen_backlog": 1024,  # pending connections the kernel queues
    # Bytes all DATA commands in progress may reserve (each reserves smtp_max_message_bytes);
    # beyond it DATA gets 451. Bounds unfinished messages, which are on disk in spool/tmp
    # beyond smtp_data_memory_bytes each (docs/security.md has the worst cases).
    "smtp_inflight_data_bytes": 512 * 1024 * 1024,
    # A message in DATA stays in memory up to this, then goes to a spool file as it arrives.
    "smtp_data_memory_bytes": 128 * 1024,
    # hardening: the web honeypot's HTTP server under abuse (docs/security.md)
    "http_visits_per_ip_per_minute": 60,  # new trap addresses per client IP; then it sees its last
    "http_header_timeout_s": 10.0,  # a request's headers must arrive within this
    "http_read_timeout_s": 30.0,  # a posted form's body must arrive within this
    "http_max_connections": 512,  # concurrent HTTP connections (503 beyond)
    "http_listen_backlog": 128,  # also asyncio's accept batch: keep it well below the fd limit
    "reserved_descriptors": 256,  # kept free of HTTP for SMTP, spool, store and drain
    "log_repeat_burst": 5,  # identical log lines let through per window ...
    "log_repeat_window_s": 60.0,  # ... the rest counted and summarised once
    # hardening: routing imports. A table cut short (truncated download, fewer prefixes than its
    # header declares) is stored marked partial and not used to map mail unless this is true.
    "routing_allow_partial": False,
    # object stores (docs/scaling.md): `spark ingest` inputs and outputs given as s3a:// URIs
    "s3_endpoint": "",  # another S3 service, as http://127.0.0.1:9000; "" = AWS itself
    "s3_region": "",  # "" = AWS_REGION / AWS_DEFAULT_REGION, else the bucket's own
    # exports (docs/exports.md)
    "export_min_campaign_size": 2,  # STIX/MISP: smaller campaigns are single messages, not news
    "arf_from": "abuse-reports@trapline.invalid",  # From: of abuse reports; set your desk's address
    "arf_max_reports": 100,  # reports per `export arf` run (one per message); 0 = every message
    # DNSBL (docs/dnsbl.md)
    "dnsbl_listen": "127.0.0.1:5353",  # `trapline dnsbl` alone
    "dnsbl_zones": ["bl.example.org"],  # zone apexes served; lists are subzones of each
    "dnsbl_max_age_days": 30.0,  # a listing expires this long after its evidence; 0 = never
    "dnsbl_ttl": 300,  # TTL of A/TXT answers
    "dnsbl_negative_ttl": 300,  # SOA MINIMUM: how long resolvers cache NXDOMAIN (RFC 2308)
    "dnsbl_ns": [],  # NS names at the apex; default ns.<zone>
    "dnsbl_hostmaster": "",  # SOA RNAME; default hostmaster.<zone>
    "dnsbl_record_url": "http://127.0.0.1:8090/api/v1/ip/{ip}",  # TXT link: the API's IP record
    "dnsbl_networks_top": 10,  # ASes whose prefixes the networks zone lists
    "dnsbl_httpbl_keys": [],  # http:BL access keys accepted; empty = any 12-letter key
    "dnsbl_reload_s": 60.0,  # re-read the store this often (0 = never)
    "dnsbl_workers": 1,  # UDP answering processes (SO_REUSEPORT); 1 = in-process only
    "dnsbl_rate_limit": 0.0,  # queries/s per source address; 0 = no limit
    # API and dashboard (docs/web.md): never on the honeypot's address. `serve` starts them
    # only when given --web (or web_listen), so a trap host exposes no dashboard by accident.
    "web_listen": "off",
    "web_default_listen": "127.0.0.1:8090",  # `trapline web` without an address
    "web_anonymous_read": False,  # public read-only deployments; writes always need a key
    "web_session_hours": 12,  # dashboard session cookie lifetime
    # Rebuild the in-memory search index at most this often after the store changed (newer
    # messages are merged in from SQL meanwhile, so results are never stale).
    "web_search_refresh_s": 300.0,
}


# Environment variables with the TRAPLINE_ prefix that are not settings.
# TRAPLINE_SHARED_DATA: the test data folder; TRAPLINE_REQUIRE_SPARK: CI fails without Spark.
NOT_SETTINGS = frozenset({"TRAPLINE_CONFIG", "TRAPLINE_SHARED_DATA", "TRAPLINE_REQUIRE_SPARK"})


def _coerce(key: str, text: str) -> Any:
    """Turn an environment string into the type of the default it overrides."""
    default = DEFAULTS.get(key)
    try:
        if isinstance(default, bool):
            return text.strip().lower() in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, list):
            return [part.strip() for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise ConfigError(
            f"TRAPLINE_{key.upper()}={text!r} is not a valid {type(default).__name__}"
        ) from exc
    return text


def check_key(key: str, where: str) -> None:
    """Raise ``ConfigError`` for a key ``DEFAULTS`` does not know, naming the nearest one."""
    if key in DEFAULTS:
        return
    near = difflib.get_close_matches(key, list(DEFAULTS), n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise ConfigError(
        f"{where}: unknown setting {key!r}{hint} (`trapline config show` lists them all)"
    )


@dataclass(slots=True, frozen=True)
class Config:
    """Effective settings and where each came from: ``default``, ``file <path>``,
    ``environment TRAPLINE_<KEY>`` or ``flag``."""

    values: dict[str, Any]
    origins: dict[str, str]

    def rows(self) -> list[tuple[str, Any, str]]:
        """``(key, value, origin)`` for every setting, sorted by key."""
        return [(k, self.values[k], self.origins.get(k, "default")) for k in sorted(self.values)]


def register_defaults(values: Mapping[str, Any]) -> None:
    """Add a plug-in's own settings (a ``serve_modules`` module calls this at import), so its
    keys are known; keys trapline already has keep their defaults."""
    for key, value in values.items():
        DEFAULTS.setdefault(key, value)


def _plugins(entries: list[tuple[str, Any, str]]) -> None:
    """Import the ``serve_modules`` named in ``entries`` before keys are checked: they may
    register settings of their own."""
    modules: Any = DEFAULTS["serve_modules"]
    for key, value, _ in entries:
        if key == "serve_modules":
            modules = value
    if isinstance(modules, str):
        modules = [m.strip() for m in modules.split(",") if m.strip()]
    for module in modules or []:
        try:
            importlib.import_module(str(module))
        except ImportError as exc:
            raise ConfigError(f"serve_modules: cannot import {module!r} ({exc})") from exc


def load_config(overrides: dict[str, Any] | None = None, *, cwd: Path | None = None) -> Config:
    """The effective settings (defaults < toml < env < overrides) with their origins."""
    entries: list[tuple[str, Any, str]] = []  # (key, value, origin), lowest precedence first
    base = cwd or Path.cwd()
    path = Path(os.environ.get("TRAPLINE_CONFIG", base / "trapline.toml"))
    if path.is_file():
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}; fix the file or move it away") from exc
        table = data.get("trapline", data)
        entries += [
            (name.replace("-", "_"), value, f"file {path}") for name, value in table.items()
        ]
    for name, text in sorted(os.environ.items()):
        if name.startswith("TRAPLINE_") and name not in NOT_SETTINGS:
            entries.append((name[len("TRAPLINE_") :].lower(), text, f"environment {name}"))
    entries += [(k, v, "flag") for k, v in (overrides or {}).items() if v is not None]
    _plugins(entries)
    values = dict(DEFAULTS)
    origins = dict.fromkeys(DEFAULTS, "default")
    for key, value, origin in entries:
        if origin.startswith("file"):
            check_key(key, str(path))
        elif origin.startswith("environment"):
            check_key(key, f"environment variable {origin.split()[-1]}")
            value = _coerce(key, value)
        else:
            check_key(key, "option")
        values[key], origins[key] = value, origin
    return Config(values, origins)


def load_settings(
    overrides: dict[str, Any] | None = None, *, cwd: Path | None = None
) -> dict[str, Any]:
    """Return the effective settings dict (defaults < toml < env < overrides)."""
    return load_config(overrides, cwd=cwd).values


# --- typed views --------------------------------------------------------------------------------


def setting(key: str) -> Any:
    """A view field read from ``key`` (when the field's own name is not the key)."""
    return dataclasses.field(metadata={"key": key})


def _convert(key: str, value: Any, kind: Any) -> Any:
    origin = typing.get_origin(kind) or kind
    try:
        if origin is bool:
            if isinstance(value, str):
                return value.strip().lower() in {"1", "true", "yes", "on"}
            return bool(value)
        if origin is tuple:
            items = value.split(",") if isinstance(value, str) else list(value or ())
            return tuple(str(v).strip() for v in items if str(v).strip())
        if origin in (int, float, str):
            return origin(value)
        if origin is dict:  # dict[str, number]: a table of weights
            of = typing.get_args(kind)[1] if typing.get_args(kind) else str
            return {str(k): of(v) for k, v in dict(value).items()}
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"setting {key}={value!r} is not a valid {getattr(origin, '__name__', origin)}; "
            "fix trapline.toml or the TRAPLINE_ variable"
        ) from exc
    return value


class SettingsView:
    """Base of the typed per-area settings: frozen dataclasses built from a settings mapping."""

    __slots__ = ()
    prefix: ClassVar[str] = ""

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Self:
        """The view from ``settings``; keys it lacks take their ``DEFAULTS`` value."""
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            key = f.metadata.get("key", cls.prefix + f.name)
            raw = settings[key] if key in settings else DEFAULTS[key]
            values[f.name] = _convert(key, raw, hints[f.name])
        return cls(**values)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The settings this view reads."""
        return tuple(
            f.metadata.get("key", cls.prefix + f.name)
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        )


@dataclass(slots=True, frozen=True)
class SmtpLimits(SettingsView):
    """What the SMTP trap accepts per message, connection and sender."""

    prefix: ClassVar[str] = "smtp_"
    max_message_bytes: int
    max_recipients: int
    max_connections: int
    per_ip_per_minute: int
    command_timeout_s: float
    data_timeout_s: float
    max_sessions_per_ip: int
    max_idle_commands: int
    max_refused_rcpts: int
    listen_backlog: int
    inflight_data_bytes: int
    data_memory_bytes: int
