"""Sending-software traits: shapes keep what a program fixes and drop what it randomises."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import shared
from trapline.analyze.sender_traits import (
    header_pairs,
    helo_shape,
    message_id_shape,
    shape,
    traits_of,
)


def test_outlook_express_ids_share_one_shape() -> None:
    a = message_id_shape("<000d01c9443a$5e1b2c30$0a01a8c0@user>")
    b = message_id_shape("<00a101c94407$a0e1b2c0$6400a8c0@bkxq>")
    assert a == b == "<h12$h8$h8@d1>"
    assert message_id_shape("<20081111213005.4A2B3C@mx.example.org>") == "<d14.H6@d3>"
    assert message_id_shape(None) is None


def test_boundary_and_helo_shapes() -> None:
    assert shape("----=_NextPart_000_0006_01C943D2.5F3E1A80") == "----=_m8_d3_d4_H8.H8"
    assert helo_shape("mail.example.org", "mail.example.org", "esmtp") == "matches-rdns/ESMTP"
    assert helo_shape("bkxqwe", None, "SMTP") == "single-label/SMTP"
    assert helo_shape("81.2.3.4", "x", "SMTP") == "bare-ip/SMTP"
    assert helo_shape(None, None, None) is None


def test_header_order_skips_receiver_headers_and_content_encoding() -> None:
    headers = [
        ("Return-Path", "<a@b>"), ("Received", "from x by y"), ("Message-Id", "<1.2@x.y>"),
        ("From", "a@b"), ("To", "c@d"), ("Content-Transfer-Encoding", "7bit"),
        ("X-Spam-Status", "No"), ("Subject", "hi"), ("X-Mailer", "The Bat!  v3"),
    ]  # fmt: skip
    t = traits_of(headers, helo="[1.2.3.4]", protocol="SMTP")
    assert t.header_order == "Message-Id|From|To|Subject|X-Mailer"
    assert t.mailer == "The Bat! v3"


def test_real_spamassassin_message_reads_without_error() -> None:
    path = next(iter(sorted(shared("mail", "spamassassin-2002", "spam").iterdir())))
    pairs = header_pairs(path.read_bytes())
    assert pairs and all(isinstance(n, str) for n, _ in pairs)
    t = traits_of(pairs)
    assert t.header_order is not None


def test_webmail_relayed_scams_do_not_link_as_one_botnet(tmp_path: Path) -> None:
    """The personal corpus is modern scam mail sent through one webmail provider: identical
    software on a handful of provider hosts, which is a relay, not bots (0 links wanted)."""
    from click.testing import CliRunner

    from trapline.cli.main import cli

    corpus = shared("mail", "personal-spam-2023-2025")
    d = ["--data-dir", str(tmp_path), "-q"]
    for args in (["ingest", str(corpus)], ["analyze", "campaigns"]):
        assert CliRunner().invoke(cli, d + args).exit_code == 0
    out = CliRunner().invoke(cli, [*d, "analyze", "botnets", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["links"] == 0
