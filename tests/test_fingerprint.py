"""Fingerprints: normalisation, MinHash estimates, URL/subject templates, the ingest stage."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import shared
from trapline.config import load_settings
from trapline.fingerprint.minhash import (
    KEY_FREE_BITS,
    band_keys,
    minhash_matrix,
    minhash_matrix_numpy,
    word_signatures,
)
from trapline.fingerprint.normalise import normalise, personal_tokens, shingles
from trapline.fingerprint.signature import FingerprintInput, fingerprint, fingerprint_batch
from trapline.fingerprint.templates import (
    _generalise,
    subject_template,
    url_template,
    url_templates,
)
from trapline.testing.spamgen import read_base_spam


def _spam(name: str) -> Path:
    folder = shared("mail", "spamassassin-2002", "spam")
    return next(folder.glob(name + ".*"))


def _jaccard(a: list[str], b: list[str]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb)


def test_normalise_drops_personal_tokens_numbers_and_url_hosts() -> None:
    text = "Dear John Smith, your code A8F3K2 for $19.95 at http://x7k2.cheap-meds.biz/r?id=9 (john.smith@example.com)"
    words = normalise(text, ["John Smith", "john.smith@example.com"])
    assert "john" not in words and "smith" not in words and "example" not in words
    assert "a8f3k2" not in words and words.count("#") >= 3
    assert "urlhostd" in words
    assert normalise("http://qq9.pills-now.biz/x")[0] == "urlhostd"  # rotated host, same shape


def test_copies_with_other_recipients_and_rotated_urls_fingerprint_alike() -> None:
    base = read_base_spam(_spam("00010"))  # a real "Dear ricardo1" advert

    def copy(name: str, addr: str, host: str) -> FingerprintInput:
        text = base.text.replace("ricardo1", name)
        for url in base.urls:
            text = text.replace(url, f"http://{host}/r.php?u=8472{name}")
        return FingerprintInput(addr, f"{text}\nsent to {addr}", base.subject, (), (name, addr))

    a = fingerprint(copy("maria", "maria@example.org", "a1.offers-now.com"))
    b = fingerprint(copy("oskar", "oskar.k@example.net", "zz.bestdeal.com"))
    other = fingerprint(FingerprintInput("o", read_base_spam(_spam("00018")).text))
    same = float((a.array() == b.array()).mean())
    diff = float((a.array() == other.array()).mean())
    assert same >= 0.9 > 0.1 >= diff


def test_word_signatures_estimate_true_jaccard_on_real_pairs() -> None:
    folder = shared("mail", "spamassassin-2002", "spam")
    texts = [read_base_spam(p).text for p in sorted(folder.iterdir())[:40]]
    words = [normalise(t) for t in texts if len(normalise(t)) >= 8]
    sig = word_signatures(words)
    errors = []
    for i in range(len(words) - 1):
        true = _jaccard(shingles(words[i]), shingles(words[i + 1]))
        est = float((sig[i] == sig[i + 1]).mean())
        errors.append(abs(true - est))
    # 128 permutations: standard error <= 0.045; allow 3 sigma on the worst of ~35 pairs.
    assert max(errors) < 0.14
    assert np.mean(errors) < 0.04


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.sampled_from("abcdefghij"), min_size=3, max_size=60),
    st.lists(st.sampled_from("abcdefghij"), min_size=3, max_size=60),
)
def test_rensa_and_numpy_minhash_agree_on_jaccard(a: list[str], b: list[str]) -> None:
    sets = [sorted(set(a)), sorted(set(b))]
    true = _jaccard(sets[0], sets[1])
    for matrix in (minhash_matrix(sets), minhash_matrix_numpy(sets)):
        assert abs(float((matrix[0] == matrix[1]).mean()) - true) < 0.3


def test_band_keys_equal_for_equal_bands_and_leave_low_bits_free() -> None:
    sig = np.arange(3 * 128, dtype=np.uint32).reshape(3, 128)
    sig[1, :4] = sig[0, :4]  # share band 0 only
    keys = band_keys(sig, 32, 4)
    assert keys[0, 0] == keys[1, 0] and keys[0, 1] != keys[1, 1]
    assert np.all(keys & ((1 << KEY_FREE_BITS) - 1) == 0)
    with pytest.raises(ValueError):
        band_keys(sig, 40, 4)


def test_url_templates_generalise_per_copy_parts_only() -> None:
    t1, s1 = url_template("http://click.offers.biz/k3j4h2/index.php?id=a8f3k29d0z")
    t2, _ = url_template("http://click.offers.biz/zz81xq/index.php?id=q0p1r2s3t4")
    assert t1 == t2 and s1
    assert url_template("http://www.w3.org/TR/REC-html40") == ("w3.org/tr/rec-html#", False)
    assert url_template("http://img3.x.com/a.gif")[0] == url_template("http://img7.x.com/a.gif")[0]
    assert url_templates([("http://www.w3.org/TR/html4", None)]) == ()


def test_subject_template_strips_names_and_numbers() -> None:
    assert subject_template("John, Your Order #12345 is READY!!", ["John Smith"]) == (
        "your order # is ready"
    )
    assert subject_template(None) == ""


def test_empty_text_gets_an_empty_signature_that_cannot_join() -> None:
    fps = fingerprint_batch([FingerprintInput("a", ""), FingerprintInput("b", "")])
    assert fps.n_words.tolist() == [0, 0]
    from trapline.fingerprint.minhash import is_empty

    assert is_empty(fps.matrix).all()


def test_fingerprints_are_computed_at_ingest_on_real_mail(tmp_path: Path) -> None:
    from trapline.pipeline.run import ingest
    from trapline.store.duckdb import open_store

    folder = shared("mail", "spamassassin-2002", "spam")
    files = sorted(folder.iterdir())[:30]
    src = tmp_path / "in"
    src.mkdir()
    for f in files:
        (src / f.name).write_bytes(f.read_bytes())
    settings = load_settings({"data_dir": str(tmp_path / "data")})
    assert settings["fingerprint_at_ingest"]
    ingest([src], settings=settings, workers=1)
    with open_store(tmp_path / "data") as store:
        n_msgs, n_sigs, seqs, top = store.con.execute(
            "SELECT (SELECT count(*) FROM messages), count(*), count(DISTINCT seq), max(seq) "
            "FROM signatures"
        ).fetchall()[0]
        blob_len = store.con.execute("SELECT min(octet_length(minhash)) FROM signatures").fetchall()
    assert n_msgs == n_sigs == seqs == 30
    assert top == 29  # seq numbers 0..29: contiguous, as the clustering order needs
    assert blob_len[0][0] == 128 * 4


_SIGNATURE_COLUMNS = (
    "message_id, seq, minhash, n_words, url_templates, subject_template, received_at"
)


def test_signatures_made_at_parse_time_equal_those_made_from_stored_rows(tmp_path: Path) -> None:
    """The parse workers fingerprint the records; ``fingerprint_ids`` reads the stored rows
    back. On real mail, hostile edge cases included (NULs, broken charsets, odd URLs), both
    must give the same signature to every message, or incremental runs would drift."""
    from trapline.pipeline.adapters.fingerprint import fingerprint_ids
    from trapline.pipeline.run import ingest
    from trapline.store.duckdb import open_store

    # Encoded words may carry NULs the parser keeps (the writer drops them on store).
    crafted = tmp_path / "crafted"
    crafted.mkdir()
    name = base64.b64encode(b"Ma\x00ria").decode()
    (crafted / "nul-in-name.eml").write_bytes(
        f"From: a@b.example\nTo: =?utf-8?b?{name}?= <maria@example.org>\n"
        "Subject: for you\nDate: Mon, 1 Jan 2024 10:00:00 +0000\n\n"
        "Dear Maria, buy cheap pills now at our store today, dear friends of ria\n".encode()
    )
    sources = [
        crafted,
        shared("mail", "edge-cases"),
        shared("mail", "nazario-phishing-2005"),
        shared("mail", "personal-spam-2023-2025"),
        shared("mail", "spamassassin-2002", "spam_2"),
    ]
    settings = load_settings({"data_dir": str(tmp_path / "data"), "post_ingest_stages": []})
    ingest(sources, settings=settings, workers=2)
    with open_store(tmp_path / "data") as store:
        con = store.con
        query = f"SELECT {_SIGNATURE_COLUMNS} FROM signatures ORDER BY seq"
        at_parse = con.execute(query).fetchall()
        n_messages = con.execute("SELECT count(*) FROM messages").fetchall()[0][0]
        con.execute("DELETE FROM signatures")
        fingerprint_ids(con, [row[0] for row in at_parse])
        from_rows = con.execute(query).fetchall()
    assert len(at_parse) == n_messages > 2000
    assert [row[1] for row in at_parse] == list(range(n_messages))
    assert from_rows == at_parse


def test_refingerprint_keeps_seq_and_rewrites_signatures(tmp_path: Path) -> None:
    from trapline.analyze.campaigns import analyze_campaigns
    from trapline.store.duckdb import open_store
    from trapline.testing.spamgen import SpamGenerator, load_base_spams, pick_distinct
    from trapline.testing.spamstore import store_generated

    bases = pick_distinct(load_base_spams([shared("mail", "spamassassin-2002", "spam")]))
    msgs = list(SpamGenerator(bases, n_campaigns=5, seed=2).messages(200))
    settings = load_settings({"data_dir": str(tmp_path)})
    with open_store(tmp_path) as store:
        store_generated(store.con, msgs)
        analyze_campaigns(store, settings)
        query = "SELECT message_id, seq, minhash FROM signatures ORDER BY seq"
        before = store.con.execute(query).fetchall()
        ids_before = store.con.execute(
            "SELECT id, campaign_id FROM messages ORDER BY id"
        ).fetchall()
        # Simulate signatures from an older fingerprint version.
        store.con.execute("UPDATE signatures SET minhash = repeat('\\x00', 512)::BLOB")
        run = analyze_campaigns(store, settings, refingerprint=True)
        after = store.con.execute(query).fetchall()
        ids_after = store.con.execute("SELECT id, campaign_id FROM messages ORDER BY id").fetchall()
    assert run.rebuilt and run.fingerprinted == 200
    assert after == before  # same seq, recomputed to the same values
    assert ids_after == ids_before


def test_a_fingerprint_failure_at_ingest_stores_the_messages_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trapline.analyze.campaigns import analyze_campaigns
    from trapline.fingerprint import rows
    from trapline.pipeline.run import ingest
    from trapline.store.duckdb import open_store

    def broken(messages: object) -> None:
        raise RuntimeError("a fingerprint bug")

    monkeypatch.setattr(rows, "signature_table", broken)
    folder = shared("mail", "spamassassin-2002", "spam")
    notes: list[str] = []
    settings = load_settings({"data_dir": str(tmp_path), "post_ingest_stages": []})
    summary = ingest([folder], settings=settings, workers=1, on_note=notes.append)
    assert summary.parsed == 500
    assert sum("fingerprints could not be computed" in n for n in notes) == 1
    monkeypatch.undo()
    with open_store(tmp_path) as store:
        assert store.con.execute("SELECT count(*) FROM signatures").fetchall() == [(0,)]
        run = analyze_campaigns(store, settings)
        signed = store.con.execute("SELECT count(*) FROM signatures").fetchall()
    assert run.fingerprinted == 500 and signed == [(500,)]


# --- Reference copies of the pre-optimisation implementations (commit d871a11) --------------
# Stored signatures are compared with signatures computed later, so the faster forms in
# normalise.py / templates.py / signature.py must give exactly these outputs. Do not "fix"
# these copies: they are the definition the optimised code is held to.

_REF_URL_RE = re.compile(r"(?:(?:https?|hxxps?|ftp)://|www\.)([a-z0-9.\-\[\]]+)[^\s<>\"')]*")
_REF_TABLE = {c: " " for c in range(128) if not (chr(c).isalnum() or c == ord("_"))}
_REF_TABLE.update({c: "0" for c in range(ord("0"), ord("9") + 1)})
_REF_HEX = re.compile(r"[0-9a-f]+")
_REF_DIMENSIONS = re.compile(r"\d{1,4}x\d{1,4}")
_REF_CONSONANT_RUN = re.compile(r"[^aeiouy0-9_\-.]{6,}")
_REF_SPLIT = re.compile(r"([/_\-.=&?]+)")


def _ref_host_shape(host: str) -> str:
    labels = [label for label in host.lower().strip(".[]").split(".") if label]
    if labels and labels[-1].isdigit():
        return "urlhostip"
    return "urlhost" + "abcdefghij"[min(len(labels), 9)]


def _ref_tokens(text: str) -> list[str]:
    return text.translate(_REF_TABLE).split()


def _ref_personal_tokens(recipients: Iterable[str]) -> frozenset[str]:
    tokens: set[str] = set()
    for item in recipients:
        if item:
            tokens.update(t for t in _ref_tokens(item.lower()) if len(t) >= 3)
    return frozenset(tokens)


def reference_normalise(text: str, recipients: Iterable[str] = ()) -> list[str]:
    text = text[:6000].lower()
    if "://" in text or "www." in text:
        text = _REF_URL_RE.sub(lambda m: " " + _ref_host_shape(m.group(1)) + " ", text)
    words = _ref_tokens(text)
    personal = _ref_personal_tokens(recipients)
    if personal:
        words = [w for w in words if w not in personal]
    return ["#" if "0" in w else w for w in words]


def _ref_classify(part: str) -> str:
    if not part or not part.isascii():
        return part
    if part.isdigit():
        return "<d>"
    if part.isalpha():
        if len(part) >= 8 and (
            sum(part.count(v) for v in "aeiouy") / len(part) < 0.15
            or _REF_CONSONANT_RUN.search(part)
        ):
            return "<a>"
        return part
    if not part.isalnum():
        return part
    if _REF_DIMENSIONS.fullmatch(part):
        return part
    if len(part) >= 6 and _REF_HEX.fullmatch(part):
        return "<h>"
    stem = part.rstrip("0123456789")
    if stem.isalpha() and len(stem) >= 2 and len(part) - len(stem) <= 2:
        return stem + "#"
    return "<a>"


def _ref_generalise(text: str) -> str:
    return "".join(
        p if _REF_SPLIT.fullmatch(p) else _ref_classify(p) for p in _REF_SPLIT.split(text)
    )


def reference_url_template(url: str, registered_domain: str | None = None) -> tuple[str, bool]:
    try:
        parts = urlsplit(url.strip().lower().replace("hxxp", "http"))
    except ValueError:
        return "", False
    host = (parts.hostname or "").rstrip(".")
    if host.startswith("www."):
        host = host[4:]
    domain = registered_domain.lower() if registered_domain else ".".join(host.split(".")[-2:])
    if host.replace(".", "").isdigit():
        host_t = host
    else:
        sub = host[: -len(domain)].rstrip(".") if host.endswith(domain) else ""
        host_t = (_ref_generalise(sub) + "." if sub else "") + domain
    path_t = _ref_generalise(parts.path.rstrip("/"))
    query = sorted(q.split("=", 1) for q in parts.query.split("&") if q)
    query_t = "&".join(
        f"{kv[0]}={_ref_generalise(kv[1])}" if len(kv) == 2 else kv[0] for kv in query
    )
    template = host_t + path_t + ("?" + query_t if query_t else "")
    return template, "<" in template


def reference_url_templates(urls: Iterable[tuple[str, str | None]]) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for url, domain in urls:
        template, specific = reference_url_template(url, domain)
        if specific:
            out[template] = None
            if len(out) >= 3:
                break
    return tuple(out)


def reference_subject_template(subject: str | None, recipients: Iterable[str] = ()) -> str:
    if not subject:
        return ""
    return " ".join(reference_normalise(subject, recipients))[:120]


# URL-shaped text: short parts of hex digits, letters and vowels between URL separators, so
# every class boundary (lengths 5/6/8, stems, dimensions, vowel share) is reached.
_url_part = st.text(alphabet="0123456789abcdefxkzqAEIOUy~+%\u00e9", max_size=11)
_urls = st.tuples(
    st.sampled_from(["http://", "https://", "hxxp://", "www.", "", "HTTP://www."]),
    st.lists(st.tuples(_url_part, st.sampled_from([*"/_-.=&?", "//", "-_", "?a="])), max_size=10),
).map(lambda t: t[0] + "".join(a + b for a, b in t[1]))


# Fragments that reach every branch: URL schemes and hosts, digits, hex, ids, separators,
# names that recur as recipients, non-ASCII letters, digits and whitespace.
_FRAGMENTS = [
    "http://",
    "https://",
    "hxxp://",
    "HXXPS://",
    "ftp://",
    "www.",
    "WWW.",
    "://",
    ".com",
    ".co.uk",
    "[",
    "]",
    "x7k2",
    "cheap-meds",
    "192.168.0.1",
    "/",
    "?",
    "&",
    "=",
    "_",
    "-",
    ".",
    "..",
    " ",
    "\n",
    "\t",
    "\u00a0",
    "\u2003",
    "a8f3k2",
    "deadbeef99",
    "150x40",
    "img3",
    "Maria",
    "smith",
    "John.Smith@Example.COM",
    "ab",
    "index.php",
    "strengths",
    "xqzrtplk",
    "\u00e9t\u00e9",
    "\u0663\u0664",
    "\u00b2",
    "<",
    ">",
    "'",
    '"',
    ")",
    "12345",
    "$19.95",
    "\u0130",
    "\u00df",
    "K\u212a",
]
_texts = st.lists(
    st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=12), _urls), max_size=40
).map("".join)
_recipients = st.lists(st.one_of(st.sampled_from(_FRAGMENTS), _texts), max_size=5)


@settings(max_examples=400, deadline=None)
@given(_texts, _recipients)
def test_normalise_equals_the_reference_implementation(text: str, recipients: list[str]) -> None:
    assert normalise(text, recipients) == reference_normalise(text, recipients)
    assert personal_tokens(recipients) == _ref_personal_tokens(recipients)
    assert subject_template(text, recipients) == reference_subject_template(text, recipients)


@settings(max_examples=400, deadline=None)
@given(
    _texts,
    st.one_of(st.none(), st.sampled_from(["example.com", "co.uk", "X.biz", ""])),
)
def test_url_template_equals_the_reference_implementation(url: str, domain: str | None) -> None:
    assert url_template(url, domain) == reference_url_template(url, domain)
    assert url_template(url, domain) == reference_url_template(url, domain)  # cached: same
    assert _generalise(url) == _ref_generalise(url)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_texts, st.none() | st.sampled_from(["x.com"])), max_size=6))
def test_url_templates_equal_the_reference_implementation(
    urls: list[tuple[str, str | None]],
) -> None:
    assert url_templates(urls) == reference_url_templates(urls)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_texts, st.text(max_size=20) | st.none(), _recipients), max_size=6))
def test_fingerprint_batch_equals_the_reference_fields(
    rows: list[tuple[str, str | None, list[str]]],
) -> None:
    items = [FingerprintInput(str(i), t, s, (), tuple(r)) for i, (t, s, r) in enumerate(rows)]
    fps = fingerprint_batch(items)
    words = [reference_normalise(t, r) for t, _, r in rows]
    assert fps.n_words.tolist() == [len(w) for w in words]
    assert np.array_equal(fps.matrix, word_signatures(words))
    assert list(fps.subject_templates) == [reference_subject_template(s, r) for _, s, r in rows]


def test_fingerprint_batch_leaves_the_garbage_collector_as_it_found_it() -> None:
    import gc

    items = [FingerprintInput("a", "buy cheap pills now at http://x.example/a1b2c3d4 today")]
    assert gc.isenabled()
    fingerprint_batch(items)
    assert gc.isenabled()
    gc.disable()
    try:
        fingerprint_batch(items)
        assert not gc.isenabled()  # a caller's own choice is kept
    finally:
        gc.enable()
    with pytest.raises(AttributeError):
        fingerprint_batch([None])  # type: ignore[list-item]
    assert gc.isenabled()  # re-enabled on the way out of a failure too


def test_fingerprint_batch_takes_recipient_lists_and_absent_names() -> None:
    text = "Dear Maria Lopez, your parcel 88213 waits at http://x.example/p?id=a8f3k29 now"
    recipients = ["Maria Lopez", "maria.lopez@example.org"]
    ref = reference_normalise(text, recipients)
    as_list = FingerprintInput("a", text, "Maria: parcel", (), recipients)  # type: ignore[arg-type]
    with_none = FingerprintInput("b", text, "Maria: parcel", (), (None, *recipients))  # type: ignore[arg-type]
    fps = fingerprint_batch([as_list, with_none])
    assert fps.n_words.tolist() == [len(ref), len(ref)]
    assert np.array_equal(fps.matrix, word_signatures([ref, ref]))
    assert fps.subject_templates == ("parcel", "parcel")
