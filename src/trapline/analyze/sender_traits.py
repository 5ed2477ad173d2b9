"""The sending software's fingerprint in a message: what bots write the same way every time.

A bot's spam engine builds every message from one code path, so the *shape* of what it
generates repeats across campaigns even when the text, the sender addresses and the bots
change: the Message-ID syntax, the MIME boundary, the order and spelling of its headers, the
X-Mailer it claims, how it says HELO and whether it says EHLO. Shapes abstract the random parts
(``<000d01c9443a$5e1b2c30$0a01a8c0@user>`` -> ``<h16$h8$h8@a4>``) and keep the fixed ones.

``traits_of`` is the pure core (header lines and the receiving hop in, ``Traits`` out);
``fill_traits`` is the adapter that computes missing rows of ``sender_traits`` from the raw
archive and the stored hops.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32

import duckdb
import pyarrow as pa

from trapline.store.raw import decompress

# Headers a receiving system adds (above or below the sender's block): not the sender's habit.
RECEIVER_HEADERS = frozenset(
    h.lower()
    for h in (
        "Received", "Return-Path", "Delivered-To", "X-Original-To", "Envelope-To", "Status",
        "X-Status", "X-Keywords", "X-UID", "Content-Length", "Lines", "X-Spam-Status",
        "X-Spam-Level", "X-Spam-Checker-Version", "X-Spam-Flag", "X-Spam-Score", "X-Virus-Scanned",
        "Authentication-Results", "ARC-Seal", "ARC-Message-Signature", "ARC-Authentication-Results",
        "X-Received", "X-Google-Smtp-Source", "Received-SPF", "X-Gm-Message-State", "X-Loop",
        "X-Original-Recipient", "X-Trapline-Replay", "X-Mailman-Version", "Precedence",
    )
)  # fmt: skip
_RUN = re.compile(r"[A-Za-z0-9]+")
_BOUNDARY = re.compile(r'boundary\s*=\s*"?([^";\r\n]+)"?', re.IGNORECASE)
_IP = re.compile(r"^\[?\d{1,3}(\.\d{1,3}){3}\]?$")


@dataclass(slots=True, frozen=True)
class Traits:
    message_id: str | None
    boundary: str | None
    header_order: str | None
    mailer: str | None
    helo: str | None  # HELO shape + the SMTP dialect word the receiving hop recorded


def _class(token: str) -> str:
    if token.isdigit():
        return "d"
    if re.fullmatch(r"[a-f0-9]+", token):
        return "h"
    if re.fullmatch(r"[A-F0-9]+", token):
        return "H"
    if token.islower():
        return "a"
    if token.isupper():
        return "A"
    return "m"


def shape(text: str) -> str:
    """Alphanumeric runs as class + length (long runs bucketed); punctuation kept.

    A run's class is the narrowest that holds it: digits, lower hex, upper hex, lower letters,
    upper letters, mixed. Short runs keep their exact length because generators fix them (an
    8-hex field stays 8); long free text only says ``+``.
    """
    out: list[str] = []
    pos = 0
    for m in _RUN.finditer(text):
        out.append(text[pos : m.start()])
        token = m.group(0)
        n = len(token)
        out.append(_class(token) + (str(n) if n <= 16 else "+"))
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)[:80]


def message_id_shape(value: str | None) -> str | None:
    """Shape of the local part; the domain only as its label count (domains are forged)."""
    if not value:
        return None
    value = value.strip()
    local, at, domain = value.strip("<>").rpartition("@")
    if not at:
        return shape(value)
    labels = domain.count(".") + 1 if domain else 0
    return f"<{shape(local)}@{'ip' if _IP.match(domain) else f'd{labels}'}>"


def helo_shape(helo: str | None, rdns: str | None, protocol: str | None) -> str | None:
    if helo is None:
        return None
    h = helo.strip().lower()
    if h.startswith("[") and _IP.match(h):
        kind = "ip-literal"
    elif _IP.match(h):
        kind = "bare-ip"
    elif "." not in h:
        kind = "single-label"
    elif rdns and h == rdns.lower():
        kind = "matches-rdns"
    else:
        kind = "fqdn"
    return f"{kind}/{(protocol or '?').upper()}"


def traits_of(
    headers: Sequence[tuple[str, str]],
    *,
    helo: str | None = None,
    rdns: str | None = None,
    protocol: str | None = None,
) -> Traits:
    """Traits from header (name as written, value) pairs in order and the receiving hop."""
    last_received = max(
        (i for i, (n, _) in enumerate(headers) if n.lower() == "received"), default=-1
    )
    names: list[str] = []
    for name, _ in headers[last_received + 1 :]:
        low = name.lower()
        if low.startswith("content-") and low != "content-type":
            continue  # follows the body's encoding (the template), not the program
        if low not in RECEIVER_HEADERS and (not names or names[-1] != name):
            names.append(name)
    first = {n.lower(): v for n, v in reversed(headers)}
    ctype = first.get("content-type") or ""
    match = _BOUNDARY.search(ctype)
    mailer = first.get("x-mailer") or first.get("user-agent")
    return Traits(
        message_id_shape(first.get("message-id")),
        shape(match.group(1)) if match else None,
        "|".join(names)[:300] if len(names) >= 3 else None,
        " ".join(mailer.split())[:120] if mailer else None,
        helo_shape(helo, rdns, protocol),
    )


def header_pairs(data: bytes) -> list[tuple[str, str]]:
    """(name as written, unfolded value) of the header block, in order."""
    end = data.find(b"\n\n")
    end2 = data.find(b"\r\n\r\n")
    cut = min(x for x in (end, end2, len(data)) if x >= 0)
    msg = BytesHeaderParser(policy=compat32).parsebytes(data[: cut + 2])
    return [(k, " ".join(str(v).split())) for k, v in msg.items()]


SCHEMA = pa.schema(
    [("message_id", pa.string())]
    + [(f, pa.string()) for f in ("msgid_shape", "boundary_shape", "header_order", "mailer", "helo_shape")]
)  # fmt: skip
BATCH = 5000


def fill_traits(con: duckdb.DuckDBPyConnection) -> int:
    """Compute ``sender_traits`` for stored messages that have none; returns how many."""
    done = 0
    while True:
        rows = con.execute(
            """SELECT m.id, r.codec, r.data, h.from_helo, h.from_rdns, h.protocol
               FROM messages m JOIN raw r ON r.id = m.id
               LEFT JOIN hops h ON h.message_id = m.id AND h.idx = m.origin_hop
               WHERE m.id NOT IN (SELECT message_id FROM sender_traits) LIMIT ?""",
            [BATCH],
        ).fetchall()
        if not rows:
            return done
        out: dict[str, list[str | None]] = {name: [] for name in SCHEMA.names}
        for mid, codec, blob, helo, rdns, proto in rows:
            try:
                t = traits_of(header_pairs(decompress(codec, blob)), helo=helo, rdns=rdns,
                              protocol=proto)  # fmt: skip
            except Exception:  # a header block the stdlib cannot read: no traits, no crash
                t = Traits(None, None, None, None, None)
            for name, value in zip(SCHEMA.names, (mid, *_values(t)), strict=True):
                out[name].append(value)
        con.register("_traits", pa.table(out, schema=SCHEMA))
        try:
            con.execute("INSERT INTO sender_traits SELECT * FROM _traits")
        finally:
            con.unregister("_traits")
        done += len(rows)


def _values(t: Traits) -> tuple[str | None, ...]:
    return (t.message_id, t.boundary, t.header_order, t.mailer, t.helo)
