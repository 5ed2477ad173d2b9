"""Parse throughput on one core: ``trapline.ingest.parse.parse_many`` vs the naive stdlib baseline.

The baseline is what a user would write: ``email.message_from_bytes(b, policy=email.policy.default)``
plus ``get_content()`` on every leaf part. Both run in this process, on the same bytes, alternating
batch by batch, so the ratio stays fair when the machine's load changes during the run.

Example: python bench/parse.py --json
"""

from __future__ import annotations

import argparse
import contextlib
import email
import email.policy
import json
import sys
import time
from pathlib import Path

from trapline.ingest.parse import parse_many
from trapline.model import Message, RawMessage

DEFAULT_CORPUS = (
    Path(__file__).resolve().parent.parent.parent / "shared/data/mail/spamassassin-2002"
)


def baseline(blobs: list[bytes]) -> float:
    """Seconds for the naive stdlib parse of every blob."""
    start = time.perf_counter()
    for blob in blobs:
        msg = email.message_from_bytes(blob, policy=email.policy.default)
        for part in msg.walk():
            if part.is_multipart():
                continue
            # The naive user's code would crash on a bad part; count the work done and go on.
            with contextlib.suppress(Exception):
                part.get_content()
    return time.perf_counter() - start


def pipeline(raws: list[RawMessage]) -> tuple[float, int]:
    """Seconds for one ``parse_many`` batch, and how many came back as ``Message``."""
    start = time.perf_counter()
    parsed = sum(isinstance(r, Message) for r in parse_many(raws))
    return time.perf_counter() - start, parsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    files = sorted(
        p
        for p in args.corpus.rglob("*")
        if p.is_file() and not p.name[0].isupper() and p.suffix != ".json"
    )
    blobs = [p.read_bytes() for p in files]
    raws = [RawMessage(b, str(p)) for b, p in zip(blobs, files, strict=True)]
    parse_many(raws[:50])  # warm-up: loads the Public Suffix List once
    # Alternate batch by batch so both sides see the same load on a shared machine.
    t_pipe = t_base = 0.0
    parsed = 0
    for i in range(0, len(raws), args.batch):
        seconds, ok = pipeline(raws[i : i + args.batch])
        t_pipe += seconds
        parsed += ok
        t_base += baseline(blobs[i : i + args.batch])
    out = {
        "messages": len(blobs),
        "mb": round(sum(map(len, blobs)) / 1e6, 1),
        "parsed": parsed,
        "parse_msgs_per_s": round(len(blobs) / t_pipe, 1),
        "baseline_msgs_per_s": round(len(blobs) / t_base, 1),
        "ratio": round(t_base / t_pipe, 2),
    }
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:>22}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
