"""IP → ASN lookups/s: trapline's numpy interval index vs ``ipaddress`` + bisect (and pyasn).

One million random IPv4 addresses (seeded) are mapped with the RouteViews table of 2008-05-01,
as text, the way enrichment receives them. Measured in the same run:

- trapline: ``Routing.lookup_many`` (vectorised parse, as-of snapshot choice, one
  ``np.searchsorted``), plus the search alone on integers;
- baseline: ``int(ipaddress.ip_address(s))`` then ``bisect`` over the same flattened intervals
  held in Python lists (what a careful pure-Python user would write);
- pyasn (C radix tree) when it is installed.

All three must give the same ASNs for global addresses (checked, reported as ``agree``).
``build_s`` is the time to build the index from the parsed table, ``memory_mb`` its size.

Example: python bench/asn.py --json
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import ipaddress
import json
import random
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from trapline.routing import index as routing_index
from trapline.routing.formats import read_pyasn_dat
from trapline.routing.lookup import LoadedSnapshot, Routing, day_numbers
from trapline.routing.snapshots import Snapshot

DEFAULT_TABLE = (
    Path(__file__).resolve().parent.parent.parent
    / "shared/data/routing/routeviews-pyasn/ipasn_20080501_v12.dat.gz"
)


def _baseline(
    ips: list[str], starts: list[int], owners: list[int], asns: list[int]
) -> tuple[float, list[int | None]]:
    t = time.perf_counter()
    out: list[int | None] = []
    for text in ips:
        value = int(ipaddress.ip_address(text))
        owner = owners[bisect.bisect_right(starts, value) - 1]
        out.append(asns[owner] if owner >= 0 else None)
    return time.perf_counter() - t, out


def _pyasn(table: Path, ips: list[str]) -> tuple[float, list[int | None]] | None:
    try:
        import pyasn
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "table.dat"
        plain.write_bytes(
            gzip.decompress(table.read_bytes()) if table.suffix == ".gz" else table.read_bytes()
        )
        db = pyasn.pyasn(str(plain))
    t = time.perf_counter()
    out = [db.lookup(text)[0] for text in ips]
    return time.perf_counter() - t, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("table", nargs="?", type=Path, default=DEFAULT_TABLE)
    ap.add_argument("-n", type=int, default=1_000_000, help="lookups per method")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)

    t = time.perf_counter()
    parsed = read_pyasn_dat(args.table)
    parse_s = time.perf_counter() - t
    t = time.perf_counter()
    index = routing_index.build(parsed.routes)
    build_s = time.perf_counter() - t
    info = Snapshot(
        "bench@2008-05-01",
        date(2008, 5, 1),
        str(args.table),
        "pyasn",
        len(parsed.routes),
        0,
        len({r.asn for r in parsed.routes}),
    )
    routing = Routing((LoadedSnapshot(info, index),))

    rnd = random.Random(20081111)
    ips = [str(ipaddress.IPv4Address(rnd.getrandbits(32))) for _ in range(args.n)]
    days = day_numbers([date(2008, 11, 1)] * args.n)

    t = time.perf_counter()
    _snap, route, _family = routing.lookup_many(ips, days)
    ours_s = time.perf_counter() - t
    ours = np.where(route >= 0, np.asarray(index.v4_asn, dtype=np.int64)[np.maximum(route, 0)], -1)
    values, _ = routing_index.parse_ipv4(ips)
    t = time.perf_counter()
    routing_index.lookup_v4(index, values)
    search_s = time.perf_counter() - t

    base_s, base = _baseline(
        ips, index.v4_bounds.tolist(), index.v4_owner.tolist(), index.v4_asn.tolist()
    )
    pyasn_result = _pyasn(args.table, ips)

    # Compare on global addresses (trapline deliberately leaves RFC 6890 space unmapped).
    is_global = [ipaddress.IPv4Address(x).is_global for x in ips[:200_000]]
    ours_list = [int(a) if a >= 0 else None for a in ours[:200_000].tolist()]
    agree_base = np.mean([a == b for a, b, g in zip(ours_list, base, is_global, strict=False) if g])
    result = {
        "n": args.n,
        "prefixes": len(parsed.routes),
        "intervals": len(index.v4_bounds),
        "parse_s": round(parse_s, 3),
        "build_s": round(build_s, 3),
        "memory_mb": round(index.nbytes / 1e6, 2),
        "lookups_per_s": round(args.n / ours_s),
        "search_only_lookups_per_s": round(args.n / search_s),
        "baseline": "ipaddress + bisect over the same intervals (pure Python)",
        "baseline_lookups_per_s": round(args.n / base_s),
        "ratio": round(base_s / ours_s, 2),
        "mapped_share": round(float(np.mean(ours >= 0)), 4),
        "agree_with_baseline": round(float(agree_base), 6),
    }
    if pyasn_result is not None:
        py_s, py = pyasn_result
        agree_py = np.mean([a == b for a, b, g in zip(ours_list, py, is_global, strict=False) if g])
        result |= {
            "pyasn_lookups_per_s": round(args.n / py_s),
            "ratio_vs_pyasn": round(py_s / ours_s, 2),
            "agree_with_pyasn": round(float(agree_py), 6),
        }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
