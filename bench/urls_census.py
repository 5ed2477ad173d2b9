"""URL census of the real corpora: every URL the parser finds, before and after a change.

    python bench/urls_census.py --out after.jsonl            # URLs of the four real corpora
    python bench/urls_census.py --compare before.jsonl after.jsonl

Run the first form once per tree (``PYTHONPATH=<tree>/src``); ``--compare`` prints, per corpus,
how many (message, URL) and (message, host) pairs were added and removed, grouped by cause.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("TRAPLINE_SHARED_DATA", ROOT.parent / "shared" / "data")) / "mail"
CORPORA = {
    "spamassassin": SHARED / "spamassassin-2002",
    "edge-cases": SHARED / "edge-cases",
    "nazario": SHARED / "nazario-phishing-2005",
    "personal": SHARED / "personal-spam-2023-2025",
}


def census(out: Path) -> None:
    from trapline.ingest.parse import parse_many
    from trapline.ingest.sources import SourceReader
    from trapline.model import Message, RawMessage

    with out.open("w", encoding="utf-8") as fh:
        for corpus, path in CORPORA.items():
            raws = [r for r in SourceReader([path]) if isinstance(r, RawMessage)]
            for record in parse_many(raws):
                if not isinstance(record, Message):
                    continue
                for url in record.urls:
                    row = {
                        "corpus": corpus,
                        "id": record.id,
                        "url": url.url,
                        "host": url.host,
                        "source": url.source,
                        "part": getattr(url, "part", None),
                    }
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def _load(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


LINKS = {"href", "src", "action", "background", "refresh", "base"}


def _cause(
    row: dict[str, Any],
    based: set[str],
    old_host: str | None = None,
    untabbed: frozenset = frozenset(),
) -> str:
    """Why a URL or host appears on one side only (a reading of the row, for the report)."""
    url, part = row["url"], row.get("part") or ""
    if (row["id"], url) in untabbed:
        return "tab/newline inside an attribute URL (browsers drop them)"
    if old_host is not None:
        if old_host.replace(".", "").replace("x", "").isalnum() and old_host[-1:].isdigit():
            return "IPv4 written as a number or in hex, now dotted"
        return "host cannot exist (URL text kept, no host)"
    if "\t" in url or "\n" in url or "\r" in url:
        return "tab/newline inside an attribute URL (browsers drop them)"
    if any(not c.isascii() and unicodedata.category(c)[0] in "PZS" for c in url):
        return "URL next to non-Latin text"
    if "/" in part:
        return "embedded message (message/rfc822)"
    if part.startswith("attachment."):
        return "HTML attachment (by content)"
    if row["source"] == "html-text":
        return "HTML text beside a text/plain part"
    if row["source"] in ("refresh", "base"):
        return f"<meta refresh> / <base>: {row['source']}"
    if row["source"] in LINKS and row["id"] in based:
        return "relative link resolved against <base href>"
    if url.lower().startswith("ftp."):
        return "bare ftp. host"
    if row["source"] == "text":
        return "URL next to non-Latin text"
    return "other"


def compare(before: Path, after: Path) -> None:
    old, new = _load(before), _load(after)
    based = {r["id"] for r in new if r["source"] == "base"}
    untabbed = frozenset(
        (r["id"], re.sub(r"[\t\n\r]", "", r["url"]))
        for r in old
        if re.search(r"[\t\n\r]", r["url"])
    )
    table: dict[str, Counter[str]] = defaultdict(Counter)
    old_hosts = {(r["id"], r["url"]): r["host"] for r in old}
    for side, rows, others in (("removed", old, new), ("added", new, old)):
        keys = {(r["id"], r["url"]) for r in others}
        host_keys = {(r["id"], r["host"]) for r in others}
        for row in rows:
            corpus, key = row["corpus"], (row["id"], row["url"])
            if key not in keys:
                table[corpus][f"URLs {side}: {_cause(row, based, None, untabbed)}"] += 1
            if row["host"] and (row["id"], row["host"]) not in host_keys:
                prior = old_hosts.get(key) if side == "added" else row["host"]
                same_url = key in keys
                reason = (
                    _cause(row, based, prior or "")
                    if same_url and prior
                    else _cause(row, based, None, untabbed)
                )
                table[corpus][f"hosts {side}: {reason}"] += 1
    for corpus in CORPORA:
        n_old = sum(1 for r in old if r["corpus"] == corpus)
        n_new = sum(1 for r in new if r["corpus"] == corpus)
        print(f"{corpus}: {n_old} -> {n_new} URL rows")
        for key, count in sorted(table[corpus].items()):
            print(f"  {key}: {count}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = ap.parse_args(argv)
    if args.compare:
        compare(*args.compare)
    elif args.out:
        census(args.out)
    else:
        ap.error("give --out FILE or --compare BEFORE AFTER")
    return 0


if __name__ == "__main__":
    sys.exit(main())
