"""parse() on real messages: hand-checked fixtures, then whole real corpora.

Each ``tests/data/eml/<kind>/<name>.eml`` has a sibling ``<name>.expected.json`` written by reading
the message (see tests/data/eml/SOURCE.md); only the keys present are checked.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import TESTS_DATA, shared
from trapline.ingest.headers import date_flags
from trapline.ingest.parse import ParseLimits, parse, parse_many
from trapline.model import Message, Quarantined, RawMessage, message_id_of

EML = TESTS_DATA / "eml"
FIXTURES = sorted(EML.glob("*/*.expected.json"))
# Fixed clock so "far-future" does not depend on when the suite runs.
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _eml_for(expected: Path) -> Path:
    return expected.with_name(expected.name.replace(".expected.json", ".eml"))


def _check(msg: Message | Quarantined, exp: dict[str, object]) -> None:
    if "quarantined" in exp:
        assert isinstance(msg, Quarantined), msg
        assert msg.reason == exp["quarantined"]
        return
    assert isinstance(msg, Message), msg
    if "subject" in exp:
        assert (msg.subject or "").strip() == exp["subject"]
    if "message_id" in exp:
        assert msg.message_id == exp["message_id"]
    if "from" in exp:
        sender = exp["from"]
        assert isinstance(sender, dict)
        assert (msg.from_.name, msg.from_.addr, msg.from_.domain) == (
            sender["name"],
            sender["addr"],
            sender["domain"],
        )
    if "to" in exp:
        assert [a.addr for a in msg.to] == exp["to"]
    if "cc" in exp:
        assert [a.addr for a in msg.cc] == exp["cc"]
    if "date" in exp:
        assert msg.date is not None and msg.date.isoformat() == exp["date"]
    if "date_flags" in exp:
        assert list(msg.date_flags) == exp["date_flags"]
    if "html" in exp:
        assert (msg.html is not None) == exp["html"]
    if "attachments" in exp:
        got = [
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "sha256": a.sha256,
            }
            for a in msg.attachments
        ]
        assert got == exp["attachments"]
    if "attachment_names" in exp:
        assert [a.filename for a in msg.attachments] == exp["attachment_names"]
    for snippet in exp.get("text_contains", []):  # type: ignore[attr-defined]
        assert snippet in msg.text
    for snippet in exp.get("text_excludes", []):  # type: ignore[attr-defined]
        assert snippet not in msg.text
    if "urls" in exp:
        assert [u.url for u in msg.urls] == exp["urls"]
    found = {u.url for u in msg.urls}
    for want in exp.get("urls_include", []):  # type: ignore[attr-defined]
        # The same URL may be found as an href and again in the text: one record must match.
        same = [u for u in msg.urls if u.url == want["url"]]
        assert same, sorted(found)
        assert any(all(getattr(u, k) == v for k, v in want.items()) for u in same), (want, same)
    for url in exp.get("urls_exclude", []):  # type: ignore[attr-defined]
        assert url not in found
    if "defects" in exp:
        assert list(msg.defects) == exp["defects"]
    for code in exp.get("defects_include", []):  # type: ignore[attr-defined]
        assert code in msg.defects
    for code in exp.get("defects_exclude", []):  # type: ignore[attr-defined]
        assert code not in msg.defects


@pytest.mark.parametrize("expected", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixture_matches_hand_checked_fields(expected: Path) -> None:
    exp = json.loads(expected.read_text(encoding="utf-8"))
    data = _eml_for(expected).read_bytes()
    msg = parse(RawMessage(data, str(expected)), now=NOW)
    assert msg.id == message_id_of(data)
    assert msg.size == len(data)
    if "known_gap" in exp:
        try:
            _check(msg, exp)
        except AssertionError:
            pytest.xfail(exp["known_gap"])
        pytest.fail(f"known gap closed, remove 'known_gap' from {expected.name}")
    _check(msg, exp)


def test_fixture_set_covers_every_kind() -> None:
    kinds = {p.parent.name for p in FIXTURES}
    assert {"ham", "spam", "malformed"} <= kinds
    assert len(FIXTURES) >= 12


def test_batch_equals_one_by_one() -> None:
    raws = [RawMessage(_eml_for(p).read_bytes(), p.name) for p in FIXTURES]
    batch = parse_many(raws, now=NOW)
    single = [parse(r, now=NOW) for r in raws]
    assert batch == single
    # Fed to the fast parser in slices of about one message: the same records, same order.
    sliced = parse_many(raws, now=NOW, limits=ParseLimits(max_chunk_bytes=4096))
    assert sliced == batch
    assert [m.id for m in batch] == [r.id for r in raws]


def test_ids_from_the_caller_are_used_and_give_the_same_records() -> None:
    raws = [RawMessage(_eml_for(p).read_bytes(), p.name) for p in FIXTURES]
    ids = [r.id for r in raws]
    batch = parse_many(raws, now=NOW)
    sliced = ParseLimits(max_chunk_bytes=4096)  # ids must follow their messages into each slice
    assert parse_many(raws, now=NOW, ids=ids) == batch
    assert parse_many(raws, now=NOW, ids=ids, limits=sliced) == batch
    # The caller's ids are taken as given (the pipeline hashed these very bytes)...
    fake = [f"{i:064x}" for i in range(len(raws))]
    given = parse_many(raws, now=NOW, ids=fake, limits=sliced)
    assert [m.id for m in given if isinstance(m, Message)] == [
        f for f, m in zip(fake, batch, strict=True) if isinstance(m, Message)
    ]
    # ...unless they cannot belong to these messages.
    assert parse_many(raws, now=NOW, ids=ids[:-1]) == batch


def test_mbox_postmark_is_skipped_but_hashed() -> None:
    data = (EML / "spam" / "sa-spam-00001.eml").read_bytes()
    assert data.startswith(b"From ")
    with_postmark = parse(RawMessage(data, "a"), now=NOW)
    without = parse(RawMessage(data[data.index(b"\n") + 1 :], "b"), now=NOW)
    assert isinstance(with_postmark, Message) and isinstance(without, Message)
    assert with_postmark.id != without.id  # the id hashes the full bytes
    assert with_postmark.subject == without.subject == "Life Insurance - Why Pay More?"
    assert not any(name.startswith("From ") for name, _ in with_postmark.headers)


def test_headers_keep_received_order() -> None:
    data = (EML / "ham" / "sa-easy_ham-00001.eml").read_bytes()
    msg = parse(RawMessage(data, "x"), now=NOW)
    assert isinstance(msg, Message)
    received = [v for n, v in msg.headers if n.lower() == "received"]
    # The file's first Received line (top of the chain) comes first.
    assert received[0].startswith("from localhost (localhost [127.0.0.1])")
    assert len(received) == len(msg.hops) >= 2


@pytest.mark.parametrize("name", ["ham/sa-easy_ham-00001.eml", "spam/mp-mail_test_7.eml"])
def test_headers_in_wire_order(name: str) -> None:
    data = (EML / name).read_bytes()
    msg = parse(RawMessage(data, name), now=NOW)
    assert isinstance(msg, Message)
    # The stdlib's header parser is the independent reference for the field order.
    body = data[data.index(b"\n") + 1 :] if data.startswith(b"From ") else data
    reference = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(body)
    assert [n for n, _ in msg.headers] == reference.keys()


def test_edge_cases_each_return_a_record() -> None:
    root = shared("mail", "edge-cases")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    assert len(files) >= 160
    raws = [RawMessage(p.read_bytes(), str(p)) for p in files]
    results = parse_many(raws, now=NOW)
    assert len(results) == len(raws)
    for raw, result in zip(raws, results, strict=True):
        assert isinstance(result, Message | Quarantined)
        assert result.id == raw.id
    quarantined = {Path(r.source).name: r.reason for r in results if isinstance(r, Quarantined)}
    # Only the files that are not mail: licence texts, commit ids, an Outlook .msg, an SMTP
    # transcript and a one-byte file.
    assert set(quarantined) <= {
        "SOURCE.txt",
        "COMMIT",
        "LICENSE",
        "LICENSE.txt",
        "mail_outlook_1",
        "bsmtp",
        "bsmtpnull",
    }
    assert quarantined["mail_outlook_1"] == "binary"
    assert quarantined["bsmtpnull"] == "empty"


@pytest.mark.slow
def test_spamassassin_corpus_parses_without_quarantine() -> None:
    root = shared("mail", "spamassassin-2002")
    files = sorted(p for p in root.glob("*/*") if p.is_file())
    assert len(files) == 6046
    parsed = 0
    fallback = 0
    with_origin = 0
    headers_only = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    for start in range(0, len(files), 500):
        chunk = files[start : start + 500]
        raws = [RawMessage(p.read_bytes(), str(p)) for p in chunk]
        for raw, msg in zip(raws, parse_many(raws, now=NOW), strict=True):
            assert isinstance(msg, Message), (raw.source, msg)
            assert msg.id == raw.id
            # Every From that holds an address yields it (three spams send "" <> or nothing).
            from_values = [v for n, v in msg.headers if n.lower() == "from"]
            assert msg.from_.addr or not any("@" in v for v in from_values), raw.source
            parsed += 1
            fallback += "fallback-parser" in msg.defects
            # Field order equals the stdlib header parser's, message by message.
            body = raw.data
            if body.startswith(b"From "):  # most files start with an mbox postmark
                body = body[body.index(b"\n") + 1 :]
            assert [n for n, _ in msg.headers] == headers_only.parsebytes(body).keys()
            with_origin += msg.origin_ip is not None
    assert parsed == 6046
    # The fast parser handles nearly everything; the fallback is for the broken few.
    assert 0 < fallback < 100
    assert with_origin > 5000  # the hand-checked origin table lives with the Received tests


def test_personal_spam_2023_2025_parses() -> None:
    root = shared("mail", "personal-spam-2023-2025")
    files = sorted(p for p in root.rglob("*.eml"))
    assert len(files) >= 200
    raws = [RawMessage(p.read_bytes(), str(p)) for p in files]
    results = parse_many(raws, now=NOW)
    assert all(isinstance(r, Message) for r in results)
    # Modern spam: every non-empty Subject decodes, none is left as an encoded-word.
    for raw, msg in zip(raws, results, strict=True):
        assert isinstance(msg, Message)
        header = [v for n, v in msg.headers if n.lower() == "subject"]
        if header and header[0].strip():
            assert msg.subject, raw.source
            assert "=?utf-8?" not in msg.subject.lower(), raw.source


def test_unparseable_date_from_the_corpus() -> None:
    # "Date: 2002/09/14 Sat 02:29:32 CDT": spamware's own format, not RFC 5322 §3.3.
    path = shared("mail", "spamassassin-2002", "spam", "00302.544366fa4cd0f5d210dd8443a1c2c95a")
    msg = parse(RawMessage(path.read_bytes(), str(path)), now=NOW)
    assert isinstance(msg, Message)
    assert msg.date is None
    assert msg.date_flags == ("unparseable",)
    assert msg.received_at is not None and msg.received_at_source == "received"
    assert msg.received_at.year == 2002


def test_missing_date_uses_the_received_time() -> None:
    data = (EML / "ham" / "sat-nice-crlf-endings.eml").read_bytes()
    without = b"".join(
        line for line in data.splitlines(keepends=True) if not line.startswith(b"Date:")
    )
    msg = parse(RawMessage(without, "x"), now=NOW)
    assert isinstance(msg, Message)
    assert msg.date is None and msg.date_flags == ("missing",)
    assert "no-date" in msg.defects
    assert msg.received_at_source == "received"


def test_date_flag_rules() -> None:
    recv = datetime(2002, 8, 22, 12, 0, tzinfo=UTC)
    day = timedelta(days=1)
    assert date_flags(recv + day, True, recv, NOW) == ()  # within the 2-day slack
    assert date_flags(recv + 3 * day, True, recv, NOW) == ("far-future",)
    assert date_flags(recv + 8 * day, True, recv, NOW) == ("far-future", "skewed")
    assert date_flags(recv - 8 * day, True, recv, NOW) == ("skewed",)
    assert date_flags(NOW + day, True, None, NOW) == ("far-future",)  # ahead of our clock
    assert date_flags(datetime(102, 8, 22, tzinfo=UTC), True, None, NOW) == ("before-1990",)
    assert date_flags(None, False, recv, NOW) == ("missing",)
    assert date_flags(None, True, recv, NOW) == ("unparseable",)


def test_forged_date_does_not_become_the_received_time() -> None:
    data = (EML / "spam" / "sa-spam-00023.eml").read_bytes()  # Date year 0102
    headerless = data.replace(b"\nReceived:", b"\nX-Was-Received:")
    msg = parse(RawMessage(headerless, "x"), now=NOW)
    assert isinstance(msg, Message)
    assert msg.hops == ()
    assert msg.date is not None and msg.date.year == 102
    assert msg.received_at is None and msg.received_at_source == "none"
