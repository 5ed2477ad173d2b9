"""`trapline attach parquet URI`: a local store reads a dataset in an object store in place.

The dataset is what `trapline export parquet` writes (the layout `spark ingest --out` writes
too) from a store of real mail: the Nazario phishing corpus (2004-2005, real sending hosts)
mapped with the real 2008 RouteViews table. The bucket is moto's S3 emulation on 127.0.0.1,
reached by pyarrow's real S3 client (``s3_helpers``); no request leaves loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import shared
from s3_helpers import s3_server, upload
from trapline.cli.main import cli
from trapline.store.duckdb import _current, open_store

pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e '.[dev]')")

BUCKET = "datasets"
ROUTING = shared("routing", "routeviews-pyasn", "ipasn_20080501_v12.dat.gz")


def _run(data: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    result = CliRunner().invoke(cli, ["--data-dir", str(data), *args], env=env)
    assert result.exit_code == 0, result.output
    return result


def _trapline(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh process, without the s3_endpoint setting: only the store knows it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAPLINE_")}
    return subprocess.run(
        [sys.executable, "-m", "trapline", "--data-dir", str(data), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A store of real phishing mail, and its tables exported as a Parquet dataset."""
    base = tmp_path_factory.mktemp("attach")
    source = base / "source"
    _run(source, "-q", "routing", "import", str(ROUTING))
    _run(source, "-q", "ingest", str(shared("mail", "nazario-phishing-2005", "phishing0.mbox")))
    _run(source, "-q", "analyze", "campaigns")
    _run(source, "-q", "export", "parquet", "--out", str(base / "parquet"))
    return {"source": source, "parquet": base / "parquet"}


@pytest.fixture(scope="module")
def s3(dataset: dict[str, Path]) -> Iterator[str]:
    with s3_server() as endpoint:
        upload(endpoint, dataset["parquet"], BUCKET, "phishing")
        yield endpoint


def _attach(data: Path, uri: str, endpoint: str) -> Any:
    return CliRunner().invoke(
        cli,
        ["--data-dir", str(data), "attach", "parquet", uri, "--json"],
        env={"TRAPLINE_S3_ENDPOINT": endpoint},
    )


def _raw(data: Path) -> list[tuple[Any, ...]]:
    with open_store(data, read_only=True) as store:
        return store.con.execute("SELECT id, codec, data FROM raw ORDER BY id").fetchall()


def test_a_store_attached_to_a_bucket_answers_as_the_store_the_dataset_came_from(
    dataset: dict[str, Path], s3: str, tmp_path: Path
) -> None:
    data = tmp_path / "store"
    _run(data, "-q", "routing", "import", str(ROUTING))  # the store maps with its own routing
    result = _attach(data, f"s3a://{BUCKET}/phishing/", s3)
    assert result.exit_code == 0, result.output
    attached = json.loads(result.stdout)
    rows = {a["table"]: a["rows"] for a in attached}
    assert rows["messages"] == 415 and rows["raw"] == 415 and rows["hops"] > 415
    assert all(a["path"].startswith(f"s3a://{BUCKET}/phishing/") for a in attached)
    assert "routing_prefixes" not in rows and "api_keys" not in rows
    assert "kept this store's own" in result.stderr and "note:" not in result.stderr

    for command in (["stats", "--json"], ["networks", "--top", "10", "--json"]):
        local = _trapline(dataset["source"], *command)
        remote = _trapline(data, *command)
        assert remote.returncode == 0, remote.stderr
        assert json.loads(remote.stdout) == json.loads(local.stdout), command
    # Every message's original bytes, read from the bucket, are those the store archived.
    assert _raw(data) == _raw(dataset["source"])


def test_a_file_uri_attaches_as_the_folder_it_names(
    dataset: dict[str, Path], tmp_path: Path
) -> None:
    """... and a store without the dataset's routing says which snapshot to import."""
    data = tmp_path / "store"
    result = _run(data, "attach", "parquet", f"file://{dataset['parquet']}", "--json")
    assert "ipasn_20080501_v12@2008-05-01, which this store has not imported" in result.stderr
    paths = {a["table"]: a["path"] for a in json.loads(result.stdout)}
    assert paths["messages"] == str(dataset["parquet"] / "messages")
    assert json.loads(_run(data, "stats", "--json").stdout)["messages"] == 415


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("s3a://no-such-bucket/phishing/", "no such bucket or folder"),
        (f"s3a://{BUCKET}/phishing/messages/messages.parquet", "is an object, not a folder"),
        (f"s3a://{BUCKET}/phishing/messages/", "holds no table folders"),
        ("ftp://example.org/parquet/", "cannot open ftp:// URIs"),
    ],
)
def test_what_is_not_a_dataset_is_refused_with_what_to_give_instead(
    s3: str, tmp_path: Path, uri: str, says: str
) -> None:
    result = _attach(tmp_path / "store", uri, s3)
    assert result.exit_code == 1
    assert says in result.output and "Traceback" not in result.output
    with open_store(tmp_path / "store", read_only=True) as store:
        (n,) = store.con.execute("SELECT count(*) FROM messages").fetchone() or (0,)
    assert n == 0  # nothing was attached: the store's own (empty) tables remain


def test_a_bucket_out_of_reach_is_one_clear_error_not_an_empty_store(
    dataset: dict[str, Path], tmp_path: Path
) -> None:
    data = tmp_path / "store"
    with s3_server() as endpoint:  # a server of its own, stopped while the store still uses it
        upload(endpoint, dataset["parquet"], BUCKET, "phishing")
        assert _attach(data, f"s3a://{BUCKET}/phishing", endpoint).exit_code == 0
        assert json.loads(_trapline(data, "stats", "--json").stdout)["messages"] == 415
        # The credentials leave with the server's context: keep them for the last read.
        creds = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    with pytest.MonkeyPatch.context() as env:
        for name, value in creds.items():
            env.setenv(name, value)
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        gone = _trapline(data, "stats", "--json")
        listed = _trapline(data, "attach", "list")
    assert gone.returncode == 1
    assert "an attached dataset could not be read" in gone.stderr
    assert "Could not connect" in gone.stderr and "Traceback" not in gone.stderr
    # Opening the store does not read the bucket: what needs no data still answers. Its
    # schema check asks the catalog; binding the views (the check for stores of local
    # tables) would have to reach the bucket.
    assert listed.returncode == 0 and f"s3a://{BUCKET}/phishing" in listed.stdout
    with open_store(data, read_only=True) as store:
        assert store.con.execute("SELECT count(*) FROM routing_snapshots").fetchone() == (0,)
        assert _current(store.con, remote=True) and not _current(store.con)


def test_the_api_over_a_bucket_dataset_answers_as_over_the_store_it_came_from(
    dataset: dict[str, Path], s3: str, tmp_path: Path
) -> None:
    """The web server (real HTTP on 127.0.0.1) over the attached store: overview, ranking,
    a network's dossier, a message and its raw bytes. Its API keys are the store's own: the
    dataset's api_keys table does not replace them, so keys can still be made."""
    import httpx

    from trapline.config import load_settings
    from web_helpers import start_server

    data = tmp_path / "store"
    _run(data, "-q", "routing", "import", str(ROUTING))
    assert _attach(data, f"s3a://{BUCKET}/phishing", s3).exit_code == 0
    with open_store(dataset["source"], read_only=True) as store:
        mid, asn = store.con.execute(
            "SELECT id, origin_asn FROM messages WHERE origin_asn IS NOT NULL "
            "ORDER BY received_at DESC, id LIMIT 1"
        ).fetchone() or ("", 0)
    seen: dict[str, dict[str, Any]] = {}
    for name, folder in (("source", dataset["source"]), ("attached", data)):
        store = open_store(folder)
        server = start_server(store, load_settings({"data_dir": str(folder)}))
        try:
            with httpx.Client(
                base_url=server.base, headers=server.headers("analyst"), timeout=300
            ) as client:
                detail = client.get(f"/api/v1/messages/{mid}").json()
                detail.pop("ingested_at")
                seen[name] = {
                    "overview": client.get("/api/v1/overview").json(),
                    "networks": client.get("/api/v1/networks", params={"top": 20}).json(),
                    "dossier": {
                        k: v
                        for k, v in client.get(f"/api/v1/networks/AS{asn}").json().items()
                        if k != "generated_at"
                    },
                    "message": detail,
                    "raw": client.get(f"/api/v1/messages/{mid}/raw").content,
                }
        finally:
            server.stop()
            store.close()
    assert seen["attached"]["overview"]["totals"]["messages"] == 415
    assert b"\nSubject:" in seen["attached"]["raw"]
    for key in seen["source"]:
        assert seen["attached"][key] == seen["source"][key], key


def test_attach_list_says_where_each_table_is_read_from(s3: str, tmp_path: Path) -> None:
    data = tmp_path / "store"
    _run(data, "-q", "routing", "import", str(ROUTING))
    empty = _run(data, "attach", "list")
    assert empty.stdout == "" and "reads no dataset in place" in empty.stderr
    assert _attach(data, f"s3a://{BUCKET}/phishing/", s3).exit_code == 0
    listed = {r["table"]: r for r in json.loads(_run(data, "attach", "list", "--json").stdout)}
    assert listed["messages"] == {
        "table": "messages",
        "path": f"s3a://{BUCKET}/phishing",
        "endpoint": s3,
        "region": "us-east-1",
    }
    assert "routing_prefixes" not in listed
    assert (
        f"messages             s3a://{BUCKET}/phishing  (endpoint {s3})"
        in _run(data, "attach", "list").stdout
    )


def test_a_dataset_moves_to_another_endpoint_by_attaching_it_again(
    dataset: dict[str, Path], s3: str, tmp_path: Path
) -> None:
    """One endpoint per scheme and store: another dataset on another S3 service is refused,
    the same dataset attached again from there moves the whole store's reads to it."""
    data = tmp_path / "store"
    with s3_server() as first:
        upload(first, dataset["parquet"], BUCKET, "phishing")
        assert _attach(data, f"s3a://{BUCKET}/phishing", first).exit_code == 0
    upload(s3, dataset["parquet"], BUCKET, "copy")
    other = _attach(data, f"s3a://{BUCKET}/copy", s3)
    assert other.exit_code == 1 and "at another s3a:// endpoint" in other.output
    moved = _attach(data, f"s3a://{BUCKET}/phishing", s3)  # the module's server has it too
    assert moved.exit_code == 0, moved.output
    # The first server is gone: reads work only because they now go to the second.
    assert json.loads(_trapline(data, "stats", "--json").stdout)["messages"] == 415
    assert {r["endpoint"] for r in json.loads(_run(data, "attach", "list", "--json").stdout)} == {
        s3
    }
