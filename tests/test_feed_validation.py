"""Feed imports refuse entries that would list far more than was accused: the whole address
space, prefixes broader than any allocation, the wrong address family for the list, impossible
AS numbers. Real Spamhaus DROP/DROPv6 files with such lines added, imported into a real store."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

from conftest import shared
from trapline.pipeline.adapters.feeds import import_feeds
from trapline.store.duckdb import open_store

DROP = ("blocklists", "spamhaus-drop-history")
HOSTILE_V4 = ["0.0.0.0/0 ; SBL000001", "10.0.0.0/4 ; SBL000002", "2001:db8::/32 ; SBL000003"]
HOSTILE_V6 = ["::/0 ; SBL000004", "2000::/3 ; SBL000005", "192.0.2.0/24 ; SBL000006"]


def test_broad_or_wrong_family_entries_are_refused_and_counted(tmp_path: Path) -> None:
    drop = tmp_path / "drop.txt"
    shutil.copyfile(shared(*DROP, "latest_drop.txt"), drop)
    real_v4 = [ln.split(";")[0].strip() for ln in drop.read_text().splitlines() if ln[:1].isdigit()]
    with drop.open("a") as fh:
        fh.write("\n".join(HOSTILE_V4) + "\n")
    v6 = tmp_path / "drop_ipv6.txt"
    shutil.copyfile(shared(*DROP, "latest_drop_ipv6.txt"), v6)
    with v6.open("a") as fh:
        fh.write("\n".join(HOSTILE_V6) + "\n")
    with open_store(tmp_path / "data") as store:
        got4 = import_feeds(store, drop, "drop", as_of=date(2024, 2, 1))
        got6 = import_feeds(store, v6, "dropv6", as_of=date(2024, 2, 1))
        stored = {
            r[0] for r in store.con.execute("SELECT indicator FROM feed_indicators").fetchall()
        }
    for bad in [*HOSTILE_V4, *HOSTILE_V6]:
        value = bad.split(";")[0].strip()
        assert value not in stored, value
    assert set(real_v4) <= stored  # the real listings are all there
    notes = " | ".join([*got4.notes, *got6.notes])
    assert "covers the whole address space" in notes
    assert "broader than any allocation" in notes
    assert "IPv6 entry on a drop (IPv4) list" in notes
    assert "IPv4 entry on a dropv6 (IPv6) list" in notes
