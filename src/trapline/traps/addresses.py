"""Unforgeable trap addresses: a visit number and a MAC hidden in a plausible mailbox name.

Format v1. The local part carries one 64-bit integer ``V = (visit ^ mask(mac)) << 40 | mac`` where ``visit`` is a
24-bit visit sequence number and ``mac`` the first 40 bits of HMAC-SHA256(site secret,
``b"trapline/addr/v1\\0" + visit``). ``V`` is written in one of three styles, each a mixed-radix
numeral over fixed vocabularies (``names.py``) and proquint-style pseudo-words (consonant-vowel-
consonant-vowel-consonant, 16 bits each, so nothing looks like a hex blob):

==========  ===========================================  ===============================
style       shape                                        example
==========  ===========================================  ===============================
``words``   ``W.W.W.W``                                  ``lusab.babad.gutih.tugad``
``name``    ``first.last.WWW``                           ``anna.kovacs.lusabgutihbabad``
``handle``  ``firstWWWnnnn``                             ``annalusabgutihbabad1987``
==========  ===========================================  ===============================

Format v2, for visits from 2^24 on (a busy or attacked honeypot passes 16.7M page views): the
same construction with a 40-bit visit number (``b"trapline/addr/v2\0"``, 5-byte visit, 40-bit
mask), so ``V`` has 80 bits and each style one pseudo-word more (``W.W.W.W.W``,
``first.last.WWWW``, ``firstWWWWnnnn``). Visits below 2^24 are still written in v1, so every
address issued before v2 keeps decoding to its visit, and the visit ids (``v`` + decimal) go on.

Decoding needs only the secret, never the database. A forged, mistyped or re-keyed address
decodes only if its 40-bit MAC happens to match: probability 2^-40 (about 9.1e-13) per try, so a
dictionary attacker sending a billion guesses expects 0.0009 false visits. A typo that leaves the
string parseable changes ``V`` and therefore fails the MAC with the same probability (twice
that for the few strings that read both as a v1 and as a v2 handle: both MACs are checked).

Everything is lowercase ASCII, so lower-casing is harmless; decoding also accepts upper case and
strips trailing dots, surrounding ``<>``, whitespace and ``mailto:`` (common harvester mangling).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trapline.errors import ConfigError, TrapAddressError
from trapline.traps.names import FIRST_NAMES, LAST_NAMES

Style = Literal["words", "name", "handle"]
STYLES: tuple[Style, ...] = ("words", "name", "handle")

VISIT_BITS = 24  # format v1: visits 0 .. 2^24 - 1 (every address issued before v2 existed)
WIDE_VISIT_BITS = 40  # format v2: visits from 2^24 on, one 16-bit word longer
MAC_BITS = 40
MAX_V1_VISIT = (1 << VISIT_BITS) - 1
MAX_VISIT = (1 << WIDE_VISIT_BITS) - 1
FORGERY_PROBABILITY = 2.0**-MAC_BITS  # per guessed address
SECRET_BYTES = 32
_DOMAIN_TAG = b"trapline/addr/v1\x00"
_WIDE_TAG = b"trapline/addr/v2\x00"

# Proquint alphabet (Wilkerson 2009): 16 consonants (4 bits) and 4 vowels (2 bits), CVCVC = 16 bits.
_CONS = "bdfghjklmnprstvz"
_VOWELS = "aiou"
_PQ = f"[{_CONS}][{_VOWELS}][{_CONS}][{_VOWELS}][{_CONS}]"

_FIRST_INDEX = {w: i for i, w in enumerate(FIRST_NAMES)}
_LAST_INDEX = {w: i for i, w in enumerate(LAST_NAMES)}

# Per format: n pseudo-words after the name parts (v1 words 4, name/handle 3; v2 one more each).
_WORDS_RE = {n: re.compile(r"\.".join([f"({_PQ})"] * n)) for n in (4, 5)}
_NAME_RE = {n: re.compile(r"([a-z]+)\.([a-z]+)\." + f"({_PQ})" * n) for n in (3, 4)}
_HANDLE_RE = {n: re.compile(r"([a-z]+?)" + f"({_PQ})" * n + r"([0-9]{4})") for n in (3, 4)}


@dataclass(slots=True, frozen=True)
class Decoded:
    """Result of decoding an address; ``valid`` is False for anything we did not issue."""

    address: str  # as normalised (lowercase, no trailing dots)
    valid: bool
    visit: int | None = None
    style: Style | None = None
    domain: str | None = None
    reason: str = ""  # why it is invalid: "unparseable", "bad-mac", "not-a-trap-domain", ...

    @property
    def visit_id(self) -> str | None:
        return visit_id_of(self.visit) if self.visit is not None else None


def visit_id_of(visit: int) -> str:
    """The store's text id for visit number ``visit`` (``v`` + decimal)."""
    return f"v{visit}"


def visit_number_of(visit_id: str) -> int:
    """Inverse of ``visit_id_of``."""
    if not visit_id.startswith("v") or not visit_id[1:].isdigit():
        raise TrapAddressError(f"{visit_id!r} is not a visit id (expected v<number>)")
    return int(visit_id[1:])


# --- the MAC ----------------------------------------------------------------------------------


def _mac(secret: bytes, visit: int, wide: bool = False) -> int:
    message = (
        _WIDE_TAG + visit.to_bytes(5, "big") if wide else _DOMAIN_TAG + visit.to_bytes(3, "big")
    )
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return int.from_bytes(digest[: MAC_BITS // 8], "big")


def _mask(mac: int, wide: bool = False) -> int:
    # Keyless hash of the MAC: mixes every MAC bit into every visit bit, still bijective in visit.
    return int.from_bytes(
        hashlib.sha256(mac.to_bytes(5, "big")).digest()[: 5 if wide else 3], "big"
    )


# --- mixed-radix pieces -----------------------------------------------------------------------


def _pq_encode(value: int) -> str:
    """16 bits as one proquint word (c v c v c, most significant first)."""
    c1, v1, c2, v2, c3 = (
        (value >> 12) & 15,
        (value >> 10) & 3,
        (value >> 6) & 15,
        (value >> 4) & 3,
        value & 15,
    )
    return _CONS[c1] + _VOWELS[v1] + _CONS[c2] + _VOWELS[v2] + _CONS[c3]


def _pq_decode(word: str) -> int:
    c1, v1, c2, v2, c3 = word[0], word[1], word[2], word[3], word[4]
    return (
        _CONS.index(c1) << 12
        | _VOWELS.index(v1) << 10
        | _CONS.index(c2) << 6
        | _VOWELS.index(v2) << 4
        | _CONS.index(c3)
    )


def _words(value: int, n: int) -> str:
    """The low ``16 * n`` bits of ``value`` as ``n`` concatenated pseudo-words."""
    return "".join(_pq_encode((value >> (16 * i)) & 0xFFFF) for i in range(n - 1, -1, -1))


def _unwords(groups: tuple[str, ...]) -> int:
    value = 0
    for word in groups:
        value = value << 16 | _pq_decode(word)
    return value


def _render(value: int, style: Style, wide: bool = False) -> str:
    """Write ``value`` (64 bits, v1; 80 bits, v2) in ``style``; least significant digits are
    the names. v2 is v1 with one more pseudo-word, so old addresses keep their exact form."""
    extra = 1 if wide else 0
    if style == "words":
        return ".".join(_pq_encode((value >> (16 * i)) & 0xFFFF) for i in range(3 + extra, -1, -1))
    if style == "name":
        first, last, rest = value & 0xFF, (value >> 8) & 0xFF, value >> 16
        return f"{FIRST_NAMES[first]}.{LAST_NAMES[last]}.{_words(rest, 3 + extra)}"
    # handle: 8 bits of name, 4 decimal digits (radix 10000), then the pseudo-words; capacity
    # 2^8 * 10^4 * 2^(16 * words) exceeds the value's range, so some strings are non-canonical.
    first, value = value & 0xFF, value >> 8
    digits, rest = value % 10000, value // 10000
    return f"{FIRST_NAMES[first]}{_words(rest, 3 + extra)}{digits:04d}"


def _parse(local: str) -> list[tuple[int, Style, bool]]:
    """Inverse of ``_render``: every (value, style, wide) the local part can be read as (a
    handle's name can swallow a pseudo-word, so both widths are tried); the MAC decides."""
    out: list[tuple[int, Style, bool]] = []
    for n, wide in ((4, False), (5, True)):
        if m := _WORDS_RE[n].fullmatch(local):
            out.append((_unwords(m.groups()), "words", wide))
    for n, wide in ((3, False), (4, True)):
        if m := _NAME_RE[n].fullmatch(local):
            first, last = _FIRST_INDEX.get(m[1]), _LAST_INDEX.get(m[2])
            if first is not None and last is not None:
                out.append((_unwords(m.groups()[2:]) << 16 | last << 8 | first, "name", wide))
        if m := _HANDLE_RE[n].fullmatch(local):
            first = _FIRST_INDEX.get(m[1])
            if first is not None:
                value = (_unwords(m.groups()[1:-1]) * 10000 + int(m[n + 2])) << 8 | first
                if value < 1 << (VISIT_BITS + MAC_BITS + (16 if wide else 0)):
                    out.append((value, "handle", wide))
    return out


# --- public API -------------------------------------------------------------------------------


def normalise(address: str) -> str:
    """Undo common harvester mangling: case, trailing dots, ``<>``, ``mailto:``, whitespace."""
    text = address.strip().strip("<>").strip()
    if text.lower().startswith("mailto:"):
        text = text[7:]
    text = text.split("?", 1)[0].strip().lower()
    local, sep, domain = text.rpartition("@")
    if not sep:
        return text.rstrip(".")
    return f"{local.rstrip('.')}@{domain.rstrip('.')}"


def encode(visit: int, secret: bytes, domain: str, style: Style | None = None) -> str:
    """The trap address for visit number ``visit`` on ``domain``.

    ``style`` defaults to one derived from the MAC, so a site's addresses mix all styles.
    """
    if not 0 <= visit <= MAX_VISIT:
        raise TrapAddressError(
            f"visit number {visit} is outside 0..{MAX_VISIT}; rotate the site secret to start a "
            "new address space (see docs/traps.md)"
        )
    # Visits past v1's 2^24 take the v2 form; the ones below keep v1, so every address issued
    # before v2 existed is still the address of its visit.
    wide = visit > MAX_V1_VISIT
    mac = _mac(secret, visit, wide)
    chosen: Style = style or STYLES[mac % len(STYLES)]
    # Whiten the visit bits with MAC bits (a bijection), so consecutive visits do not share a
    # recognisable prefix like "babab.bab...".
    value = (visit ^ _mask(mac, wide)) << MAC_BITS | mac
    return f"{_render(value, chosen, wide)}@{domain.lower().rstrip('.')}"


def decode(address: str, secret: bytes, trap_domains: tuple[str, ...] | list[str] = ()) -> Decoded:
    """Decode ``address`` offline. Valid only if it parses and its MAC verifies (and, when
    ``trap_domains`` is given, its domain is one of them)."""
    text = normalise(address)
    local, sep, domain = text.rpartition("@")
    if not sep:
        local, domain = text, ""
    if trap_domains and domain not in {d.lower().rstrip(".") for d in trap_domains}:
        return Decoded(text, False, domain=domain or None, reason="not-a-trap-domain")
    readings = _parse(local)
    if not readings:
        return Decoded(text, False, domain=domain or None, reason="unparseable")
    for value, style, wide in readings:
        mac = value & ((1 << MAC_BITS) - 1)
        visit = (value >> MAC_BITS) ^ _mask(mac, wide)
        if wide and visit <= MAX_V1_VISIT:
            continue  # v2 never encodes a v1 visit: not an address we issued
        # Constant-time compare: a timing oracle would let an attacker forge MACs byte by byte.
        expected = _mac(secret, visit, wide).to_bytes(5, "big")
        if hmac.compare_digest(mac.to_bytes(5, "big"), expected):
            return Decoded(text, True, visit=visit, style=style, domain=domain or None)
    return Decoded(text, False, style=readings[0][1], domain=domain or None, reason="bad-mac")


def is_trap_domain(address: str, trap_domains: tuple[str, ...] | list[str]) -> bool:
    """True when ``address`` (after normalising) is on one of the trap domains."""
    domain = normalise(address).rpartition("@")[2]
    return domain in {d.lower().rstrip(".") for d in trap_domains}


# --- the site secret --------------------------------------------------------------------------


def load_or_create_secret(path: Path) -> bytes:
    """Read the site secret, generating it (mode 0600) on first run.

    Losing or changing this file makes every address issued so far undecodable, so back it up.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    except OSError as exc:
        raise ConfigError(
            f"cannot create site secret {path}: {exc.strerror}; check the folder"
        ) from exc
    try:
        os.write(fd, secrets.token_hex(SECRET_BYTES).encode() + b"\n")
        os.fsync(fd)  # the secret must survive a crash or every issued address is lost
    finally:
        os.close(fd)
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    try:
        info = path.stat()
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read site secret {path}: {exc}; restore it from backup") from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"site secret {path} is readable by others; run `chmod 600 {path}`")
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < 16:
        raise ConfigError(f"site secret {path} is not 32+ hex digits; restore it from backup")
    return secret


def secret_path(settings: dict[str, object]) -> Path:
    """Where the site secret lives: ``site_secret_file`` or ``<data_dir>/site.secret``."""
    configured = str(settings.get("site_secret_file") or "")
    if configured:
        return Path(configured)
    return Path(str(settings["data_dir"])) / "site.secret"


def site_secret(settings: dict[str, object], *, create: bool = True) -> bytes:
    """The site secret for ``settings``; creates the data dir and secret when ``create``."""
    path = secret_path(settings)
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
        return load_or_create_secret(path)
    if not path.exists():
        raise ConfigError(
            f"no site secret at {path}; run `trapline serve` once (it creates one) or set "
            "site_secret_file"
        )
    return _read_secret(path)
