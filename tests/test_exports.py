"""Exports checked by each ecosystem's own tool: stix2, PyMISP, the stdlib email parser, DuckDB.

The store holds real mail: the Nazario phishing corpus (2004-2005, real sending hosts) mapped
with the real 2008 RouteViews table, plus one ground-truth message: a real SpamAssassin spam
with a trap Received line from a McColo (AS26780) address on top, since no real corpus here
was caught from McColo's space.
"""

from __future__ import annotations

import csv
import email
import io
import json
import shutil
from email import policy
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

from conftest import ROOT, shared
from trapline.cli.main import cli
from trapline.export.arf import Sample, _boundary, build_report
from trapline.store.duckdb import open_store
from trapline.store.raw import read_raw

stix2 = pytest.importorskip("stix2")
pymisp = pytest.importorskip("pymisp")

MCCOLO_IP = "208.66.195.23"  # inside 208.66.192.0/22, announced by AS26780 on 2008-05-01
TRAP_HOP = (
    f"Received: from bot.example.net ([{MCCOLO_IP}])\n"
    "\tby mx.traps.example.org (trapline) with ESMTP id 4F2A9C\n"
    "\tfor <k3v9q2m8xw@traps.example.org>; Mon, 3 Nov 2008 10:12:13 +0000\n"
)


def _run(data: Path, *args: str) -> Any:
    result = CliRunner().invoke(cli, ["--data-dir", str(data), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _mccolo_eml(folder: Path) -> Path:
    """A real spam (mbox From_ line dropped) as a trap would store it after a McColo delivery."""
    original = shared("mail", "spamassassin-2002", "spam", "00001.7848dde101aa985090474a91ec93fcf0")
    body = original.read_bytes()
    if body.startswith(b"From "):
        body = body.split(b"\n", 1)[1]
    path = folder / "mccolo.eml"
    path.write_bytes(TRAP_HOP.encode() + body)
    return path


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("exports")
    data = base / "data"
    routing = shared("routing", "routeviews-pyasn", "ipasn_20080501_v12.dat.gz")
    _run(data, "-q", "routing", "import", str(routing))
    names = ROOT / "src" / "trapline" / "data" / "routing" / "asnames_historical.json"
    _run(
        data, "-q", "routing", "import", str(names), "--format", "asnames", "--as-of", "2008-05-01"
    )
    nazario = shared("mail", "nazario-phishing-2005")
    _run(data, "-q", "ingest", str(nazario / "phishing0.mbox"), str(_mccolo_eml(base)))
    _run(data, "-q", "analyze", "campaigns")
    return data


def _sql(data: Path, query: str) -> list[tuple[Any, ...]]:
    with open_store(data, read_only=True) as store:
        return store.con.execute(query).fetchall()


def test_ground_truth_message_maps_to_mccolo(store_dir: Path) -> None:
    rows = _sql(store_dir, f"SELECT origin_asn FROM messages WHERE origin_ip = '{MCCOLO_IP}'")
    assert rows == [(26780,)]


def test_stix_bundle_validates_with_stix2(store_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle.json"
    result = _run(store_dir, "export", "stix", "--out", str(out))
    assert "indicator" in result.output
    doc = json.loads(out.read_text())
    bundle = stix2.parse(doc, allow_custom=False)  # raises on any invalid object or property
    objects = {o["id"]: o for o in doc["objects"]}
    assert len(bundle.objects) == len(objects)  # ids are unique
    kinds = {o["type"] for o in doc["objects"]}
    assert {"identity", "autonomous-system", "ipv4-addr", "indicator", "sighting"} <= kinds
    assert {"campaign", "relationship"} <= kinds

    # Every reference resolves inside the bundle.
    for o in doc["objects"]:
        for key, value in o.items():
            refs = value if key.endswith("_refs") else [value] if key.endswith("_ref") else []
            for ref in refs:
                assert ref in objects, (o["id"], key, ref)

    # Observables carry the ids the STIX 2.1 UUIDv5 rule gives (stix2 computes them itself).
    mccolo = next(o for o in doc["objects"] if o.get("number") == 26780)
    assert mccolo["id"] == stix2.AutonomousSystem(number=26780).id
    assert mccolo["name"].startswith("MCCOLO")
    addr = next(o for o in doc["objects"] if o.get("value") == MCCOLO_IP)
    assert addr["id"] == stix2.IPv4Address(value=MCCOLO_IP).id
    assert addr["belongs_to_refs"] == [mccolo["id"]]

    # One indicator and one sighting per distinct origin; sighting counts are the messages.
    origins = dict(
        _sql(
            store_dir,
            "SELECT origin_ip, count(*) FROM messages WHERE origin_ip IS NOT NULL GROUP BY 1",
        )
    )
    ips = [o for o in doc["objects"] if o["type"] in ("ipv4-addr", "ipv6-addr")]
    assert {o["value"] for o in ips} == set(origins)
    sightings = [o for o in doc["objects"] if o["type"] == "sighting"]
    by_indicator = {o["id"]: o for o in doc["objects"] if o["type"] == "indicator"}
    counted = {}
    for s in sightings:
        pattern = by_indicator[s["sighting_of_ref"]]["pattern"]
        counted[pattern.split("'")[1]] = s["count"]
    assert counted == origins
    for ind in by_indicator.values():
        stix2.Indicator(**{k: v for k, v in ind.items() if k != "type"})  # pattern validated

    # Campaign members' senders indicate the campaign.
    campaigns = _sql(store_dir, "SELECT id FROM campaigns WHERE size >= 2")
    stix_campaigns = [o for o in doc["objects"] if o["type"] == "campaign"]
    assert len(stix_campaigns) == len(campaigns) > 0
    targets = {o["target_ref"] for o in doc["objects"] if o["type"] == "relationship"}
    assert targets == {c["id"] for c in stix_campaigns}


def test_stix_ids_are_stable_across_exports(store_dir: Path, tmp_path: Path) -> None:
    ids = []
    for name in ("a.json", "b.json"):
        _run(store_dir, "export", "stix", "--out", str(tmp_path / name))
        doc = json.loads((tmp_path / name).read_text())
        ids.append({o["id"] for o in doc["objects"]})
    assert ids[0] == ids[1]


def test_stix_network_filter_keeps_one_as(store_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "mccolo.json"
    _run(store_dir, "export", "stix", "--network", "AS26780", "--out", str(out))
    doc = json.loads(out.read_text())
    stix2.parse(doc, allow_custom=False)
    assert [o["value"] for o in doc["objects"] if o["type"] == "ipv4-addr"] == [MCCOLO_IP]
    assert [o["number"] for o in doc["objects"] if o["type"] == "autonomous-system"] == [26780]


def test_misp_event_loads_with_pymisp(store_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "event.json"
    _run(store_dir, "export", "misp", "--out", str(out))
    event = pymisp.MISPEvent()
    event.load_file(str(out))
    assert event.info.startswith("trapline:")
    by_type: dict[str, set[str]] = {}
    for attr in event.attributes:
        by_type.setdefault(attr.type, set()).add(attr.value)
    origins = {
        r[0]
        for r in _sql(
            store_dir, "SELECT DISTINCT origin_ip FROM messages WHERE origin_ip IS NOT NULL"
        )
    }
    assert by_type["ip-src"] == origins
    asns = {
        str(r[0])
        for r in _sql(
            store_dir, "SELECT DISTINCT origin_asn FROM messages WHERE origin_asn IS NOT NULL"
        )
    }
    assert by_type["AS"] == asns and "26780" in asns
    assert by_type.get("domain")
    mccolo = next(a for a in event.attributes if a.value == MCCOLO_IP)
    assert "AS26780" in mccolo.comment
    assert mccolo.first_seen.year == 2008
    assert len({a.uuid for a in event.attributes}) == len(event.attributes)
    # PyMISP's own serialisation loads again to the same attributes.
    again = pymisp.MISPEvent()
    again.load(event.to_json())
    assert sorted((a.type, a.value) for a in again.attributes) == sorted(
        (a.type, a.value) for a in event.attributes
    )


def _parts(report: bytes) -> tuple[email.message.EmailMessage, bytes]:
    """The parsed report and the exact bytes of its message/rfc822 part."""
    msg = email.message_from_bytes(report, policy=policy.default)
    boundary = msg.get_param("boundary").encode()
    delim = b"--" + boundary
    pieces = report.split(delim)
    attached = pieces[3]  # preamble, text, feedback-report, original, epilogue
    nl = b"\r\n" if attached.startswith(b"\r\n") else b"\n"
    head, _, body = attached.partition(nl + nl)
    assert b"message/rfc822" in head
    assert body.endswith(nl)
    return msg, body[: -len(nl)]  # the line break before the closing delimiter belongs to it


def test_arf_report_for_mccolo_parses_back_with_the_original_attached(
    store_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reports"
    result = _run(
        store_dir,
        "export",
        "arf",
        "--network",
        "AS26780",
        "--out",
        str(out),
        "--to",
        "abuse@mccolo.example",
    )
    assert "wrote 1 reports" in result.output
    (path,) = sorted(out.iterdir())
    report = path.read_bytes()
    msg, attached = _parts(report)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "feedback-report"
    assert msg["To"] == "abuse@mccolo.example"
    assert not msg.defects
    text, feedback, original = list(msg.iter_parts())
    assert text.get_content_type() == "text/plain"
    assert feedback.get_content_type() == "message/feedback-report"
    fields = feedback.get_payload()[0]
    assert fields["Feedback-Type"] == "abuse"
    assert fields["Version"] == "1"
    assert fields["User-Agent"].startswith("trapline/")
    assert fields["Source-IP"] == MCCOLO_IP
    assert fields["Arrival-Date"] == "Mon, 03 Nov 2008 10:12:13 +0000"
    assert original.get_content_type() == "message/rfc822"
    # Byte-for-byte: the attached bytes are the archived bytes are the file we ingested.
    (mid,) = _sql(store_dir, f"SELECT id FROM messages WHERE origin_ip = '{MCCOLO_IP}'")[0]
    with open_store(store_dir, read_only=True) as store:
        assert attached == read_raw(store.con, mid)
    assert attached == _mccolo_eml(tmp_path).read_bytes()
    inner = original.get_payload()[0]
    assert inner["Received"].startswith(f"from bot.example.net ([{MCCOLO_IP}])")


def test_arf_one_report_per_sample_from_a_real_network(store_dir: Path, tmp_path: Path) -> None:
    ((asn, n),) = _sql(
        store_dir,
        "SELECT origin_asn, count(*) FROM messages WHERE origin_asn IS NOT NULL "
        "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1",
    )
    assert n >= 3
    out = tmp_path / "r"
    _run(store_dir, "export", "arf", "--network", f"AS{asn}", "--out", str(out), "--limit", "3")
    files = sorted(out.iterdir())
    assert len(files) == 3
    with open_store(store_dir, read_only=True) as store:
        for f in files:
            msg, attached = _parts(f.read_bytes())
            assert msg.get_param("report-type") == "feedback-report"
            ip = msg.get_payload()[1].get_payload()[0]["Source-IP"]
            rows = store.con.execute(
                "SELECT id FROM messages WHERE origin_asn = ? AND origin_ip = ? AND starts_with(id, ?)",
                [asn, ip, f.stem.rsplit("-", 1)[1]],
            ).fetchall()
            assert len(rows) == 1
            assert attached == read_raw(store.con, rows[0][0])
    again = _run(store_dir, "export", "arf", "--network", "AS1", "--out", str(tmp_path / "none"))
    assert "no stored spam from AS1" in again.output


def test_arf_keeps_crlf_8bit_bytes_and_avoids_a_colliding_boundary() -> None:
    sample = Sample("ab" * 32, None, "192.0.2.7", 64500, None, None, "caf\xe9", ())
    first = _boundary(b"", sample.id)
    raw = (
        b"From: x@example.org\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\n"
        b"caf\xc3\xa9 --" + first.encode() + b"\r\n"
    )
    report = build_report(sample, raw, reporter="desk@example.org")
    msg, attached = _parts(report)
    assert msg.get_param("boundary") != first
    assert attached == raw
    assert b"\n" not in report.replace(b"\r\n", b"")  # CRLF throughout, as the original
    assert b"Content-Transfer-Encoding: 8bit" in report


def test_parquet_export_has_every_table_with_the_store_schema(
    store_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pq"
    _run(store_dir, "export", "parquet", "--out", str(out))
    manifest = json.loads((out / "_trapline.json").read_text())
    con = duckdb.connect()
    with open_store(store_dir, read_only=True) as store:
        tables = [
            r[0]
            for r in store.con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
            ).fetchall()
        ]
        assert sorted(manifest["tables"]) == sorted(tables)
        for t in tables:
            want = store.con.execute(f'DESCRIBE "{t}"').fetchall()
            got = con.execute(f"DESCRIBE SELECT * FROM '{out / t}/*.parquet'").fetchall()
            assert [(c[0], c[1]) for c in got] == [(c[0], c[1]) for c in want], t
            n = store.con.execute(f'SELECT count(*) FROM "{t}"').fetchone()
            assert manifest["tables"][t]["rows"] == n[0]
        # Contents, not only shapes: the messages and raw tables compare equal row for row.
        for t in ("messages", "raw", "hops"):
            local = store.con.execute(f'SELECT * FROM "{t}" ORDER BY ALL').fetchall()
            exported = con.execute(f"SELECT * FROM '{out / t}/*.parquet' ORDER BY ALL").fetchall()
            assert exported == local, t
    result = CliRunner().invoke(
        cli, ["--data-dir", str(store_dir), "export", "parquet", "--out", str(out)]
    )
    assert result.exit_code == 1 and "--force" in result.output
    _run(store_dir, "export", "parquet", "--out", str(out), "--force")
    stranger = tmp_path / "other"
    stranger.mkdir()
    (stranger / "keep.txt").write_text("mine")
    result = CliRunner().invoke(
        cli, ["--data-dir", str(store_dir), "export", "parquet", "--out", str(stranger), "--force"]
    )
    assert result.exit_code == 1 and "empty" in result.output
    assert (stranger / "keep.txt").read_text() == "mine"


def test_csv_networks_to_stdout_and_tables_to_a_file(store_dir: Path, tmp_path: Path) -> None:
    result = _run(store_dir, "export", "csv", "--table", "networks")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    ranked = json.loads(_run(store_dir, "networks", "--top", "1000", "--json").stdout)
    ranked_rows = ranked if isinstance(ranked, list) else ranked.get("networks", ranked.get("rows"))
    assert [int(r["asn"]) for r in rows][: len(ranked_rows)] == [r["asn"] for r in ranked_rows]
    assert "26780" in {r["asn"] for r in rows}

    out = tmp_path / "messages.csv"
    _run(store_dir, "export", "csv", "--table", "messages", "--out", str(out))
    with out.open(newline="") as fh:
        lines = list(csv.DictReader(fh))
    (n,) = _sql(store_dir, "SELECT count(*) FROM messages")[0]
    assert len(lines) == n
    row = next(r for r in lines if r["origin_ip"] == MCCOLO_IP)
    assert row["origin_asn"] == "26780" and json.loads(row["defects"]) is not None

    bad = CliRunner().invoke(
        cli, ["--data-dir", str(store_dir), "export", "csv", "--table", "mesages"]
    )
    assert bad.exit_code == 1 and "did you mean 'messages'" in bad.output


def test_exports_keep_spam_only_once_messages_are_labelled(store_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "labelled"
    shutil.copytree(store_dir, data)
    with open_store(data) as store:
        # the label column as the ingest of labelled mail writes it (spam by default)
        store.con.execute(
            "ALTER TABLE messages ADD COLUMN IF NOT EXISTS label VARCHAR DEFAULT 'spam'"
        )
        store.con.execute(f"UPDATE messages SET label = 'ham' WHERE origin_ip = '{MCCOLO_IP}'")
    spam = tmp_path / "spam.json"
    _run(data, "export", "stix", "--out", str(spam))
    values = {o.get("value") for o in json.loads(spam.read_text())["objects"]}
    assert MCCOLO_IP not in values
    everything = tmp_path / "all.json"
    _run(data, "export", "stix", "--label", "all", "--out", str(everything))
    assert MCCOLO_IP in {o.get("value") for o in json.loads(everything.read_text())["objects"]}
    out = tmp_path / "r"
    result = _run(data, "export", "arf", "--network", "AS26780", "--out", str(out))
    assert "no stored spam" in result.output and not out.exists()


def test_empty_store_says_what_to_do(tmp_path: Path) -> None:
    data = tmp_path / "d"
    open_store(data).close()
    result = _run(data, "export", "stix", "--out", str(tmp_path / "b.json"))
    assert "nothing to export yet" in result.output
    stix2.parse(json.loads((tmp_path / "b.json").read_text()), allow_custom=False)
    result = _run(data, "export", "misp", "--out", str(tmp_path / "e.json"))
    assert "nothing to export yet" in result.output
