"""The trap-address codec: round trips, mangling, forgeries, typos, re-keying, the site secret."""

from __future__ import annotations

import os
import random
import re
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trapline.errors import ConfigError, TrapAddressError
from trapline.traps import addresses
from trapline.traps.names import FIRST_NAMES, LAST_NAMES

SECRET = bytes.fromhex("8f" * 16 + "42" * 16)
OTHER = bytes.fromhex("11" * 32)
DOMAIN = "traps.example.org"


def test_vocabularies_are_fixed_size_unique_lowercase() -> None:
    for words in (FIRST_NAMES, LAST_NAMES):
        assert len(words) == 256 == len(set(words))
        assert all(re.fullmatch(r"[a-z]+", w) for w in words)


@given(st.integers(0, addresses.MAX_VISIT), st.sampled_from(addresses.STYLES))
@settings(max_examples=300, deadline=None)
def test_every_visit_round_trips_in_every_style(visit: int, style: addresses.Style) -> None:
    addr = addresses.encode(visit, SECRET, DOMAIN, style)
    got = addresses.decode(addr, SECRET, [DOMAIN])
    assert got.valid and got.visit == visit and got.style == style
    assert len(addr.partition("@")[0]) <= 64  # RFC 5321 §4.5.3.1.1 local-part limit


def test_addresses_look_like_mailboxes_not_hex_blobs() -> None:
    sample = [addresses.encode(v, SECRET, DOMAIN) for v in range(300)]
    styles = {addresses.decode(a, SECRET).style for a in sample}
    assert styles == set(addresses.STYLES)  # a site's addresses mix every style
    for addr in sample:
        local = addr.partition("@")[0]
        assert not re.fullmatch(r"[0-9a-f]{8,}", local.replace(".", ""))
        letters = sum(c.isalpha() for c in local)
        assert letters / len(local) > 0.7
    names = [a for a in sample if addresses.decode(a, SECRET).style == "name"]
    first, last = names[0].split(".")[:2]
    assert first in FIRST_NAMES and last in LAST_NAMES
    # consecutive visits do not share a recognisable prefix
    prefixes = {a[:6] for a in sample[:50]}
    assert len(prefixes) > 40


def test_harvester_mangling_is_undone() -> None:
    addr = addresses.encode(1234, SECRET, DOMAIN, "name")
    local, _, domain = addr.partition("@")
    for mangled in (
        addr.upper(),
        addr.title(),
        f"{local}.@{domain}.",
        f"{local}...@{domain}",
        f"<{addr}>",
        f"mailto:{addr}",
        f"MAILTO:{addr.upper()}?subject=hello",
        f"  {addr}\n",
    ):
        got = addresses.decode(mangled, SECRET, [DOMAIN])
        assert got.valid and got.visit == 1234, mangled


def test_rekeyed_addresses_do_not_decode() -> None:
    for v in range(200):
        addr = addresses.encode(v, SECRET, DOMAIN)
        got = addresses.decode(addr, OTHER)
        assert not got.valid and got.reason in {"bad-mac", "unparseable"}


def _typos(local: str, rng: random.Random) -> list[str]:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    out = []
    for i in range(len(local)):
        if local[i] == ".":
            continue
        swap = rng.choice([c for c in alphabet if c != local[i]])
        out.append(local[:i] + swap + local[i + 1 :])  # substitution
        out.append(local[:i] + local[i + 1 :])  # deletion
    for i in range(len(local) - 1):
        if local[i] != local[i + 1]:
            out.append(local[:i] + local[i + 1] + local[i] + local[i + 2 :])  # transposition
    return out


def test_single_typos_never_decode_to_a_visit() -> None:
    rng = random.Random(7)
    tried = 0
    for v in (0, 1, 99, 4242, addresses.MAX_VISIT):
        for style in addresses.STYLES:
            addr = addresses.encode(v, SECRET, DOMAIN, style)
            local = addr.partition("@")[0]
            for typo in _typos(local, rng):
                tried += 1
                assert not addresses.decode(f"{typo}@{DOMAIN}", SECRET).valid, typo
    assert tried > 1000


def test_random_forgeries_in_valid_shape_fail_at_the_stated_rate() -> None:
    """Forge 200,000 well-formed local parts (right shape, random content): each passes the MAC
    with probability 2^-40, so seeing any success would mean the MAC is broken."""
    rng = random.Random(2026)
    valid = 0
    n = 200_000
    for _ in range(n):
        value = rng.getrandbits(64)
        style = rng.choice(addresses.STYLES)
        local = addresses._render(value, style)
        assert addresses._parse(local) is not None  # the forgery is in a decodable shape
        valid += addresses.decode(f"{local}@{DOMAIN}", SECRET).valid
    assert valid == 0
    assert addresses.FORGERY_PROBABILITY == 2.0**-40
    assert n * addresses.FORGERY_PROBABILITY < 1e-6  # expected false accepts in this sample


def test_non_trap_domains_and_garbage_do_not_decode() -> None:
    addr = addresses.encode(5, SECRET, DOMAIN)
    other = addr.replace(DOMAIN, "gmail.com")
    assert addresses.decode(other, SECRET, [DOMAIN]).reason == "not-a-trap-domain"
    for junk in (
        "",
        "@",
        "info@traps.example.org",
        "admin",
        "a.b.c.d@traps.example.org",
        "x" * 500,
    ):
        assert not addresses.decode(junk, SECRET, [DOMAIN]).valid


def test_visit_range_is_enforced() -> None:
    with pytest.raises(TrapAddressError, match="rotate the site secret"):
        addresses.encode(addresses.MAX_VISIT + 1, SECRET, DOMAIN)
    assert addresses.visit_number_of(addresses.visit_id_of(77)) == 77


def test_site_secret_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "site.secret"
    first = addresses.load_or_create_secret(path)
    assert len(first) == addresses.SECRET_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert addresses.load_or_create_secret(path) == first  # second run reads, never regenerates
    other = addresses.load_or_create_secret(tmp_path / "other.secret")
    assert other != first
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        addresses.load_or_create_secret(path)


def test_site_secret_from_settings(tmp_path: Path) -> None:
    settings = {"data_dir": str(tmp_path / "data"), "site_secret_file": ""}
    with pytest.raises(ConfigError, match="no site secret"):
        addresses.site_secret(settings, create=False)
    made = addresses.site_secret(settings)
    assert (tmp_path / "data" / "site.secret").exists()
    assert addresses.site_secret(settings, create=False) == made


# Addresses issued by the format-v1-only code (computed with the tree before the wide format,
# secret bytes(range(32))): they must decode to the same visits forever.
V1_GOLDEN = [
    (0, "words", "fujor.komuf.muvul.timih@traps.example.org"),
    (0, "name", "daniel.carroll.fujorkomufmuvul@traps.example.org"),
    (0, "handle", "danielbahonpojotbigom4438@traps.example.org"),
    (1, "words", "zufis.guvuj.pogis.muvup@traps.example.org"),
    (1, "name", "russell.woods.zufisguvujpogis@traps.example.org"),
    (1, "handle", "russellbinulmalijzigaf0623@traps.example.org"),
    (4242, "words", "fimih.gatum.dofop.matug@traps.example.org"),
    (4242, "name", "kelly.tran.fimihgatumdofop@traps.example.org"),
    (4242, "handle", "kellybagunmulazlisad4979@traps.example.org"),
    (65535, "words", "laham.zavar.sovip.hamit@traps.example.org"),
    (65535, "name", "sandra.gutierrez.lahamzavarsovip@traps.example.org"),
    (65535, "handle", "sandrabarohsohuhjamul5586@traps.example.org"),
    (1048576, "words", "gimiz.ligat.bobum.kisam@traps.example.org"),
    (1048576, "name", "william.russell.gimizligatbobum@traps.example.org"),
    (1048576, "handle", "williambajofrasivgubag0823@traps.example.org"),
    (16777214, "words", "popis.fujot.mafor.galuh@traps.example.org"),
    (16777214, "name", "dagmar.roberts.popisfujotmafor@traps.example.org"),
    (16777214, "handle", "dagmarbidivdubufjahiv1873@traps.example.org"),
    (16777215, "words", "vurit.mujij.silur.puhod@traps.example.org"),
    (16777215, "name", "kimberly.black.vuritmujijsilur@traps.example.org"),
    (16777215, "handle", "kimberlybimitkukuhjusov1741@traps.example.org"),
]


@pytest.mark.parametrize(("visit", "style", "address"), V1_GOLDEN)
def test_addresses_issued_before_the_wide_format_still_decode(
    visit: int, style: addresses.Style, address: str
) -> None:
    got = addresses.decode(address, bytes(range(32)), ["traps.example.org"])
    assert got.valid and got.visit == visit and got.style == style
    assert addresses.encode(visit, bytes(range(32)), "traps.example.org", style) == address


@settings(max_examples=300)
@given(
    st.integers(addresses.MAX_V1_VISIT + 1, addresses.MAX_VISIT), st.sampled_from(addresses.STYLES)
)
def test_visits_past_2_24_round_trip_in_the_wide_format(visit: int, style: addresses.Style) -> None:
    address = addresses.encode(visit, SECRET, DOMAIN, style)
    local = address.partition("@")[0]
    assert len(local) > len(addresses.encode(0, SECRET, DOMAIN, style).partition("@")[0])
    got = addresses.decode(address, SECRET, [DOMAIN])
    assert got.valid and got.visit == visit and got.visit_id == f"v{visit}"
    assert not addresses.decode(address, b"\x01" * 32, [DOMAIN]).valid  # still keyed
