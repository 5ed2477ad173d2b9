"""The McColo replay's world: botnets as the public record of 2008 describes them.

Shares are each family's part of spam volume before 11 Nov 2008 (Marshal TRACE, March 2008;
CBL on the eve of the takedown), what happened to it that night (CBL, Marshal8e6, MessageLabs)
and how it came back. docs/replay.md lists the sources beside each number. The sending-software
traits are modelled, not copied from captured samples: each family gets one consistent style of
the kind real bots had (forged Outlook Express headers, fixed header order, one HELO habit),
so that the replay carries the same kind of evidence real trap mail carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


START = utc(2008, 10, 1)
END = utc(2009, 1, 1)  # exclusive: the replay covers 2008-10-01 .. 2008-12-31
DROP_AT = utc(2008, 11, 11, 21, 30)  # de-peering by Global Crossing and Hurricane Electric
MCCOLO_ASN = 26780
MCCOLO_PREFIXES = ("208.66.192.0/22", "208.72.168.0/21", "208.72.173.0/24")


@dataclass(slots=True, frozen=True)
class Phase:
    """From ``at`` on, the family sends at ``level`` x its pre-takedown rate (linear ramps
    between consecutive phases when ``ramp`` is set on the later one)."""

    at: datetime
    level: float
    ramp: bool = False


@dataclass(slots=True, frozen=True)
class Style:
    """How a family's sending software writes a message (see replay/render.py)."""

    message_id: str  # oe | digits-hex | lower-host | hex-dot | alnum | uuid | aol
    mailer: str | None  # X-Mailer value, None = no header
    boundary: str  # oe | javamail | hex32 | equals | dashes-digits | none-kept
    order: tuple[str, ...]  # header names in the order (and case) the bot writes them
    helo: str  # ip-literal | single-word | big-isp | rdns | fqdn-random
    smtp: str = "SMTP"  # protocol word the receiving MTA records (HELO vs EHLO)


@dataclass(slots=True, frozen=True)
class Family:
    name: str
    share: float  # share of all spam before the takedown
    mccolo: bool  # C&C servers inside AS26780
    phases: tuple[Phase, ...]  # level changes after the start (level 1.0)
    style: Style
    cc_ips: int = 3  # C&C addresses the feed lists


_OE_ORDER = (
    "Message-ID",
    "From",
    "To",
    "Subject",
    "Date",
    "MIME-Version",
    "Content-Type",
    "X-Priority",
    "X-MSMail-Priority",
    "X-Mailer",
    "X-MimeOLE",
)

FAMILIES: tuple[Family, ...] = (
    Family(
        "Srizbi",
        0.35,
        True,
        (
            Phase(DROP_AT, 0.02),
            Phase(utc(2008, 11, 25, 6), 0.55),  # revived from other hosting
            Phase(utc(2008, 11, 27, 0), 0.01),  # cut again: "completely defunct"
        ),
        Style("oe", "Microsoft Outlook Express 6.00.2900.2180", "oe", _OE_ORDER, "ip-literal"),
        cc_ips=4,
    ),
    Family(
        "Rustock",
        0.20,
        True,
        (Phase(DROP_AT, 0.03), Phase(utc(2008, 12, 1), 0.03), Phase(END, 0.6, ramp=True)),
        Style(
            "digits-hex",
            None,
            "hex32",
            (
                "Date",
                "From",
                "User-Agent",
                "MIME-Version",
                "To",
                "Subject",
                "Content-Type",
                "Message-Id",
            ),
            "single-word",
            "ESMTP",
        ),
    ),
    Family(
        "Mega-D",
        0.11,
        True,
        (Phase(DROP_AT, 0.01), Phase(utc(2008, 11, 25), 0.01), Phase(END, 0.8, ramp=True)),
        Style(
            "lower-host",
            "Microsoft Office Outlook, Build 11.0.5510",
            "javamail",
            (
                "Message-ID",
                "Date",
                "From",
                "X-Mailer",
                "MIME-Version",
                "To",
                "Subject",
                "Content-Type",
            ),
            "big-isp",
        ),
    ),
    Family(
        "Asprox",
        0.02,
        True,
        (Phase(DROP_AT, 0.03),),
        Style(
            "uuid",
            None,
            "equals",
            ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"),
            "fqdn-random",
        ),
        cc_ips=2,
    ),
    Family(
        "Cutwail",
        0.14,
        False,
        (Phase(utc(2008, 11, 15), 1.0), Phase(END, 1.4, ramp=True)),
        Style(
            "hex-dot",
            None,
            "dashes-digits",
            ("Message-ID", "From", "To", "Subject", "Date", "MIME-Version", "Content-Type"),
            "rdns",
            "ESMTP",
        ),
    ),
    Family(
        "Pushdo",
        0.06,
        False,
        (Phase(utc(2008, 11, 15), 1.0), Phase(END, 1.2, ramp=True)),
        Style(
            "hex-dot",
            None,
            "dashes-digits",
            ("Date", "From", "Subject", "To", "Message-ID", "MIME-Version", "Content-Type"),
            "rdns",
        ),
    ),
    Family(
        "Hacktool.Spammer",
        0.05,
        False,
        (),
        Style(
            "alnum",
            "Microsoft Outlook Express 6.00.2800.1106",
            "oe",
            (
                "Return-Path",
                "Message-ID",
                "From",
                "To",
                "Subject",
                "Date",
                "MIME-Version",
                "Content-Type",
                "X-Mailer",
            ),
            "single-word",
        ),
    ),
    Family(
        "Bobax",
        0.03,
        False,
        (Phase(DROP_AT, 0.5),),  # "about half gone within hours" (CBL)
        Style(
            "aol",
            "AOL 9.0 for Windows US sub 5035",
            "equals",
            (
                "From",
                "Date",
                "To",
                "Subject",
                "MIME-Version",
                "Content-Type",
                "X-Mailer",
                "Message-ID",
            ),
            "ip-literal",
        ),
    ),
    Family(
        "Storm",
        0.02,
        False,
        (),
        Style(
            "oe",
            "Microsoft Outlook Express 6.00.2900.3138",
            "oe",
            (
                "Message-ID",
                "From",
                "To",
                "Subject",
                "Date",
                "MIME-Version",
                "Content-Type",
                "X-Mailer",
                "X-MimeOLE",
            ),
            "rdns",
        ),
    ),
)
# The rest of the volume: independent spammers on rented servers, one style per campaign.
INDEPENDENT_SHARE = 1.0 - sum(f.share for f in FAMILIES)


def level_at(family: Family, at: datetime) -> float:
    """The family's sending level (1.0 = its pre-takedown rate) at ``at``."""
    level, since = 1.0, START
    for phase in family.phases:
        if at < phase.at:
            if phase.ramp:
                frac = (at - since).total_seconds() / max(1.0, (phase.at - since).total_seconds())
                return level + (phase.level - level) * frac
            return level
        level, since = phase.level, phase.at
    return level
