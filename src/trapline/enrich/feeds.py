"""External evidence with dates: Spamhaus DROP lists and a CSV / STIX 2.1 indicator format.

Readers turn a file into ``Sighting`` records (pure); ``trapline.pipeline.adapters.feeds`` writes
them to the store.

Formats (docs/networks.md has the details):
- Spamhaus DROP / EDROP / DROPv6 / ASN-DROP, text (``1.10.16.0/20 ; SBL256894``, ``AS612 ; ...``)
  or the JSON-lines form (``{"cidr": ...}`` / ``{"asn": ..., "asname": ...}`` plus a metadata line).
  A file names no date, so the date comes from ``--as-of`` or from the folder it sits in
  (``monthly/2021-05/drop.txt`` → 2021-05-01).
- CSV: ``indicator,kind,family,first_seen,last_seen,source`` (kind: cc | landing | harvester).
- STIX 2.1 bundles of ``indicator`` objects with simple patterns (``[ipv4-addr:value = '…']``).
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path

from trapline.errors import FeedError, UsageError
from trapline.routing.formats import date_from_name, read_bytes

SPAMHAUS_KINDS = ("drop", "edrop", "dropv6", "asn-drop")
INDICATOR_KINDS = ("cc", "landing", "harvester", "bot")  # bot: infected hosts a tracker named
KINDS = SPAMHAUS_KINDS + INDICATOR_KINDS
SPAMHAUS_SOURCE = "spamhaus"


@dataclass(slots=True, frozen=True)
class Sighting:
    kind: str
    indicator: str
    indicator_type: str  # cidr | ip | asn | domain | url
    first_seen: datetime  # UTC, naive
    last_seen: datetime
    source: str
    family: str | None = None


# --- classification helpers ---------------------------------------------------------------------


def classify(text: str) -> tuple[str, str]:
    """(normalised indicator, type) for an IP, CIDR, 'AS123', URL or domain."""
    value = text.strip()
    upper = value.upper()
    if re.fullmatch(r"AS\d+", upper):
        return f"AS{int(upper[2:])}", "asn"
    if "://" in value:
        return value, "url"
    try:
        if "/" in value:
            return str(ipaddress.ip_network(value, strict=False)), "cidr"
        return str(ipaddress.ip_address(value)), "ip"
    except ValueError:
        pass
    if re.fullmatch(r"[A-Za-z0-9_.-]+\.[A-Za-z]{2,}\.?", value):
        return value.lower().rstrip("."), "domain"
    raise ValueError(text)


def kind_from_name(path: Path) -> str | None:
    """Spamhaus list kind from a file name (drop.txt, drop_v4.json, asn_drop.txt, ...)."""
    name = path.name.lower()
    if not name.endswith((".txt", ".json", ".gz")):
        return None
    stem = re.sub(r"\.(txt|json)(\.gz)?$", "", name).replace("latest_", "")
    table = {
        "drop": "drop",
        "drop_v4": "drop",
        "edrop": "edrop",
        "drop_ipv6": "dropv6",
        "drop_v6": "dropv6",
        "dropv6": "dropv6",
        "asn_drop": "asn-drop",
        "asndrop": "asn-drop",
    }
    return table.get(stem)


_MONTH_DIR = re.compile(r"^(\d{4})-(\d{2})(?:-(\d{2}))?$")


def date_from_path(path: Path, root: Path | None = None) -> date | None:
    """A date in the file name, else in a folder name (``2021-05`` → 2021-05-01), nearest first."""
    found = date_from_name(path)
    if found:
        return found
    parents = list(path.parents)
    if root is not None:
        parents = [p for p in parents if p == root or root in p.parents]
    for folder in parents:
        m = _MONTH_DIR.match(folder.name)
        if m:
            try:
                return date(int(m.group(1)), int(m.group(2)), int(m.group(3) or 1))
            except ValueError:
                return None
    return None


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time())


def parse_time(text: str) -> datetime:
    """ISO-8601 date or date-time → naive UTC (a trailing Z or offset is honoured)."""
    value = text.strip()
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an ISO-8601 date or time") from exc
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(UTC).replace(tzinfo=None)
    return stamp


# --- Spamhaus --------------------------------------------------------------------------------


def read_spamhaus(data: bytes, kind: str, as_of: date | None) -> tuple[list[Sighting], date | None]:
    """Sightings from one DROP-family file (text or JSON lines); also the JSON metadata date."""
    rows: list[tuple[str, str | None]] = []
    meta_date: date | None = None
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line or line.startswith((";", "#")):
            continue
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("type") == "metadata":
                if isinstance(obj.get("timestamp"), int):
                    meta_date = datetime.fromtimestamp(obj["timestamp"], UTC).date()
                continue
            if "asn" in obj:
                rows.append((f"AS{obj['asn']}", obj.get("asname")))
            elif "cidr" in obj:
                rows.append((str(obj["cidr"]), obj.get("sblid")))
            continue
        value, _, comment = line.partition(";")
        rows.append((value.strip(), comment.strip() or None))
    day = as_of or meta_date
    if day is None and rows:
        raise UsageError(
            f"a {kind} list names no date; pass --as-of YYYY-MM-DD or import its dated folder"
        )
    out = []
    for raw_value, detail in rows:
        try:
            indicator, itype = classify(raw_value)
        except ValueError:
            continue
        if (kind == "asn-drop") != (itype == "asn"):
            continue  # an ASN on a prefix list (or the reverse) is a broken line, not evidence
        stamp = _midnight(day)  # type: ignore[arg-type]
        out.append(Sighting(kind, indicator, itype, stamp, stamp, SPAMHAUS_SOURCE, detail))
    return out, meta_date


# --- CSV and STIX 2.1 -------------------------------------------------------------------------

CSV_COLUMNS = ("indicator", "kind", "family", "first_seen", "last_seen", "source")


def read_indicator_csv(
    data: bytes, default_kind: str | None, default_source: str, as_of: date | None
) -> list[Sighting]:
    """``indicator,kind,family,first_seen,last_seen,source`` with a header row."""
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig", "replace")))
    if not reader.fieldnames or "indicator" not in reader.fieldnames:
        raise FeedError(f"CSV header must start with {','.join(CSV_COLUMNS)}")
    out = []
    for n, row in enumerate(reader, start=2):
        kind = (row.get("kind") or default_kind or "").strip().lower()
        if kind not in KINDS:
            raise FeedError(
                f"line {n}: kind {kind!r} unknown; use one of {', '.join(INDICATOR_KINDS)}"
            )
        try:
            indicator, itype = classify(row["indicator"] or "")
            first_text = (row.get("first_seen") or "").strip()
            if not first_text and as_of is None:
                raise ValueError("first_seen is empty and no --as-of was given")
            first = parse_time(first_text) if first_text else _midnight(as_of)  # type: ignore[arg-type]
            last_text = (row.get("last_seen") or "").strip()
            last = parse_time(last_text) if last_text else first
        except ValueError as exc:
            raise FeedError(f"line {n}: {exc}; fix the row or remove it") from exc
        source = (row.get("source") or "").strip() or default_source
        family = (row.get("family") or "").strip() or None
        out.append(
            Sighting(kind, indicator, itype, min(first, last), max(first, last), source, family)
        )
    return out


_STIX_TERM = re.compile(
    r"(ipv4-addr|ipv6-addr|domain-name|url|autonomous-system):(value|number)\s*=\s*'?([^'\]\s]+)'?"
)


def _stix_kind(obj: dict[str, object], default_kind: str | None) -> str | None:
    explicit = obj.get("x_trapline_kind")
    if isinstance(explicit, str) and explicit in KINDS:
        return explicit
    words = (
        " ".join(
            str(x).lower()
            for key in ("indicator_types", "labels")
            for x in (obj.get(key) or [])  # type: ignore[attr-defined]
        )
        + " "
        + str(obj.get("name", "")).lower()
    )
    if re.search(r"\bc2\b|c&c|command.and.control|botnet.?cc", words):
        return "cc"
    if "harvest" in words:
        return "harvester"
    if re.search(r"landing|phish|spamvertis", words):
        return "landing"
    return default_kind


def read_stix(
    data: bytes, default_kind: str | None, default_source: str
) -> tuple[list[Sighting], int]:
    """Indicators from a STIX 2.1 bundle (or object list); returns (sightings, skipped objects)."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise FeedError(f"not JSON ({exc}); expected a STIX 2.1 bundle") from exc
    objects = doc.get("objects", [doc]) if isinstance(doc, dict) else doc
    identities = {
        o.get("id"): o.get("name")
        for o in objects
        if isinstance(o, dict) and o.get("type") == "identity"
    }
    out, skipped = [], 0
    for obj in objects:
        if not isinstance(obj, dict) or obj.get("type") != "indicator":
            continue
        kind = _stix_kind(obj, default_kind)
        terms = _STIX_TERM.findall(str(obj.get("pattern", "")))
        if kind is None or not terms or "valid_from" not in obj:
            skipped += 1
            continue
        first = parse_time(str(obj["valid_from"]))
        last = parse_time(str(obj.get("valid_until") or obj.get("modified") or obj["valid_from"]))
        source = identities.get(obj.get("created_by_ref")) or default_source
        family = obj.get("x_trapline_family") or obj.get("name")
        for otype, _, value in terms:
            try:
                indicator, itype = classify(f"AS{value}" if otype == "autonomous-system" else value)
            except ValueError:
                skipped += 1
                continue
            out.append(
                Sighting(kind, indicator, itype, min(first, last), max(first, last), source, family)
            )
    return out, skipped


# --- files and folders ----------------------------------------------------------------------


def _files(path: Path, kind: str | None) -> Iterator[tuple[Path, str | None]]:
    if path.is_file():
        yield path, kind or kind_from_name(path)
        return
    if not path.is_dir():
        raise FeedError(f"{path} does not exist; check the path")
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        guessed = kind_from_name(file)
        if guessed and (kind is None or kind == guessed):
            yield file, guessed
        elif not guessed and file.name.lower().endswith((".csv", ".stix.json")):
            yield file, kind  # indicator files: kinds per row (CSV) or per object (STIX)


# Broader than any real allocation (IANA hands RIRs /8s and /12s): a DROP entry this wide would
# list networks nobody accused, so it is refused, as is one of the wrong address family.
MIN_PREFIX = {4: 8, 6: 12}
_FAMILY_OF_KIND = {"drop": 4, "edrop": 4, "dropv6": 6}


def reject_reason(s: Sighting) -> str | None:
    """Why sighting ``s`` must not be stored, or None when it may."""
    if s.indicator_type == "asn":
        number = int(s.indicator[2:])
        return None if 0 < number < 1 << 32 else "AS number outside 1..4294967295"
    if s.indicator_type not in ("cidr", "ip"):
        return None
    net = ipaddress.ip_network(s.indicator, strict=False)
    wanted = _FAMILY_OF_KIND.get(s.kind)
    if wanted is not None and net.version != wanted:
        return f"IPv{net.version} entry on a {s.kind} (IPv{wanted}) list"
    if net.prefixlen == 0:
        return "covers the whole address space"
    if net.prefixlen < MIN_PREFIX[net.version]:
        return f"/{net.prefixlen} is broader than any allocation (IPv{net.version} minimum /{MIN_PREFIX[net.version]})"
    return None


def _screen(sightings: list[Sighting], name: str, notes: list[str]) -> list[Sighting]:
    """``sightings`` without the ones ``reject_reason`` refuses; one note per reason."""
    kept: list[Sighting] = []
    refused: dict[str, list[str]] = {}
    for s in sightings:
        why = reject_reason(s)
        if why is None:
            kept.append(s)
        else:
            refused.setdefault(why, []).append(s.indicator)
    for why, values in refused.items():
        notes.append(f"{name}: {len(values)} entries refused ({why}), e.g. {values[0]}")
    return kept


def read_feed(
    path: Path, kind: str | None = None, as_of: date | None = None
) -> tuple[list[Sighting], int, list[str]]:
    """Every sighting under ``path`` (file or folder); (sightings, files read, notes)."""
    path = Path(path)
    if kind is not None and kind not in KINDS:
        raise UsageError(f"--kind {kind!r} unknown; use one of {', '.join(KINDS)}")
    sightings: list[Sighting] = []
    notes: list[str] = []
    files = 0
    for file, file_kind in _files(path, kind):
        data, _ = read_bytes(file)
        files += 1
        if ".csv" in file.name.lower():
            got = read_indicator_csv(data, file_kind, f"csv:{file.name}", as_of)
            sightings += _screen(got, file.name, notes)
        elif file_kind in SPAMHAUS_KINDS:
            # One file: --as-of wins; a folder: each file's own folder date wins.
            dated = date_from_path(file, path if path.is_dir() else None)
            day = (as_of or dated) if path.is_file() else (dated or as_of)
            got, _ = read_spamhaus(data, file_kind, day)
            sightings += _screen(got, file.name, notes)
        elif data.lstrip()[:1] in (b"{", b"["):
            got, skipped = read_stix(data, file_kind, f"stix:{file.name}")
            sightings += _screen(got, file.name, notes)
            if skipped:
                notes.append(
                    f"{file.name}: {skipped} STIX objects skipped (no kind, pattern or valid_from)"
                )
        else:
            raise UsageError(f"{file}: cannot tell the feed kind; pass --kind ({', '.join(KINDS)})")
    if files == 0:
        raise FeedError(
            f"no feed files under {path} (drop.txt, edrop.txt, asn_drop.txt, *.csv, *.json)"
        )
    return sightings, files, notes
