"""Message search from memory: the list columns of every spam message, newest first, in Arrow.

A page is the first ``limit + 1`` positions, from the cursor on, that pass the filters: a time
window is a slice (the rows are sorted by time), AS, IP and campaign compare integer codes,
subject is a substring scan and URL domains are precomputed position lists, all evaluated chunk
by chunk so a page stops scanning once it is full. The index is a snapshot: messages stored after
it (``ingested_at`` at or after its watermark) come from SQL and are merged in, so a search is
never stale; it is rebuilt in the background when the store changed and it is older than
``web_search_refresh_s``. ``search.search_messages`` (SQL) is the reference the tests hold it to.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trapline.serve.api.access import StoreAccess
from trapline.serve.api.search import (
    COLUMNS,
    MessageFilter,
    decode_cursor,
    encode_cursor,
    search_messages,
)
from trapline.store.queries import plain_value

log = logging.getLogger("trapline.web")
CHUNK = 1 << 16
NO_TIME = np.iinfo(np.int64).min  # sorts last in the descending order


@dataclass(slots=True)
class SearchIndex:
    table: pa.Table  # COLUMNS, sorted received_at DESC NULLS LAST, id DESC
    neg_time: np.ndarray  # -received_at (us), ascending; NO_TIME rows hold +inf-like values
    asn: np.ndarray  # int64, -1 = none
    ip_codes: np.ndarray
    ip_dict: dict[str, int]
    campaign_codes: np.ndarray
    campaigns: list[str]
    domains: dict[str, np.ndarray]  # registered domain -> sorted positions
    watermark: datetime | None  # max(ingested_at) when built
    version: tuple[Any, ...]
    built_at: float


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Dictionary codes of a text column (-1 = null) and the dictionary."""
    encoded = pc.dictionary_encode(column.combine_chunks())
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, [str(v) for v in encoded.dictionary.to_pylist()]


def build(access: StoreAccess) -> SearchIndex:
    version = access.version()
    cur = access.cursor()
    spam = access.spam_only()
    order = "ORDER BY received_at DESC NULLS LAST, id DESC"
    own = access.store.con.cursor()  # a relation needs a cursor with no pending result
    try:
        found = own.sql(f"SELECT {COLUMNS} FROM messages WHERE {spam} {order}").to_arrow_table()
    finally:
        own.close()
    assert found is not None
    table: pa.Table = found.combine_chunks()  # take() on one chunk, not across chunks
    when = pc.cast(table["received_at"], pa.int64()).to_numpy(zero_copy_only=False)
    times = np.where(pc.is_null(table["received_at"]).to_numpy(zero_copy_only=False), NO_TIME, when)
    asn = pc.fill_null(table["origin_asn"], -1).to_numpy().astype(np.int64)
    ip_codes, ips = _codes(table["origin_ip"])
    campaign_codes, campaigns = _codes(table["campaign_id"])
    domains = _domain_positions(access, table["id"])
    (watermark,) = cur.execute("SELECT max(ingested_at) FROM messages").fetchone() or (None,)
    return SearchIndex(
        table=table,
        neg_time=-times.astype(np.float64),
        asn=asn,
        ip_codes=ip_codes,
        ip_dict={ip: i for i, ip in enumerate(ips)},
        campaign_codes=campaign_codes,
        campaigns=campaigns,
        domains=domains,
        watermark=watermark,
        version=version,
        built_at=time.monotonic(),
    )


def _domain_positions(access: StoreAccess, ids: pa.Array) -> dict[str, np.ndarray]:
    """Registered domain -> sorted positions of the messages whose URLs are under it."""
    positions = pa.table({"id": ids, "pos": pa.array(np.arange(len(ids), dtype=np.int64))})
    own = access.store.con.cursor()
    try:
        own.register("_search_positions", positions)
        found = own.sql(
            "SELECT u.registered_domain AS k, p.pos AS pos FROM urls u "
            "JOIN _search_positions p ON p.id = u.message_id WHERE u.registered_domain IS NOT NULL"
        ).to_arrow_table()
    finally:
        own.close()
    if found is None or found.num_rows == 0:
        return {}
    keys = pc.dictionary_encode(found["k"].combine_chunks())
    codes = keys.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    pos = found["pos"].combine_chunks().to_numpy(zero_copy_only=False)
    # One key per code, positions ascending and distinct (a message links a domain many times).
    packed = np.sort(codes * (len(ids) + 1) + pos)  # a sort, not np.unique's hashing
    packed = packed[np.concatenate([[True], packed[1:] != packed[:-1]])]
    codes, pos = packed // (len(ids) + 1), packed % (len(ids) + 1)
    cuts = np.flatnonzero(np.diff(codes)) + 1
    names = keys.dictionary.to_pylist()
    return {
        str(names[int(codes[start])]): part
        for start, part in zip(np.concatenate([[0], cuts]), np.split(pos, cuts), strict=True)
    }


def _start(idx: SearchIndex, cursor: str | None) -> int:
    """First position after the cursor."""
    if not cursor:
        return 0
    when, mid = decode_cursor(cursor)
    key = NO_TIME if when is None else _us(when)
    lo = int(np.searchsorted(idx.neg_time, -float(key), side="left"))
    hi = int(np.searchsorted(idx.neg_time, -float(key), side="right"))
    # Within equal times ids run descending: skip those >= the cursor's id.
    block = idx.table["id"].slice(lo, hi - lo).to_pylist()
    return lo + sum(1 for i in block if i >= mid)


def _us(value: datetime) -> int:
    return int(pa.scalar(value, pa.timestamp("us")).value)


def _window(idx: SearchIndex, f: MessageFilter) -> tuple[int, int]:
    lo, hi = 0, len(idx.neg_time)
    if f.until is not None:  # received_at < until: skip newer rows
        lo = int(np.searchsorted(idx.neg_time, -float(_us(f.until)), side="right"))
    if f.since is not None or f.until is not None:
        # Rows without a time never match a time filter; they sit at the end.
        hi = int(np.searchsorted(idx.neg_time, -float(NO_TIME), side="left"))
    if f.since is not None:  # received_at >= since
        hi = min(hi, int(np.searchsorted(idx.neg_time, -float(_us(f.since)), side="right")))
    return lo, hi


def _matches(idx: SearchIndex, f: MessageFilter, a: int, b: int) -> np.ndarray | None:
    """Positions in [a, b) that pass the non-time filters (None: nothing can match)."""
    mask = np.ones(b - a, dtype=bool)
    if f.asn is not None:
        mask &= idx.asn[a:b] == f.asn
    if f.ip is not None:
        code = idx.ip_dict.get(f.ip)
        if code is None:
            return None
        mask &= idx.ip_codes[a:b] == code
    if f.campaign:
        prefix = f.campaign.strip().lower()
        wanted = [i for i, c in enumerate(idx.campaigns) if c.startswith(prefix)]
        if not wanted:
            return None
        mask &= np.isin(idx.campaign_codes[a:b], wanted)
    if f.domain:
        positions = idx.domains.get(f.domain.strip().lower().rstrip("."))
        if positions is None:
            return None
        inside = positions[np.searchsorted(positions, a) : np.searchsorted(positions, b)]
        hit = np.zeros(b - a, dtype=bool)
        hit[inside - a] = True
        mask &= hit
    if f.subject and mask.any():
        subjects = idx.table["subject"].slice(a, b - a)
        found = pc.match_substring(subjects, f.subject, ignore_case=True)
        mask &= pc.fill_null(found, False).to_numpy(zero_copy_only=False)
    return a + np.flatnonzero(mask)


def page_positions(
    idx: SearchIndex, f: MessageFilter, limit: int, cursor: str | None
) -> np.ndarray:
    lo, hi = _window(idx, f)
    lo = max(lo, _start(idx, cursor))
    found: list[np.ndarray] = []
    n = 0
    for a in range(lo, hi, CHUNK):
        got = _matches(idx, f, a, min(hi, a + CHUNK))
        if got is None:
            return np.empty(0, dtype=np.int64)
        found.append(got)
        n += len(got)
        if n > limit:
            break
    return np.concatenate(found)[: limit + 1] if found else np.empty(0, dtype=np.int64)


def _sort_key(row: dict[str, Any]) -> tuple[tuple[int, str], str]:
    when = row["received_at"]  # ISO text of one format: compares as the times do
    return (0 if when is None else 1, when or ""), row["id"]


def search(
    idx: SearchIndex, access: StoreAccess, f: MessageFilter, *, limit: int, cursor: str | None
) -> dict[str, Any]:
    """Like ``search.search_messages``, from the index plus SQL for what arrived after it."""
    if f.domain and f.domain.strip().lower().rstrip(".") not in idx.domains:
        # Not a registered domain of any indexed URL (a longer host name, an IP): ask SQL.
        return search_messages(access, f, limit=limit, cursor=cursor)
    positions = page_positions(idx, f, limit, cursor)
    rows = [
        {k: plain_value(v) for k, v in r.items()} for r in idx.table.take(positions).to_pylist()
    ]
    if idx.watermark is not None and access.version_now() != idx.version:
        # Messages stored since the snapshot (same watermark too: a batch may share it).
        fresh = search_messages(access, f, limit=limit, cursor=cursor, stored_since=idx.watermark)
        seen = {r["id"] for r in rows}
        rows += [r for r in fresh["items"] if r["id"] not in seen]
        rows.sort(key=_sort_key, reverse=True)
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = None
    if more and rows:
        last = rows[-1]
        when = last["received_at"]
        nxt = encode_cursor(datetime.fromisoformat(when.rstrip("Z")) if when else None, last["id"])
    return {"items": rows, "next_cursor": nxt, "limit": limit}


class SearchIndexHolder:
    """The current index; rebuilt off the request path when the store changed."""

    def __init__(self, access: StoreAccess, refresh_s: float) -> None:
        self.access = access
        self.refresh_s = refresh_s
        self.index: SearchIndex | None = None
        self._building = threading.Lock()

    def page(self, f: MessageFilter, *, limit: int, cursor: str | None) -> dict[str, Any]:
        """A search page: from the index when it is built (spam only), else from SQL."""
        idx = None if f.include_ham else self.get()
        if idx is None:
            return search_messages(self.access, f, limit=limit, cursor=cursor)
        return search(idx, self.access, f, limit=limit, cursor=cursor)

    def get(self) -> SearchIndex | None:
        idx = self.index
        stale = idx is None or (
            time.monotonic() - idx.built_at > self.refresh_s
            and self.access.version_now() != idx.version
        )
        if stale and self._building.acquire(blocking=False):
            threading.Thread(target=self._build, name="web-search-index", daemon=True).start()
        return idx

    def _build(self) -> None:
        try:
            with self.access.session():  # a read turn for the build, given back after
                self.index = build(self.access)
            gc.freeze()
        except Exception:  # searches keep using SQL (or the previous index)
            log.exception("building the search index failed")
        finally:
            self.access.release_cursor()
            self._building.release()
