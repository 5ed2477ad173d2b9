"""Settings: every default in one place, overridden by ``trapline.toml`` and ``TRAPLINE_*``.

Precedence, lowest first: the defaults below, ``trapline.toml`` in the working directory (or the
file named by ``TRAPLINE_CONFIG``), ``TRAPLINE_<KEY>`` environment variables, then command-line
options. Zero configuration runs everything on loopback with ``./trapline-data``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from trapline.errors import ConfigError

DEFAULTS: dict[str, Any] = {
    # where the DuckDB file and everything else live
    "data_dir": "trapline-data",
    # ingest
    "batch_size": 2000,  # messages per write transaction
    "workers": 0,  # parse processes; 0 = one per core
    # DuckDB's memory cap for the ingest writer: without it the buffer pool caches every block
    # written in the run and the writer's memory grows with the input ("" = DuckDB's default).
    "store_memory_limit": "256MB",
    "trust": [],  # extra trusted CIDRs / host names / domains for the origin walk
    # Stages run after each ingest batch is stored, in order ("module:function"). A stage gets
    # (store, message_ids, settings), returns a one-line summary, or raises NotConfigured to
    # switch itself off (say, no routing snapshot imported yet).
    "post_ingest_stages": [
        "trapline.pipeline.adapters.harvest:harvest_stage",
        "trapline.pipeline.adapters.asn:asn_stage",
    ],
    # Near-duplicate signatures (issue 5) computed by the parse workers from the parsed records
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
    "http_site_name": "Riverside Community Garden",  # shown by the default honeypot pages
    "smtp_tls_cert": "",  # PEM certificate: offer STARTTLS (bots that use it are fingerprinted)
    "smtp_tls_key": "",  # PEM private key for smtp_tls_cert (if not inside the cert file)
    "serve_modules": [],  # extra modules that register_service() for `trapline serve`
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
    "dnsbl_record_url": "http://127.0.0.1:8080/api/ips/{ip}",  # TXT link to the evidence
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
}


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


def load_settings(
    overrides: dict[str, Any] | None = None, *, cwd: Path | None = None
) -> dict[str, Any]:
    """Return the effective settings dict (defaults < toml < env < overrides)."""
    settings = dict(DEFAULTS)
    base = cwd or Path.cwd()
    path = Path(os.environ.get("TRAPLINE_CONFIG", base / "trapline.toml"))
    if path.is_file():
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}; fix the file or move it away") from exc
        table = data.get("trapline", data)
        settings.update({k.replace("-", "_"): v for k, v in table.items()})
    for name, value in os.environ.items():
        if name.startswith("TRAPLINE_") and name != "TRAPLINE_CONFIG":
            key = name[len("TRAPLINE_") :].lower()
            settings[key] = _coerce(key, value)
    if overrides:
        settings.update({k: v for k, v in overrides.items() if v is not None})
    return settings
