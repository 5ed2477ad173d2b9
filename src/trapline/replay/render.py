"""One replay message: a real spam body under the headers a family's software would write.

Pure functions of their arguments (the random source included), so a seed fixes every byte.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from trapline.replay.model import Style

_KEEP = {b"subject", b"from", b"content-type", b"content-transfer-encoding"}
_BOUNDARY = re.compile(rb'boundary\s*=\s*"?([^";\r\n]+)"?', re.IGNORECASE)
_HEX = "0123456789abcdef"
_BIG_ISPS = ("mail.yahoo.com", "smtp.hotmail.com", "mx.aol.com", "smtp.comcast.net")
_MAILERS = (
    None,
    "Microsoft CDO for Windows 2000",
    "PHP/5.2.6",
    "Mozilla Thunderbird 2.0.0.17 (Windows/20080914)",
    "Lotus Notes Release 7.0.2",
)


@dataclass(slots=True, frozen=True)
class Template:
    """A real spam message cut into the parts a campaign keeps: a few headers and the body."""

    source: str
    headers: tuple[tuple[str, bytes], ...]  # (name, raw unfolded value) of the kept headers
    body: bytes
    boundary: bytes | None  # top-level MIME boundary, rewritten per message
    original: bytes = b""  # the message as found, for near-duplicate checks between templates


@dataclass(slots=True, frozen=True)
class Bot:
    ip: str
    asn: int
    rdns: str | None  # None: no reverse DNS ("unknown" in the Received line)


def split_template(data: bytes, source: str) -> Template | None:
    """The kept headers and body of one message; None when it has no header/body split."""
    data = data.replace(b"\r\n", b"\n")
    if data.startswith(b"From "):
        data = data.split(b"\n", 1)[-1]  # one-message-per-file corpora keep the postmark
    head, sep, body = data.partition(b"\n\n")
    if not sep or not body.strip():
        return None
    kept: list[tuple[str, bytes]] = []
    for line in re.split(rb"\n(?![ \t])", head):
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in _KEEP:
            value = re.sub(rb"\n[ \t]+", b" ", value).strip()
            kept.append((name.strip().decode("ascii", "replace").title(), value))
    ctype = next((v for n, v in kept if n == "Content-Type"), b"")
    match = _BOUNDARY.search(ctype)
    boundary = match.group(1).strip() if match else None
    if boundary is not None and len(boundary) < 6:
        boundary = None  # too short to replace safely throughout the body
    return Template(source, tuple(kept), body, boundary, data)


def _hexs(rng: random.Random, n: int, upper: bool = False) -> str:
    text = "".join(rng.choice(_HEX) for _ in range(n))
    return text.upper() if upper else text


def _word(rng: random.Random, lo: int = 5, hi: int = 9) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(lo, hi)))


def _domain_of(template: Template) -> str:
    value = next((v for n, v in template.headers if n == "From"), b"")
    match = re.search(rb"@([A-Za-z0-9.-]+\.[A-Za-z]{2,})", value)
    return match.group(1).decode().lower() if match else "mail.com"


def message_id(style: str, rng: random.Random, domain: str, helo: str) -> str:
    """A Message-ID in one family's syntax."""
    if style == "oe":
        return (
            f"<00{_hexs(rng, 2)}01c9{_hexs(rng, 4)}${_hexs(rng, 8)}${_hexs(rng, 8)}@{_word(rng)}>"
        )
    if style == "digits-hex":
        return f"<{rng.randrange(10**13, 10**14)}.{_hexs(rng, 6)}@{domain}>"
    if style == "lower-host":
        return f"<{_word(rng, 10, 10)}.{_word(rng, 6, 6)}@{domain}>"
    if style == "hex-dot":
        return f"<{_hexs(rng, 8, True)}.{_hexs(rng, 4, True)}@{domain}>"
    if style == "alnum":
        chars = string.ascii_letters + string.digits
        return f"<{''.join(rng.choice(chars) for _ in range(16))}@{domain}>"
    if style == "uuid":
        parts = (_hexs(rng, 8), _hexs(rng, 4), "4" + _hexs(rng, 3), _hexs(rng, 4), _hexs(rng, 12))
        return f"<{'-'.join(parts)}@{domain}>"
    if style == "aol":
        return f"<{rng.randrange(10**7, 10**8)}.{_hexs(rng, 4, True)}.{_word(rng, 3, 3)}@aol.com>"
    # "mta": an ordinary server's form (independent senders on rented hosts)
    return f"<{rng.randrange(10**9, 2 * 10**9)}.{rng.randrange(1000, 99999)}.{helo}>"


def boundary(style: str, rng: random.Random) -> str:
    """A MIME boundary in one family's shape."""
    if style == "oe":
        return (
            f"----=_NextPart_000_{_hexs(rng, 4, True)}_{_hexs(rng, 8, True)}.{_hexs(rng, 8, True)}"
        )
    if style == "javamail":
        return f"----=_Part_{rng.randrange(1, 9999)}_{rng.randrange(10**8)}.{rng.randrange(10**12, 10**13)}"
    if style == "hex32":
        return _hexs(rng, 32)
    if style == "equals":
        chars = string.ascii_letters + string.digits
        return "=_" + "".join(rng.choice(chars) for _ in range(12))
    if style == "dashes-digits":
        return "-" * 12 + "".join(rng.choice(string.digits) for _ in range(24))
    return f"==_{_hexs(rng, 16)}_=="  # independent senders' MTA-library form


def helo(style: str, rng: random.Random, bot: Bot) -> str:
    """What the bot says after HELO/EHLO."""
    if style == "ip-literal":
        return f"[{bot.ip}]"
    if style == "single-word":
        return _word(rng)
    if style == "big-isp":
        return rng.choice(_BIG_ISPS)
    if style == "rdns" and bot.rdns:
        return bot.rdns
    return f"{_word(rng)}.{_word(rng, 4, 7)}.com"


def rfc2822(when: datetime) -> str:
    return when.strftime("%a, %d %b %Y %H:%M:%S %z")


def random_style(rng: random.Random) -> Style:
    """A one-off style for an independent sender (an ordinary MTA library, per campaign)."""
    order = ["Message-ID", "From", "To", "Subject", "Date", "MIME-Version", "Content-Type"]
    rng.shuffle(order)
    return Style("mta", rng.choice(_MAILERS), "mta", (*order, "X-Mailer"), "rdns", "ESMTP")


def render(
    template: Template,
    style: Style,
    *,
    bot: Bot,
    rcpt: str,
    received: datetime,
    rng: random.Random,
    mx: str,
    label: str,
) -> bytes:
    """The bytes of one replayed message as the trap's MTA would have stored them."""
    domain = _domain_of(template)
    said = helo(style.helo, rng, bot)
    # The bot's own clock and zone: a few seconds to minutes early, some clocks days off.
    zone = timezone(timedelta(hours=rng.choice((-8, -5, -3, 0, 1, 2, 3, 5, 8))))
    skew = timedelta(seconds=rng.randint(5, 300))
    if rng.random() < 0.05:
        skew += timedelta(days=rng.choice((-30, -3, -1, 1, 2, 400)))
    values: dict[str, bytes] = {n: v for n, v in template.headers}
    values["Message-Id"] = message_id(style.message_id, rng, domain, said).encode()
    values["Date"] = rfc2822((received - skew).astimezone(zone)).encode()
    values["To"] = f"<{rcpt}>".encode()
    values["MIME-Version"] = b"1.0"
    values.setdefault("Content-Type", b'text/plain; charset="us-ascii"')
    values["Return-Path"] = f"<{_word(rng)}@{domain}>".encode()
    if style.mailer:
        values["X-Mailer"] = values["User-Agent"] = style.mailer.encode()
    if style.mailer and style.mailer.startswith("Microsoft Outlook Express"):
        values["X-Priority"], values["X-MSMail-Priority"] = b"3", b"Normal"
        values["X-MimeOLE"] = b"Produced By Microsoft MimeOLE V6.00.2900.2180"
    body = template.body
    if template.boundary is not None:
        new = boundary(style.boundary, rng).encode()
        values["Content-Type"] = values["Content-Type"].replace(template.boundary, new)
        body = body.replace(template.boundary, new)
    rdns = bot.rdns or "unknown"
    lines = [
        f"X-Trapline-Replay: {label}".encode(),
        (
            f"Received: from {said} ({rdns} [{bot.ip}])\n\tby {mx} (Postfix) with {style.smtp} "
            f"id {_hexs(rng, 10, True)}\n\tfor <{rcpt}>; {rfc2822(received)} (UTC)"
        ).encode(),
    ]
    for name in style.order:
        key = "Message-Id" if name.lower() == "message-id" else name
        if name in ("Content-Type", "From", "Subject", "Content-Transfer-Encoding"):
            key = name
        value = values.get(key) or values.get(key.title())
        if value is None:
            continue
        lines.append(name.encode() + b": " + value)
        if name == "Content-Type" and "Content-Transfer-Encoding" in values:
            lines.append(b"Content-Transfer-Encoding: " + values["Content-Transfer-Encoding"])
    return b"\n".join(lines) + b"\n\n" + body
