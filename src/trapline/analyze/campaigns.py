"""Campaigns in the store: incremental clustering of new signatures into stable campaigns.

A run touches only the new signatures (``seq`` above the last clustered one), the stored LSH and
URL buckets their keys hit, and the campaigns they join: cost follows the day's mail, not the
store. The link rule (analyze/lsh.py) depends only on processing order, so an incremental run
gives the same partition as a rebuild (tests/test_campaigns.py checks it).

Ids: a campaign's id is ``c`` + 16 hex of its root message id, the member with the smallest seq.
A new message never changes a root (its seq is larger); when a message links two campaigns the
older root wins, the younger id is recorded in ``campaign_merges`` and its members move over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from trapline.analyze.campaign_report import refresh_campaigns
from trapline.analyze.graph import components
from trapline.analyze.lsh import ClusterParams, link
from trapline.analyze.text_links import TextPrior
from trapline.analyze.url_links import UrlPrior, url_keys
from trapline.fingerprint.minhash import NUM_PERM, band_keys, is_empty
from trapline.fingerprint.templates import template_hash
from trapline.model import utcnow
from trapline.pipeline.adapters.fingerprint import fingerprint_ids, refingerprint_all
from trapline.store.duckdb import Store
from trapline.store.labels import ALL, SPAM, label_filter

BACKFILL_BATCH = 20_000


@dataclass(slots=True, frozen=True)
class CampaignRun:
    """What one ``analyze campaigns`` run did."""

    fingerprinted: int
    clustered: int
    campaigns_touched: int
    merges: int
    candidates: int
    rebuilt: bool


def _matrix(blobs: list[bytes]) -> np.ndarray:
    if not blobs:
        return np.zeros((0, NUM_PERM), np.uint32)
    return np.frombuffer(b"".join(blobs), dtype="<u4").reshape(len(blobs), NUM_PERM)


def _backfill(con: duckdb.DuckDBPyConnection) -> int:
    """Fingerprint stored messages that have none (stores ingested before the stage ran)."""
    total = 0
    while True:
        ids = [
            r[0]
            for r in con.execute(
                "SELECT id FROM messages WHERE id NOT IN (SELECT message_id FROM signatures) "
                "ORDER BY ingested_at, id LIMIT ?",
                [BACKFILL_BATCH],
            ).fetchall()
        ]
        if not ids:
            return total
        total += fingerprint_ids(con, ids)


def _reset(con: duckdb.DuckDBPyConnection) -> None:
    for sql in (
        "DELETE FROM lsh_buckets",
        "DELETE FROM url_buckets",
        "DELETE FROM campaign_state",
        "DELETE FROM campaigns",
        "DELETE FROM campaign_merges",
        "UPDATE signatures SET campaign_seq = NULL",
        "UPDATE messages SET campaign_id = NULL WHERE campaign_id IS NOT NULL",
    ):
        con.execute(sql)


def _keys_table(con: duckdb.DuckDBPyConnection, name: str, keys: np.ndarray) -> None:
    con.register(name, pa.table({"key": pa.array(np.unique(keys), pa.int64())}))


def analyze_campaigns(
    store: Store,
    settings: dict[str, Any],
    *,
    rebuild: bool = False,
    limit: int | None = None,
    refingerprint: bool = False,
    label: str = SPAM,
) -> CampaignRun:
    """Fingerprint what is missing, then cluster new signatures into campaigns (incremental).

    ``rebuild`` clears the derived state and clusters everything again; it also happens when
    the thresholds changed since the last run. ``limit`` clusters at most that many new
    signatures (to process a backlog day by day). ``refingerprint`` recomputes every stored
    signature first (after an upgrade of the fingerprint code) and implies ``rebuild``.
    Only messages with ``label`` are clustered (spam unless asked; ``all`` for every message):
    ham must not form campaigns. Choosing another label than the last run's rebuilds.
    """
    con = store.con
    params = ClusterParams.from_settings(settings)
    fingerprinted = 0
    if refingerprint:
        rebuild = True
        fingerprinted = refingerprint_all(con)
    fingerprinted += _backfill(con)
    found = con.execute("SELECT last_seq, params FROM campaign_state WHERE id = 1").fetchall()
    state = found[0] if found else None
    key = params.key() + ("" if label == SPAM else f";label={label}")
    rebuilt = rebuild or (state is not None and state[1] != key)
    if rebuilt:
        _reset(con)
        state = None
    last_seq = state[0] if state else -1
    counted = (
        ""
        if label == ALL
        else f" AND message_id IN (SELECT id FROM messages WHERE {label_filter(label)})"
    )
    sql = (
        "SELECT seq, minhash, url_templates, epoch(received_at)::BIGINT FROM signatures "
        f"WHERE seq > ?{counted} ORDER BY seq" + (f" LIMIT {int(limit)}" if limit else "")
    )
    rows = con.execute(sql, [last_seq]).fetchall()
    if not rows:
        return CampaignRun(fingerprinted, 0, 0, 0, 0, rebuilt)
    con.execute("BEGIN TRANSACTION")
    try:
        result = _cluster_new(con, rows, params)
        con.execute(
            "INSERT OR REPLACE INTO campaign_state VALUES (1, ?, ?, ?)",
            [rows[-1][0], key, utcnow()],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    touched, merges, candidates = result
    return CampaignRun(fingerprinted, len(rows), touched, merges, candidates, rebuilt)


def _cluster_new(
    con: duckdb.DuckDBPyConnection, rows: list[tuple[Any, ...]], params: ClusterParams
) -> tuple[int, int, int]:
    new_seq = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    new_sig = _matrix([r[1] for r in rows])
    times = np.fromiter((r[3] if r[3] is not None else -1 for r in rows), np.int64, len(rows))
    hashes = [[template_hash(t) for t in (r[2] or ())] for r in rows]
    live = ~is_empty(new_sig)
    all_keys = band_keys(new_sig[live], params.bands, params.rows).ravel()
    _keys_table(con, "_bk", all_keys)
    prior_rows = con.execute(
        "SELECT b.key, b.first_seq, b.last_seq FROM lsh_buckets b JOIN _bk USING (key) ORDER BY 1"
    ).fetchnumpy()
    con.unregister("_bk")
    text_prior = TextPrior(
        np.asarray(prior_rows["key"], np.int64),
        np.asarray(prior_rows["first_seq"], np.int64),
        np.asarray(prior_rows["last_seq"], np.int64),
    )
    url_rows, ukey = url_keys(hashes, times, params.url_period_days)
    _keys_table(con, "_uk", np.concatenate((ukey - 1, ukey, ukey + 1)))
    uprior = con.execute(
        "SELECT b.key, b.anchor_seq FROM url_buckets b JOIN _uk USING (key) ORDER BY 1"
    ).fetchnumpy()
    con.unregister("_uk")
    url_prior = UrlPrior(
        np.asarray(uprior["key"], np.int64), np.asarray(uprior["anchor_seq"], np.int64)
    )
    # Old members the new ones may link to, and the roots of their campaigns.
    old = np.unique(np.concatenate((text_prior.first, text_prior.last, url_prior.anchor)))
    roots = np.zeros(0, np.int64)
    old_sig = np.zeros((0, NUM_PERM), np.uint32)
    if len(old):
        con.register("_old", pa.table({"seq": pa.array(old, pa.int64())}))
        got = con.execute(
            "SELECT s.seq, s.minhash, s.campaign_seq FROM signatures s JOIN _old USING (seq) "
            "ORDER BY s.seq"
        ).fetchall()
        con.unregister("_old")
        old_sig = _matrix([g[1] for g in got])
        roots = np.fromiter((g[2] for g in got), np.int64, len(got))
    root_only = np.setdiff1d(roots, old)
    old_nodes = np.concatenate((old, root_only))
    order = np.argsort(old_nodes)
    old_nodes = old_nodes[order]
    local_seq = np.concatenate((old_nodes, new_seq))
    sig = np.concatenate((old_sig, np.zeros((len(root_only), NUM_PERM), np.uint32)))[order]
    sig = np.concatenate((sig, new_sig))
    n_old = len(old_nodes)
    new_rows = np.arange(n_old, len(local_seq))
    res = link(
        local_seq, sig, new_rows, new_rows[url_rows], ukey, params,
        lambda band: text_prior, url_prior,
    )  # fmt: skip
    # Old members hang off their campaign root so a link to any member reaches the campaign.
    ra = np.searchsorted(local_seq, old)
    rb = np.searchsorted(local_seq, roots)
    root_local = components(
        len(local_seq), np.concatenate((res.a, ra)), np.concatenate((res.b, rb))
    )
    root_seq = local_seq[root_local]
    _write_state(con, res)
    return _write_assignments(con, local_seq, root_seq, n_old, np.unique(roots), res.candidates)


def _write_state(con: duckdb.DuckDBPyConnection, res: Any) -> None:
    keys = np.concatenate([s.keys for s in res.text_state])
    first = np.concatenate([s.first for s in res.text_state])
    last = np.concatenate([s.last for s in res.text_state])
    con.register("_ts", pa.table({"key": keys, "first_seq": first, "last_seq": last}))
    con.execute("DELETE FROM lsh_buckets WHERE key IN (SELECT key FROM _ts)")
    con.execute("INSERT INTO lsh_buckets SELECT key, first_seq, last_seq FROM _ts")
    con.unregister("_ts")
    us = res.url_state
    con.register("_us", pa.table({"key": us.keys, "anchor_seq": us.anchor}))
    con.execute("DELETE FROM url_buckets WHERE key IN (SELECT key FROM _us)")
    con.execute("INSERT INTO url_buckets SELECT key, anchor_seq FROM _us")
    con.unregister("_us")


def _write_assignments(
    con: duckdb.DuckDBPyConnection,
    local_seq: np.ndarray,
    root_seq: np.ndarray,
    n_old: int,
    old_root_seqs: np.ndarray,
    candidates: int,
) -> tuple[int, int, int]:
    """Store campaign roots of new members, apply merges, refresh touched campaign summaries."""
    now = utcnow()
    # Old campaign roots whose component root is older still: their campaigns merge into it.
    old_roots = np.intersect1d(local_seq[:n_old], old_root_seqs)
    at = np.searchsorted(local_seq, old_roots)
    moved = root_seq[at] != old_roots
    merge = pa.table({"old": old_roots[moved], "new": root_seq[at][moved]})
    con.register("_merge", merge)
    con.register("_assign", pa.table({"seq": local_seq[n_old:], "root": root_seq[n_old:]}))
    con.execute(
        "UPDATE signatures SET campaign_seq = a.root FROM _assign a WHERE signatures.seq = a.seq"
    )
    con.execute(
        "UPDATE signatures SET campaign_seq = g.new FROM (SELECT DISTINCT old, new FROM _merge) g "
        "WHERE signatures.campaign_seq = g.old"
    )
    # Campaign id strings from root message ids, for every member whose root is new or moved.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _touched AS
        SELECT DISTINCT s.campaign_seq AS root FROM signatures s
        WHERE s.seq IN (SELECT seq FROM _assign) OR s.campaign_seq IN (SELECT new FROM _merge)
        """
    )
    con.execute(
        """
        INSERT INTO campaign_merges
        SELECT DISTINCT 'c' || left(o.message_id, 16), 'c' || left(n.message_id, 16), ?
        FROM (SELECT DISTINCT old, new FROM _merge) g
        JOIN signatures o ON o.seq = g.old JOIN signatures n ON n.seq = g.new
        """,
        [now],
    )
    con.execute("DELETE FROM campaigns WHERE root_seq IN (SELECT old FROM _merge)")
    con.execute(
        """
        UPDATE messages SET campaign_id = x.cid
        FROM (SELECT s.message_id, 'c' || left(r.message_id, 16) AS cid
              FROM signatures s JOIN signatures r ON r.seq = s.campaign_seq
              WHERE s.campaign_seq IN (SELECT root FROM _touched)) x
        WHERE messages.id = x.message_id
        """
    )
    n_merges = len(np.unique(merge.column("old").to_numpy())) if merge.num_rows else 0
    con.unregister("_merge")
    con.unregister("_assign")
    touched = refresh_campaigns(con, "SELECT root FROM _touched")
    return touched, n_merges, candidates
