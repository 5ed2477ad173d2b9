"""Routing imports under bad input: impossible AS numbers are skipped and counted (never an
OverflowError), and a table cut short is stored marked partial and not used to map mail unless
``routing_allow_partial``. Real RouteViews data: the 2008-05-01 pyasn table and its excerpt."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from conftest import TESTS_DATA, shared
from trapline.errors import NotConfigured
from trapline.pipeline.adapters.asn import enrich_all
from trapline.routing.formats import read_pyasn_dat
from trapline.store import routing as store_routing
from trapline.store.duckdb import open_store

EXCERPT = TESTS_DATA / "routing" / "ipasn_20080501_excerpt_208.64-79.dat"


def test_bad_as_numbers_are_skipped_and_counted(tmp_path: Path) -> None:
    lines = EXCERPT.read_text().splitlines()
    bad = ["1.2.3.0/24\t-1", "1.2.4.0/24\t4294967296", "1.2.5.0/24\t99999999999999999999999"]
    table = tmp_path / "ipasn_20080501_bad.dat"
    table.write_text("\n".join(lines[:5] + bad + lines[5:]) + "\n")
    parsed = read_pyasn_dat(table)
    assert len(parsed.routes) == len(lines) - 5
    assert "3 lines with an AS number outside 0..4294967295 skipped" in parsed.notes
    assert not parsed.partial
    with open_store(tmp_path / "data") as store:
        snap = store_routing.import_routing(store, table)  # no OverflowError
        assert snap.n_v4 == len(lines) - 5 and not snap.partial


@pytest.fixture(scope="module")
def quarter_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first quarter of the real 2008 table, header (declaring all 270,849) included."""
    full = gzip.decompress(shared("routing", "routeviews-pyasn", "ipasn_20080501_v12.dat.gz")
                           .read_bytes()).decode("ascii").splitlines()  # fmt: skip
    head = [ln for ln in full if ln.startswith(";")]
    body = [ln for ln in full if not ln.startswith(";")]
    path = tmp_path_factory.mktemp("cut") / "ipasn_20080501_quarter.dat"
    path.write_text("\n".join(head + body[: len(body) // 4]) + "\n")
    return path


def test_a_cut_table_is_marked_partial_and_not_used_unless_allowed(
    quarter_table: Path, tmp_path: Path
) -> None:
    parsed = read_pyasn_dat(quarter_table)
    assert parsed.partial
    with open_store(tmp_path / "data") as store:
        snap = store_routing.import_routing(store, quarter_table)
        assert snap.partial
        listed = store_routing.list_snapshots(store)
        assert [s.partial for s in listed] == [True]
        assert not store_routing.load_routing(store).snapshots  # refused as the as-of choice
        with pytest.raises(NotConfigured, match="routing_allow_partial"):
            enrich_all(store, {})
        assert store_routing.load_routing(store, include_partial=True).snapshots  # when asked
        enrich_all(store, {"routing_allow_partial": True})


def test_a_truncated_download_is_partial(tmp_path: Path) -> None:
    data = shared("routing", "routeviews-pyasn", "ipasn_20080501_v12.dat.gz").read_bytes()
    cut = tmp_path / "ipasn_20080501_cut.dat.gz"
    cut.write_bytes(data[: len(data) // 3])
    parsed = read_pyasn_dat(cut)
    assert parsed.partial and parsed.routes
