"""The in-memory search index answers every search exactly as the SQL search does."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from trapline.serve.api import search_index
from trapline.serve.api.access import StoreAccess
from trapline.serve.api.search import MessageFilter, search_messages
from trapline.store.duckdb import open_store


@pytest.fixture(scope="module")
def access(web_store: tuple[Path, dict[str, Any]]) -> Iterator[StoreAccess]:
    store = open_store(web_store[0])
    acc = StoreAccess(store, writable=True)
    try:
        yield acc
    finally:
        acc.close()
        store.close()


def _filters(access: StoreAccess) -> list[MessageFilter]:
    cur = access.cursor()
    asn, ip, campaign = cur.execute(
        "SELECT (SELECT origin_asn FROM messages WHERE origin_asn IS NOT NULL GROUP BY 1 "
        "ORDER BY count(*) DESC LIMIT 1), (SELECT origin_ip FROM messages WHERE origin_ip IS NOT "
        "NULL GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1), (SELECT campaign_id FROM messages "
        "WHERE campaign_id IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1)"
    ).fetchone() or (None, None, None)
    (domain,) = cur.execute(
        "SELECT registered_domain FROM urls WHERE registered_domain IS NOT NULL GROUP BY 1 "
        "ORDER BY count(*) DESC, 1 LIMIT 1"
    ).fetchone() or (None,)
    aug, sep = datetime(2002, 8, 1), datetime(2002, 9, 1)
    return [
        MessageFilter(),
        MessageFilter(asn=asn),
        MessageFilter(ip=ip),
        MessageFilter(campaign=campaign[:6]),
        MessageFilter(subject="PayPal"),
        MessageFilter(subject="%_"),  # wildcards are literal text
        MessageFilter(domain=domain),
        MessageFilter(domain="no-such-domain.example"),
        MessageFilter(ip="192.0.2.1"),
        MessageFilter(since=aug, until=sep),
        MessageFilter(since=aug),
        MessageFilter(until=aug, asn=asn),
        MessageFilter(since=aug, subject="a", domain=domain),
    ]


@pytest.mark.parametrize("limit", [1, 7, 50])
def test_index_pages_equal_sql_pages(access: StoreAccess, limit: int) -> None:
    idx = search_index.build(access)
    assert len(idx.neg_time) == access.cursor().execute(
        "SELECT count(*) FROM messages WHERE label = 'spam'").fetchone()[0]  # type: ignore[index]  # fmt: skip
    for f in _filters(access):
        sql_cursor = idx_cursor = None
        for _ in range(6 if limit > 1 else 3):  # a few pages deep
            want = search_messages(access, f, limit=limit, cursor=sql_cursor)
            got = search_index.search(idx, access, f, limit=limit, cursor=idx_cursor)
            assert got == want, f
            sql_cursor, idx_cursor = want["next_cursor"], got["next_cursor"]
            if not sql_cursor:
                break


def test_messages_stored_after_the_snapshot_are_merged_in(access: StoreAccess) -> None:
    from conftest import shared
    from trapline.model import RawMessage
    from trapline.pipeline.core import IngestCore
    from trapline.pipeline.drain import store_messages

    idx = search_index.build(access)
    raw = sorted(shared("mail", "personal-spam-2023-2025", "2023").glob("*.eml"))[0].read_bytes()
    message = RawMessage(raw, "test-after-snapshot", None)
    with access.writer() as store:
        store_messages(store, IngestCore({**access_settings(access)}, lambda _t: None), [message])
    f = MessageFilter()
    want = search_messages(access, f, limit=20)
    got = search_index.search(idx, access, f, limit=20, cursor=None)
    assert got == want
    assert message.id in {
        m["id"] for m in search_messages(access, MessageFilter(), limit=5000)["items"]
    }


def access_settings(access: StoreAccess) -> dict[str, Any]:
    from trapline.config import load_settings

    return load_settings({"data_dir": str(access.store.data_dir)})
