"""Dump every stored table for the four real corpora, so a refactoring can prove it changed nothing.

A dump ingests ``../shared/data/mail`` (SpamAssassin 2002, edge cases, the Nazario phishing
mboxes, personal spam 2023-2025) into a fresh store with a fixed routing snapshot (the bundled
2008-05-01 RouteViews table and AS names) and a fixed site secret, runs ``analyze campaigns``,
and writes one sorted JSON-lines file per table. Columns that differ on every run (run ids,
wall-clock import/ingest/compute times) are left out; blobs are written as their SHA-256.

Everything runs through the CLI of the tree being dumped (``python -m trapline`` with
``PYTHONPATH=<tree>/src``), so the same tool dumps an old checkout and a refactored one.

Usage:
    python bench/dump_store.py [--tree /work/baseline] [--out DIR]
    python bench/dump_store.py --compare DIR_A DIR_B [--examples 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MAIL = ROOT.parent / "shared" / "data" / "mail"
CORPORA = (
    "spamassassin-2002",
    "edge-cases",
    "nazario-phishing-2005/phishing0.mbox",
    "nazario-phishing-2005/phishing1.mbox",
    "personal-spam-2023-2025",
)
# A fixed secret, so trap-address decoding gives the same answers in every dump.
SITE_SECRET = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
# The routing files shipped with trapline, imported as import_bundled_routing does.
ROUTING_IMPORTS = (
    ("ipasn_20080501_v12.dat.gz", []),
    ("asnames.json.gz", ["--format", "asnames", "--as-of", "2015-06-01"]),
    ("asnames_historical.json", ["--format", "asnames", "--as-of", "2008-05-01"]),
)
# Columns whose values are wall-clock times or run ids: different on every run by design.
VOLATILE = {
    "*": {"ingested_at", "imported_at", "enriched_at", "computed_at", "updated_at", "merged_at"},
    "quarantine": {"logged_at"},
    "ingest_runs": {"run_id", "started_at", "finished_at"},
}
# Rows with the same key are compared as a group ("changed" instead of "removed + added").
KEYS = {
    "hops": ("message_id", "idx"),
    "routing_prefixes": ("snapshot_id", "prefix"),
    "as_names": ("asn", "source"),
    "ip_routing": ("subject", "subject_id"),
    "feed_sightings": ("kind", "indicator"),
    "feed_indicators": ("kind", "indicator"),
    "lsh_buckets": ("key",),
    "url_buckets": ("key",),
    "botnet_campaigns": ("botnet_id",),
    "botnet_hosts": ("botnet_id", "host"),
    "ingest_runs": ("sources",),
}
# The console script's entry point (older trees have no ``python -m trapline``).
CLI = "import sys; from trapline.cli.main import cli; sys.exit(cli(prog_name='trapline'))"
KEY_GUESSES = (("id",), ("snapshot_id",), ("message_id",), ("session_id",))


def _run(tree: Path, work: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAPLINE_")}
    env["PYTHONPATH"] = str(tree / "src")
    env["TRAPLINE_SITE_SECRET_FILE"] = str(work / "site.secret")
    cmd = [sys.executable, "-c", CLI, "--quiet", "--data-dir", "data", *args]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


def _plain(value: Any) -> Any:
    """A JSON-able, run-independent form of one DuckDB value."""
    if isinstance(value, bytes | bytearray | memoryview):
        return "sha256:" + hashlib.sha256(bytes(value)).hexdigest()
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def dump_db(db: Path, out: Path) -> dict[str, int]:
    """Write ``out/<table>.jsonl`` (sorted rows) and ``out/_tables.json``; returns row counts."""
    import duckdb

    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.jsonl"):
        old.unlink()
    con = duckdb.connect(str(db), read_only=True)
    tables = [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'main' AND table_type = 'BASE TABLE' ORDER BY table_name"
        ).fetchall()
    ]
    meta: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for table in tables:
        cols = [
            r[0]
            for r in con.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
                [table],
            ).fetchall()
        ]
        drop = VOLATILE["*"] | VOLATILE.get(table, set())
        keep = [c for c in cols if c not in drop]
        quoted = ", ".join(f'"{c}"' for c in keep)
        cur = con.execute(f'SELECT {quoted} FROM "{table}"')
        lines = []
        while batch := cur.fetchmany(10_000):
            for row in batch:
                obj = {c: _plain(v) for c, v in zip(keep, row, strict=True)}
                lines.append(json.dumps(obj, sort_keys=True, ensure_ascii=True))
        lines.sort()
        (out / f"{table}.jsonl").write_text("".join(line + "\n" for line in lines))
        meta[table] = {"columns": keep, "left_out": sorted(set(cols) & drop), "rows": len(lines)}
        counts[table] = len(lines)
    con.close()
    (out / "_tables.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return counts


def dump_tree(tree: Path, out: Path, *, keep: Path | None = None) -> dict[str, Any]:
    """Build the store with ``tree``'s CLI and dump it into ``out``."""
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="trapline-dump-"))
    try:
        (work / "site.secret").write_text(SITE_SECRET + "\n")
        (work / "site.secret").chmod(0o600)
        bundled = tree / "src" / "trapline" / "data" / "routing"
        (work / "routing").mkdir()
        for name, opts in ROUTING_IMPORTS:
            # Copied next to the store, so the recorded source path is the same for every tree.
            shutil.copy(bundled / name, work / "routing" / name)
            _run(tree, work, "routing", "import", f"routing/{name}", *opts)
        t_ingest = time.perf_counter()
        paths = [str(MAIL / c) for c in CORPORA]
        _run(tree, work, "ingest", "--workers", "1", *paths)
        t_campaigns = time.perf_counter()
        _run(tree, work, "analyze", "campaigns")
        t_dump = time.perf_counter()
        counts = dump_db(work / "data" / "trapline.duckdb", out)
        t_end = time.perf_counter()
        if keep is not None:
            shutil.copytree(work / "data", keep, dirs_exist_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "tree": str(tree),
        "out": str(out),
        "rows": counts,
        "seconds": {
            "routing": round(t_ingest - t0, 1),
            "ingest": round(t_campaigns - t_ingest, 1),
            "campaigns": round(t_dump - t_campaigns, 1),
            "dump": round(t_end - t_dump, 1),
            "total": round(t_end - t0, 1),
        },
    }


def _key_of(table: str, columns: list[str]) -> tuple[str, ...]:
    if table in KEYS:
        return KEYS[table]
    for guess in KEY_GUESSES:
        if all(c in columns for c in guess):
            return guess
    return tuple(columns)


def _load(folder: Path, table: str) -> list[dict[str, Any]]:
    path = folder / f"{table}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _group(rows: list[dict[str, Any]], key: tuple[str, ...]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        k = json.dumps([row.get(c) for c in key])
        groups[k].append(json.dumps(row, sort_keys=True))
    return {k: sorted(v) for k, v in groups.items()}


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _changed_columns(a: list[str], b: list[str]) -> str:
    if len(a) != len(b):
        return f"{len(a)} rows -> {len(b)} rows"
    parts = []
    for ra, rb in zip(a, b, strict=True):
        da, db = json.loads(ra), json.loads(rb)
        for col in sorted(set(da) | set(db)):
            if da.get(col) != db.get(col):
                parts.append(
                    f"{col}: {_short(json.dumps(da.get(col)), 120)} -> "
                    f"{_short(json.dumps(db.get(col)), 120)}"
                )
    return "; ".join(parts[:4]) + ("; ..." if len(parts) > 4 else "")


def compare(a: Path, b: Path, *, examples: int = 3) -> dict[str, Any]:
    """Per-table differences between two dumps (rows added, removed, changed, with examples)."""
    meta_a = json.loads((a / "_tables.json").read_text())
    meta_b = json.loads((b / "_tables.json").read_text())
    report: dict[str, Any] = {}
    for table in sorted(set(meta_a) | set(meta_b)):
        cols_a = meta_a.get(table, {}).get("columns", [])
        cols_b = meta_b.get(table, {}).get("columns", [])
        entry: dict[str, Any] = {
            "rows": [meta_a.get(table, {}).get("rows"), meta_b.get(table, {}).get("rows")]
        }
        if table not in meta_a or table not in meta_b:
            entry["table"] = "only in B" if table not in meta_a else "only in A"
        if cols_a != cols_b and table in meta_a and table in meta_b:
            entry["columns_added"] = [c for c in cols_b if c not in cols_a]
            entry["columns_removed"] = [c for c in cols_a if c not in cols_b]
        key = _key_of(table, cols_a or cols_b)
        ga = _group(_load(a, table), key)
        gb = _group(_load(b, table), key)
        removed = [k for k in ga if k not in gb]
        added = [k for k in gb if k not in ga]
        changed = [k for k in ga if k in gb and ga[k] != gb[k]]
        if removed or added or changed or len(entry) > 1:
            entry.update(
                key=list(key),
                removed=len(removed),
                added=len(added),
                changed=len(changed),
                examples={
                    "removed": [_short(ga[k][0]) for k in sorted(removed)[:examples]],
                    "added": [_short(gb[k][0]) for k in sorted(added)[:examples]],
                    "changed": [
                        f"{k}: {_changed_columns(ga[k], gb[k])}" for k in sorted(changed)[:examples]
                    ],
                },
            )
            report[table] = entry
    return report


def _print_compare(report: dict[str, Any], n_tables: int) -> None:
    if not report:
        print(f"no differences ({n_tables} tables)")
        return
    for table, e in report.items():
        head = f"{table}: rows {e['rows'][0]} -> {e['rows'][1]}"
        if "table" in e:
            head += f" ({e['table']})"
        print(
            f"{head}; key {tuple(e['key'])}: {e['removed']} removed, {e['added']} added, "
            f"{e['changed']} changed"
        )
        for what in ("columns_added", "columns_removed"):
            if e.get(what):
                print(f"  {what.replace('_', ' ')}: {', '.join(e[what])}")
        for kind in ("removed", "added", "changed"):
            for ex in e["examples"][kind]:
                print(f"  {kind}: {ex}")
    print(f"{len(report)} of {n_tables} tables differ")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tree", type=Path, default=ROOT, help="checkout to dump [this one]")
    ap.add_argument("--out", type=Path, default=Path("store-dump"), help="dump folder")
    ap.add_argument("--keep-store", type=Path, help="also copy the built data dir here")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="compare dumps")
    ap.add_argument("--examples", type=int, default=3, help="examples per kind of difference")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.compare:
        a, b = args.compare
        report = compare(a, b, examples=args.examples)
        n = len({*json.loads((a / "_tables.json").read_text()), *report})
        if args.json:
            print(json.dumps({"differences": report}))
        else:
            _print_compare(report, n)
        return 1 if report else 0
    result = dump_tree(args.tree.resolve(), args.out.resolve(), keep=args.keep_store)
    if args.json:
        print(json.dumps(result))
    else:
        secs = result["seconds"]
        print(f"dumped {len(result['rows'])} tables of {args.tree} to {args.out} in {secs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
