"""The harvest stage's store side: link just-stored messages to the visits whose addresses they
were sent to (``trapline.enrich.harvest`` decodes), and record dictionary attacks."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from trapline.enrich.harvest import Link, plan, resolve
from trapline.errors import ConfigError, NotConfigured
from trapline.store.duckdb import Store
from trapline.store.trap_domains import known as known_trap_domains
from trapline.traps import addresses


def _settings_inputs(settings: dict[str, Any]) -> tuple[bytes, list[str]]:
    domains = [str(d).lower().rstrip(".") for d in settings.get("trap_domains") or []]
    if not domains:
        raise NotConfigured("no trap_domains configured")
    try:
        secret = addresses.site_secret(settings, create=False)
    except ConfigError as exc:
        raise NotConfigured(f"no site secret ({exc})") from exc
    return secret, domains


def harvest_stage(store: Store, message_ids: list[str], settings: dict[str, Any]) -> str:
    """Pipeline stage: link new messages to the visits whose addresses they were sent to."""
    if not message_ids:
        return ""
    secret, domains = _settings_inputs(settings)
    con = store.con
    domains = known_trap_domains(domains, con)  # and those this store's traps issued
    con.register("_harvest_ids", pa.table({"id": pa.array(message_ids, pa.string())}))
    try:
        rows = con.execute(
            "SELECT r.message_id, r.kind, r.addr FROM recipients r "
            "SEMI JOIN _harvest_ids h ON h.id = r.message_id WHERE r.addr IS NOT NULL"
        ).fetchall()
        links = resolve(rows, secret, domains)
        if not links:
            return "no trap-domain recipients"
        _write_links(store, links)
    finally:
        con.unregister("_harvest_ids")
    linked = len({(link.message_id, link.visit_id) for link in links if link.visit_id})
    attacks = len({(link.message_id, link.addr.lower()) for link in links if not link.visit_id})
    return f"{linked} message-visit links, {attacks} dictionary-attack recipients"


def _write_links(store: Store, links: list[Link]) -> None:
    con = store.con
    todo = plan(links)
    good, best, bad = todo.recipients, todo.messages, todo.attacks
    upd = pa.table(
        {
            "mid": pa.array([x.message_id for x in good], pa.string()),
            "addr": pa.array([x.addr for x in good], pa.string()),
            "visit": pa.array([x.visit_id for x in good], pa.string()),
        }
    )
    first = pa.table(
        {
            "mid": pa.array(list(best), pa.string()),
            "visit": pa.array(list(best.values()), pa.string()),
        }
    )
    attacks = pa.table(
        {
            "mid": pa.array([k[0] for k in bad], pa.string()),
            "addr": pa.array([k[1] for k in bad], pa.string()),
            "reason": pa.array(list(bad.values()), pa.string()),
        }
    )
    ids = sorted({x.message_id for x in links})
    con.begin()
    try:
        con.register("_h_upd", upd)
        con.register("_h_first", first)
        con.register("_h_attacks", attacks)
        con.register("_h_ids", pa.table({"id": pa.array(ids, pa.string())}))
        con.execute(
            "UPDATE recipients SET trap_visit_id = u.visit FROM _h_upd u "
            "WHERE recipients.message_id = u.mid AND recipients.addr = u.addr"
        )
        con.execute(
            "UPDATE messages SET trap_visit_id = f.visit FROM _h_first f WHERE messages.id = f.mid"
        )
        # Re-running the stage over the same messages replaces, never duplicates, its rows.
        con.execute("DELETE FROM dictionary_attacks WHERE message_id IN (SELECT id FROM _h_ids)")
        con.execute(
            """
            INSERT INTO dictionary_attacks
            SELECT a.mid, a.addr, split_part(a.addr, '@', -1), a.reason, m.origin_ip,
                   coalesce(json_extract_string(r.envelope, '$.mail_from'), m.from_addr),
                   coalesce(m.received_at, m.ingested_at)
            FROM _h_attacks a JOIN messages m ON m.id = a.mid LEFT JOIN raw r ON r.id = a.mid
            """
        )
        con.commit()
    except Exception:
        con.rollback()
        raise
    finally:
        for name in ("_h_upd", "_h_first", "_h_attacks", "_h_ids"):
            con.unregister(name)
