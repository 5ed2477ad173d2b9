"""Message search: filters as typed values, keyset pages (no OFFSET scans on big stores)."""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

from trapline.errors import UsageError
from trapline.serve.api.access import StoreAccess
from trapline.store.queries import plain_value

# Newest first, messages without a time last; the id makes the order total (keyset pages).
_ORDER = "ORDER BY received_at DESC NULLS LAST, id DESC"
COLUMNS = (
    "id, received_at, subject, from_addr, from_domain, origin_ip, origin_asn, origin_prefix, "
    "campaign_id, n_urls, n_attachments, size"
)


@dataclass(slots=True, frozen=True)
class MessageFilter:
    since: datetime | None = None
    until: datetime | None = None
    ip: str | None = None
    asn: int | None = None
    campaign: str | None = None
    subject: str | None = None
    domain: str | None = None
    include_ham: bool = False

    def as_params(self) -> dict[str, Any]:
        """The filters that are set, for links and cache keys."""
        return {
            name: getattr(self, name)
            for name in self.__slots__
            if getattr(self, name) not in (None, False)
        }


def utc_naive(value: datetime | None) -> datetime | None:
    """The store keeps naive UTC: convert zone-aware input, take naive input as UTC."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def parse_asn(text: str | int | None) -> int | None:
    if text is None or text == "":
        return None
    value = str(text).strip().upper().removeprefix("AS")
    if not value.isdigit() or int(value) > 4294967295:
        raise UsageError(f"asn {text!r} is not an AS number (26780 or AS26780)")
    return int(value)


def parse_ip(text: str | None) -> str | None:
    if text is None or text == "":
        return None
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError as exc:
        raise UsageError(f"ip {text!r} is not an IPv4 or IPv6 address") from exc


def encode_cursor(received_at: datetime | None, message_id: str) -> str:
    text = f"{received_at.isoformat() if received_at else 'none'}|{message_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(token: str) -> tuple[datetime | None, str]:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        when, _, mid = text.partition("|")
        if not mid:
            raise ValueError("no id")
        return (None if when == "none" else datetime.fromisoformat(when)), mid
    except ValueError as exc:
        raise UsageError("cursor is not one this server handed out; start without it") from exc


def where_clause(access: StoreAccess, f: MessageFilter) -> tuple[list[str], list[Any]]:
    where: list[str] = [] if f.include_ham else [access.spam_only()]
    args: list[Any] = []
    if f.since is not None:
        where.append("received_at >= ?")
        args.append(f.since)
    if f.until is not None:
        where.append("received_at < ?")
        args.append(f.until)
    if f.ip is not None:
        where.append("origin_ip = ?")
        args.append(f.ip)
    if f.asn is not None:
        where.append("origin_asn = ?")
        args.append(f.asn)
    if f.campaign:
        where.append("starts_with(campaign_id, ?)")
        args.append(f.campaign.strip().lower())
    if f.subject:
        # contains() is literal: no LIKE wildcards to escape from user input.
        where.append("contains(lower(subject), ?)")
        args.append(f.subject.lower())
    if f.domain:
        d = f.domain.strip().lower().rstrip(".")
        where.append("id IN (SELECT message_id FROM urls WHERE registered_domain = ? OR host = ?)")
        args += [d, d]
    return where, args


def search_messages(
    access: StoreAccess,
    f: MessageFilter,
    *,
    limit: int = 50,
    cursor: str | None = None,
    stored_since: datetime | None = None,
) -> dict[str, Any]:
    """One page of messages, newest first (no time last), with the next page's cursor.

    ``stored_since`` keeps messages stored at or after that time (what a search index snapshot
    has not seen)."""
    where, args = where_clause(access, f)
    if stored_since is not None:
        where.append("ingested_at >= ?")
        args.append(stored_since)
    if cursor:
        when, mid = decode_cursor(cursor)
        if when is None:
            where.append("(received_at IS NULL AND id < ?)")
            args.append(mid)
        else:
            where.append("(received_at < ? OR (received_at = ? AND id < ?) OR received_at IS NULL)")
            args += [when, when, mid]
    # Late materialisation: rank narrow rows, then read the wide columns of the page only.
    cond = " AND ".join(where) or "TRUE"

    def page(key: str) -> str:
        return (
            f"WITH page AS (SELECT {key} AS r FROM messages WHERE {cond} {_ORDER} LIMIT ?) "
            f"SELECT {COLUMNS} FROM messages WHERE {key} IN (SELECT r FROM page) {_ORDER}"
        )

    try:
        cur = access.cursor().execute(page("rowid"), [*args, limit + 1])
    except duckdb.BinderException:  # an attached Parquet dataset: messages is a view, no rowid
        cur = access.cursor().execute(page("id"), [*args, limit + 1])
    names = [d[0] for d in cur.description or []]
    rows = cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [{n: plain_value(v) for n, v in zip(names, r, strict=True)} for r in rows]
    nxt = encode_cursor(rows[-1][1], rows[-1][0]) if more and rows else None
    return {"items": items, "next_cursor": nxt, "limit": limit}


def count_messages(access: StoreAccess, f: MessageFilter) -> int:
    where, args = where_clause(access, f)
    row = (
        access.cursor()
        .execute(f"SELECT count(*) FROM messages WHERE {' AND '.join(where) or 'TRUE'}", args)
        .fetchone()
    )
    return int(row[0]) if row else 0
