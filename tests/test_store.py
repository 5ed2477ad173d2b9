"""The store layer on real DuckDB with real messages: raw archive, Arrow writer, queries."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import shared
from trapline.errors import Ambiguous, NotFound, QueryError, UsageError
from trapline.ingest.parse import parse_many
from trapline.ingest.received import TrustBoundary
from trapline.model import (
    Address,
    Envelope,
    Hop,
    Message,
    Quarantined,
    RawMessage,
    SourceProblem,
    message_id_of,
)
from trapline.store import raw as rawstore
from trapline.store.duckdb import open_store
from trapline.store.queries import query, show, stats
from trapline.store.writer import clean_text, tables_for, write_batch, write_problems


def _real(n: int, folder: str = "spam_2") -> list[RawMessage]:
    base = shared("mail", "spamassassin-2002", folder)
    paths = sorted(base.iterdir())[:n]
    return [RawMessage(p.read_bytes(), str(p)) for p in paths]


def _rows(raws: list[RawMessage]) -> list[rawstore.RawRow]:
    return [rawstore.RawRow(r.id, r.data, r.source) for r in raws]


def test_raw_archive_round_trips_exact_bytes_and_compresses(tmp_path: Path) -> None:
    raws = _real(40)
    with open_store(tmp_path) as store:
        assert rawstore.write_raw(store.con, _rows(raws)) == 40
        for r in raws:
            assert rawstore.read_raw(store.con, r.id) == r.data
        size, stored = store.con.execute(
            "SELECT sum(size), sum(octet_length(data)) FROM raw"
        ).fetchone()
        assert size == sum(len(r.data) for r in raws)
        assert stored < size / 1.5, "zstd should at least shrink mail by a third"
        codecs = store.con.execute("SELECT DISTINCT codec FROM raw").fetchall()
        assert codecs == [("zstd",)]


def test_existing_ids_finds_only_archived_ones(tmp_path: Path) -> None:
    raws = _real(10)
    with open_store(tmp_path) as store:
        rawstore.write_raw(store.con, _rows(raws[:4]))
        probe = [r.id for r in raws]
        assert rawstore.existing_ids(store.con, probe) == {r.id for r in raws[:4]}
        assert rawstore.existing_ids(store.con, []) == set()


def test_resolve_id_by_prefix_unknown_and_ambiguous(tmp_path: Path) -> None:
    raws = _real(300)
    with open_store(tmp_path) as store:
        rawstore.write_raw(store.con, _rows(raws))
        target = raws[7].id
        assert rawstore.resolve_id(store.con, target[:12]) == target
        assert rawstore.resolve_id(store.con, target.upper()) == target
        with pytest.raises(NotFound):
            rawstore.resolve_id(store.con, "0" * 64)
        # 300 ids over 16 first digits: some single hex digit is shared, so 4+ chars are needed;
        # find a real shared 4-char prefix if one exists, else check the short-prefix rule.
        with pytest.raises(UsageError):
            rawstore.resolve_id(store.con, target[:3])
        with pytest.raises(UsageError):
            rawstore.resolve_id(store.con, "not-hex!")
        by_prefix: dict[str, int] = {}
        for r in raws:
            by_prefix[r.id[:4]] = by_prefix.get(r.id[:4], 0) + 1
        shared_prefix = next((p for p, n in by_prefix.items() if n > 1), None)
        if shared_prefix is not None:
            with pytest.raises(Ambiguous):
                rawstore.resolve_id(store.con, shared_prefix)


def test_ambiguous_prefix_with_constructed_collision(tmp_path: Path) -> None:
    # Two real messages whose ids share a prefix: search a real folder for a 4-hex collision.
    raws = _real(1396)
    seen: dict[str, RawMessage] = {}
    pair = None
    for r in raws:
        key = r.id[:4]
        if key in seen:
            pair = (seen[key], r)
            break
        seen[key] = r
    assert pair is not None, "1,396 ids over 65,536 prefixes collide with near certainty"
    with open_store(tmp_path) as store:
        rawstore.write_raw(store.con, _rows(list(pair)))
        with pytest.raises(Ambiguous):
            rawstore.resolve_id(store.con, pair[0].id[:4])


def test_writer_stores_every_table_for_real_parsed_mail(tmp_path: Path) -> None:
    raws = _real(200)
    records = parse_many(raws, trust=TrustBoundary.from_specs([]))
    batch = tables_for(records)
    parsed = [r for r in records if isinstance(r, Message)]
    with open_store(tmp_path) as store:
        rawstore.write_raw(store.con, _rows(raws))
        assert write_batch(store.con, batch) == []
        con = store.con
        assert con.execute("SELECT count(*) FROM messages").fetchone()[0] == len(parsed)
        n_hops = sum(len(m.hops) for m in parsed)
        assert con.execute("SELECT count(*) FROM hops").fetchone()[0] == n_hops
        n_urls = sum(len(m.urls) for m in parsed)
        assert con.execute("SELECT count(*) FROM urls").fetchone()[0] == n_urls
        n_rcpt = sum(len(m.to) + len(m.cc) for m in parsed)
        assert con.execute("SELECT count(*) FROM recipients").fetchone()[0] == n_rcpt
        # Field by field for one message with hops.
        m = next(x for x in parsed if x.hops and x.origin_ip)
        row = con.execute(
            "SELECT subject, from_addr, origin_ip, n_hops, size FROM messages WHERE id = ?", [m.id]
        ).fetchone()
        assert row == (
            clean_text(m.subject or "") or None,
            m.from_.addr,
            m.origin_ip,
            len(m.hops),
            m.size,
        )
        hop_ips = con.execute(
            "SELECT from_ip FROM hops WHERE message_id = ? ORDER BY idx", [m.id]
        ).fetchall()
        assert [h[0] for h in hop_ips] == [h.from_ip for h in m.hops]


def test_writer_cleans_nul_and_lone_surrogates() -> None:
    assert clean_text("a\x00b\udcff") == "ab\ufffd"


def test_tables_for_cleans_strings_turns_zoned_times_to_utc_and_adds_envelope_rcpts() -> None:
    raws = _real(5)
    real = next(r for r in parse_many(raws) if isinstance(r, Message) and r.hops)
    minus_0730 = timezone(timedelta(hours=-7, minutes=-30))
    msg = replace(
        real,
        subject="s\x00ub\udc80",
        date=datetime(2002, 5, 1, 3, tzinfo=minus_0730),
        received_at=datetime(2003, 1, 1),  # naive: already UTC, kept as is
        date_flags=("skew\x00ed",),
        from_=Address("N\x00ame", "a@x.org", "x.org"),
        to=(Address("T\udcffo", "t@y.org", "y.org"),),
        cc=(),
        envelope=Envelope("192.0.2.1", rcpt_to=("Trap@Example.COM",)),
        hops=(Hop(0, "from x\x00 by y", timestamp=datetime(2001, 1, 1, tzinfo=minus_0730)),),
    )
    junk = Quarantined("q" * 64, 3, "bad\udcffname", "binary", "d\x00")
    batch = tables_for([msg, junk], now=datetime(2026, 1, 1))
    row = batch.tables["messages"].to_pylist()[0]
    assert (row["subject"], row["from_name"], row["date_flags"]) == (
        "sub\ufffd",
        "Name",
        ["skewed"],
    )
    assert row["date"] == datetime(2002, 5, 1, 10, 30)
    assert row["received_at"] == datetime(2003, 1, 1)
    rcpts = [
        (r["kind"], r["name"], r["addr"], r["domain"])
        for r in batch.tables["recipients"].to_pylist()
    ]
    assert rcpts == [
        ("to", "T\ufffdo", "t@y.org", "y.org"),
        ("rcpt", None, "Trap@Example.COM", "example.com"),
    ]
    (hop,) = batch.tables["hops"].to_pylist()
    assert (hop["raw"], hop["ts"]) == ("from x by y", datetime(2001, 1, 1, 7, 30))
    (q,) = batch.tables["quarantine"].to_pylist()
    assert (q["source"], q["detail"]) == ("bad\ufffdname", "d")
    assert batch.message_ids == [msg.id] and batch.quarantined_ids == [junk.id]


def test_batch_pickles_to_equal_tables_as_workers_send_it(tmp_path: Path) -> None:
    import pickle
    from multiprocessing.reduction import ForkingPickler

    records = parse_many([*_real(60), RawMessage(b"\x00\x01\x02" * 50, "junk.bin")])
    batch = tables_for(records, now=datetime(2026, 1, 1))
    for blob in (bytes(ForkingPickler.dumps(batch)), pickle.dumps(batch, protocol=5)):
        back = pickle.loads(blob)
        assert back.message_ids == batch.message_ids
        assert back.quarantined_ids == batch.quarantined_ids
        assert back.tables.keys() == batch.tables.keys()
        for name, table in batch.tables.items():
            assert back.tables[name].schema == table.schema
            assert back.tables[name].equals(table), name
    with open_store(tmp_path) as store:
        assert write_batch(store.con, pickle.loads(pickle.dumps(batch))) == []
        n = store.con.execute("SELECT count(*) FROM hops").fetchone()[0]
        assert n == batch.tables["hops"].num_rows > 0


def test_write_batch_quarantines_only_the_rows_duckdb_rejects(tmp_path: Path) -> None:
    raws = _real(30)
    records = parse_many(raws)
    with open_store(tmp_path) as store:
        rawstore.write_raw(store.con, _rows(raws))
        # First write 1 message; then a batch of all 30 repeats it: the primary key rejects it.
        first = next(r for r in records if isinstance(r, Message))
        assert write_batch(store.con, tables_for([first])) == []
        bad = write_batch(store.con, tables_for(records))
        assert [q.id for q in bad] == [first.id]
        assert bad[0].reason == "store-error"
        n = store.con.execute("SELECT count(*) FROM messages").fetchone()[0]
        assert n == sum(isinstance(r, Message) for r in records)


def test_source_problems_are_recorded_once(tmp_path: Path) -> None:
    problems = [SourceProblem("/x/unreadable", "unreadable", "permission denied")] * 2
    with open_store(tmp_path) as store:
        assert write_problems(store.con, problems) == 1
        assert write_problems(store.con, problems) == 0
        assert stats(store.con)["source_problems"] == 1


def test_stats_show_and_query_on_real_mail(tmp_path: Path) -> None:
    raws = _real(120, "spam")
    junk = RawMessage(b"\x00\x01\x02" * 50, "junk.bin")
    records = parse_many([*raws, junk])
    with open_store(tmp_path) as store:
        rawstore.write_raw(store.con, _rows([*raws, junk]))
        write_batch(store.con, tables_for(records))
        s = stats(store.con)
        n_msg = sum(isinstance(r, Message) for r in records)
        assert s["messages"] == n_msg
        assert s["seen"] == len(raws) + 1 == s["messages"] + s["quarantined"]
        assert {r["reason"] for r in s["quarantine_reasons"]} == {
            r.reason for r in records if isinstance(r, Quarantined)
        }
        assert s["first_received"] is not None and s["first_received"].endswith("Z")
        assert s["top_origin_networks"], "SpamAssassin spam has origin IPs"

        m = next(r for r in records if isinstance(r, Message) and r.hops and r.urls)
        view = show(store.con, m.id[:10])
        assert view["id"] == m.id
        assert view["subject"] == m.subject
        assert len(view["hops"]) == len(m.hops)
        assert [u["url"] for u in view["urls"]] == [u.url for u in m.urls]
        assert sum(h["origin"] for h in view["hops"]) == (1 if m.origin_hop is not None else 0)
        q = show(store.con, message_id_of(junk.data))
        assert q["status"] == "quarantined" and q["quarantine"]["reason"]

        out = query(store.con, "select count(*) as n, max(size) as biggest from messages")
        assert out["columns"] == ["n", "biggest"]
        assert out["rows"][0][0] == n_msg
        with pytest.raises(QueryError):
            query(store.con, "select nope from messages")


def test_docs_schema_names_every_core_table_and_column(tmp_path: Path) -> None:
    from conftest import ROOT

    doc = (ROOT / "docs" / "schema.md").read_text(encoding="utf-8")
    core = doc.split("## `00_core.sql`", 1)[1].split("## Other areas' tables", 1)[0]
    with open_store(tmp_path) as store:
        cols = store.con.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_name IN "
            "('raw', 'messages', 'recipients', 'hops', 'urls', 'attachments', 'quarantine', "
            "'ingest_runs') ORDER BY 1"
        ).fetchall()
    assert len({t for t, _ in cols}) == 8
    for table, column in cols:
        section = core.split(f"### `{table}`", 1)
        assert len(section) == 2, f"docs/schema.md has no section for {table}"
        body = section[1].split("### ", 1)[0]
        assert f"| `{column}` |" in body, f"docs/schema.md does not describe {table}.{column}"


def test_query_times_are_utc_with_z_even_for_zoned_values(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        out = query(
            store.con,
            "select TIMESTAMP '2002-01-01 10:00:00' as t, "
            "TIMESTAMPTZ '2002-01-01 10:00:00+02' as tz",
        )
    assert out["rows"] == [["2002-01-01T10:00:00Z", "2002-01-01T08:00:00Z"]]
