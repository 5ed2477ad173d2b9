"""Abuse reports in the Abuse Reporting Format (RFC 5965), one per spam sample from a network.

Each report is a ``multipart/report; report-type=feedback-report`` message (RFC 6522) with three
parts: a human-readable explanation, the machine-readable ``message/feedback-report`` fields, and
the original message exactly as archived. The MIME is assembled from bytes here rather than by
``email.generator``: the generator re-folds headers and rewrites line endings of an attached
message, and an abuse desk must receive the spam byte-for-byte as the trap got it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from trapline import __version__
from trapline.errors import NotFound, UsageError
from trapline.export.evidence import label_filter
from trapline.store.duckdb import Store
from trapline.store.raw import iter_raw


@dataclass(slots=True, frozen=True)
class Sample:
    """One stored message reported to the network that sent it."""

    id: str
    received_at: datetime | None
    origin_ip: str
    asn: int
    prefix: str | None
    snapshot_id: str | None
    subject: str | None
    urls: tuple[str, ...]
    mail_from: str | None = None
    rcpt_to: tuple[str, ...] = ()


@dataclass(slots=True, frozen=True)
class ArfRun:
    asn: int
    matched: int  # messages from the network in the selection
    written: tuple[Path, ...]


MAX_URIS = 5  # Reported-URI fields per report: enough to act on, not a dump


def _header_text(value: str) -> str:
    """A header value on one line, ASCII only (RFC 5965 fields are ASCII)."""
    flat = " ".join(value.split())
    return flat.encode("ascii", "backslashreplace").decode("ascii")


def _boundary(raw: bytes, seed: str) -> str:
    """A boundary that cannot occur in the attached bytes (RFC 2046 §5.1.1)."""
    n = 0
    while True:
        token = "=_trapline_" + hashlib.sha256(f"{seed}:{n}".encode()).hexdigest()[:32]
        if token.encode() not in raw:
            return token
        n += 1


def _transfer_encoding(raw: bytes) -> str:
    """RFC 2046 §5.2.1: message/rfc822 is sent 7bit, 8bit or binary, never encoded."""
    if any(len(line) > 998 for line in raw.split(b"\n")):
        return "binary"
    return "8bit" if any(b > 127 for b in raw) else "7bit"


def build_report(
    s: Sample,
    raw: bytes,
    *,
    reporter: str,
    to: str | None = None,
    now: datetime | None = None,
) -> bytes:
    """One complete RFC 5965 report as bytes, ``raw`` attached unchanged."""
    now = now or datetime.now(UTC)
    nl = b"\r\n" if b"\r\n" in raw[:4096] else b"\n"  # follow the original's line endings
    boundary = _boundary(raw, s.id)
    arrival = format_datetime(s.received_at.replace(tzinfo=UTC)) if s.received_at else None
    where = f"AS{s.asn}" + (f", prefix {s.prefix}" if s.prefix else "")
    snapshot = f" (routing data {s.snapshot_id})" if s.snapshot_id else ""
    subject = f"Abuse report: spam from {s.origin_ip} ({where})"
    head = [
        f"From: {reporter}",
        *([f"To: {to}"] if to else []),
        f"Date: {format_datetime(now)}",
        f"Subject: {_header_text(subject)}",
        f"Message-ID: {make_msgid('arf', domain=reporter.rpartition('@')[2] or None)}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=feedback-report; boundary="{boundary}"',
    ]
    human = [
        f"This is an abuse report for a spam message sent from {s.origin_ip},",
        f"which {where} announced at the time{snapshot}.",
        f"It was received by a spam trap at {arrival or 'an unknown time'}",
        "on an address that never asked for mail. The original message is attached",
        "unchanged; the machine-readable report follows RFC 5965.",
    ]
    if s.subject:
        human.append(f"Subject of the spam: {_header_text(s.subject)[:200]}")
    fields = ["Feedback-Type: abuse", f"User-Agent: trapline/{__version__}", "Version: 1"]
    if s.mail_from is not None:
        fields.append(f"Original-Mail-From: <{_header_text(s.mail_from)}>")
    fields.extend(f"Original-Rcpt-To: <{_header_text(r)}>" for r in s.rcpt_to)
    if arrival:
        fields.append(f"Arrival-Date: {arrival}")
    fields.append(f"Source-IP: {s.origin_ip}")
    fields.append("Incidents: 1")
    fields.extend(f"Reported-URI: {_header_text(u)}" for u in s.urls[:MAX_URIS])

    def lines(items: list[str]) -> bytes:
        return nl.join(i.encode("ascii", "backslashreplace") for i in items) + nl

    delim = b"--" + boundary.encode()
    return b"".join(
        [
            lines(head),
            nl,
            b"This is a multipart message in RFC 5965 Abuse Reporting Format." + nl,
            nl + delim + nl,
            lines(
                ["Content-Type: text/plain; charset=us-ascii", "Content-Transfer-Encoding: 7bit"]
            ),
            nl,
            lines(human),
            nl + delim + nl,
            lines(["Content-Type: message/feedback-report"]),
            nl,
            lines(fields),
            nl + delim + nl,
            lines(
                [
                    "Content-Type: message/rfc822",
                    f"Content-Transfer-Encoding: {_transfer_encoding(raw)}",
                    "Content-Disposition: attachment",
                ]
            ),
            nl,
            raw,
            # RFC 2046 §5.1.1: the line break before a delimiter belongs to the delimiter.
            nl + delim + b"--" + nl,
        ]
    )


def select_samples(
    store: Store,
    asn: int,
    *,
    label: str = "spam",
    since: date | None = None,
    until: date | None = None,
    limit: int = 0,
) -> tuple[int, list[Sample]]:
    """Messages whose origin mapped to ``asn`` (oldest first), and how many there are in all."""
    where = ["m.origin_asn = ?", "m.origin_ip IS NOT NULL", label_filter(label, "m")]
    args: list[Any] = [asn]
    if since is not None:
        where.append("m.received_at >= ?")
        args.append(since)
    if until is not None:
        where.append("m.received_at < ?")
        args.append(until)
    cond = " AND ".join(where)
    total = store.con.execute(f"SELECT count(*) FROM messages m WHERE {cond}", args).fetchone()
    rows = store.con.execute(
        f"""SELECT m.id, m.received_at, m.origin_ip, m.origin_prefix, m.routing_snapshot,
                   m.subject,
                   (SELECT list(u.url ORDER BY u.url) FROM urls u WHERE u.message_id = m.id)
            FROM messages m WHERE {cond}
            ORDER BY m.received_at NULLS LAST, m.id"""
        + (" LIMIT ?" if limit > 0 else ""),
        [*args, limit] if limit > 0 else args,
    ).fetchall()
    samples = [
        Sample(
            mid,
            at,
            ip,
            asn,
            prefix,
            snap,
            subj,
            tuple(u for u in dict.fromkeys(urls or ()) if "://" in u),
        )
        for mid, at, ip, prefix, snap, subj, urls in rows
    ]
    return int(total[0]) if total else 0, samples


def write_reports(
    store: Store,
    asn: int,
    out: Path,
    *,
    reporter: str,
    to: str | None = None,
    label: str = "spam",
    since: date | None = None,
    until: date | None = None,
    limit: int = 0,
) -> ArfRun:
    """Write one ``.eml`` report per sample into ``out`` (created); names sort by time."""
    if "@" not in reporter:
        raise UsageError(f"--from {reporter!r} is no mail address; use abuse-desk@example.org")
    matched, samples = select_samples(
        store, asn, label=label, since=since, until=until, limit=limit
    )
    if not samples:
        return ArfRun(asn, matched, ())
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {out}: {exc.strerror}; choose another --out") from exc
    archived = {row.id: row for row in iter_raw(store.con, [s.id for s in samples])}
    written: list[Path] = []
    for s in samples:
        row = archived.get(s.id)
        if row is None:
            raise NotFound(f"message {s.id} has no raw bytes in the archive; re-ingest it")
        env = row.envelope
        if env is not None:
            s = replace(s, mail_from=env.mail_from, rcpt_to=tuple(env.rcpt_to))
        day = s.received_at.strftime("%Y%m%d-%H%M%S") if s.received_at else "undated"
        path = out / f"AS{asn}-{day}-{s.id[:16]}.eml"
        path.write_bytes(build_report(s, row.data, reporter=reporter, to=to))
        written.append(path)
    return ArfRun(asn, matched, tuple(written))
