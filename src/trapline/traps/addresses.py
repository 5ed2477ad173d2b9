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

Decoding needs only the secret, never the database. A forged, mistyped or re-keyed address
decodes only if its 40-bit MAC happens to match: probability 2^-40 (about 9.1e-13) per try, so a
dictionary attacker sending a billion guesses expects 0.0009 false visits. A typo that leaves the
string parseable changes ``V`` and therefore fails the MAC with the same probability.

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

VISIT_BITS = 24
MAC_BITS = 40
MAX_VISIT = (1 << VISIT_BITS) - 1
FORGERY_PROBABILITY = 2.0**-MAC_BITS  # per guessed address
SECRET_BYTES = 32
_DOMAIN_TAG = b"trapline/addr/v1\x00"

# Proquint alphabet (Wilkerson 2009): 16 consonants (4 bits) and 4 vowels (2 bits), CVCVC = 16 bits.
_CONS = "bdfghjklmnprstvz"
_VOWELS = "aiou"
_PQ = f"[{_CONS}][{_VOWELS}][{_CONS}][{_VOWELS}][{_CONS}]"

_FIRST_INDEX = {w: i for i, w in enumerate(FIRST_NAMES)}
_LAST_INDEX = {w: i for i, w in enumerate(LAST_NAMES)}

_RE_WORDS = re.compile(rf"({_PQ})\.({_PQ})\.({_PQ})\.({_PQ})")
_RE_NAME = re.compile(rf"([a-z]+)\.([a-z]+)\.({_PQ})({_PQ})({_PQ})")
_RE_HANDLE = re.compile(rf"([a-z]+?)({_PQ})({_PQ})({_PQ})([0-9]{{4}})")


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


def _mac(secret: bytes, visit: int) -> int:
    digest = hmac.new(secret, _DOMAIN_TAG + visit.to_bytes(3, "big"), hashlib.sha256).digest()
    return int.from_bytes(digest[: MAC_BITS // 8], "big")


def _mask(mac: int) -> int:
    # Keyless hash of the MAC: mixes every MAC bit into every visit bit, still bijective in visit.
    return int.from_bytes(hashlib.sha256(mac.to_bytes(5, "big")).digest()[:3], "big")


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


def _render(value: int, style: Style) -> str:
    """Write the 64-bit ``value`` in ``style``; least significant digits are the names."""
    if style == "words":
        words = [_pq_encode((value >> shift) & 0xFFFF) for shift in (48, 32, 16, 0)]
        return ".".join(words)
    if style == "name":
        first, last, rest = value & 0xFF, (value >> 8) & 0xFF, value >> 16  # rest: 48 bits
        tail = "".join(_pq_encode((rest >> s) & 0xFFFF) for s in (32, 16, 0))
        return f"{FIRST_NAMES[first]}.{LAST_NAMES[last]}.{tail}"
    # handle: 8 bits of name, 4 decimal digits (radix 10000), then 48 bits of pseudo-words;
    # capacity 2^8 * 10^4 * 2^48 > 2^64, so some strings are non-canonical and rejected.
    first, value = value & 0xFF, value >> 8
    digits, rest = value % 10000, value // 10000
    tail = "".join(_pq_encode((rest >> s) & 0xFFFF) for s in (32, 16, 0))
    return f"{FIRST_NAMES[first]}{tail}{digits:04d}"


def _parse(local: str) -> tuple[int, Style] | None:
    """Inverse of ``_render``; None when the local part is not in any style's shape."""
    if m := _RE_WORDS.fullmatch(local):
        value = 0
        for word in m.groups():
            value = value << 16 | _pq_decode(word)
        return value, "words"
    if m := _RE_NAME.fullmatch(local):
        first, last = _FIRST_INDEX.get(m[1]), _LAST_INDEX.get(m[2])
        if first is None or last is None:
            return None
        rest = _pq_decode(m[3]) << 32 | _pq_decode(m[4]) << 16 | _pq_decode(m[5])
        return rest << 16 | last << 8 | first, "name"
    if m := _RE_HANDLE.fullmatch(local):
        first = _FIRST_INDEX.get(m[1])
        if first is None:
            return None
        rest = _pq_decode(m[2]) << 32 | _pq_decode(m[3]) << 16 | _pq_decode(m[4])
        value = (rest * 10000 + int(m[5])) << 8 | first
        return (value, "handle") if value < 1 << 64 else None
    return None


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
    mac = _mac(secret, visit)
    chosen: Style = style or STYLES[mac % len(STYLES)]
    # Whiten the visit bits with MAC bits (a bijection), so consecutive visits do not share a
    # recognisable prefix like "babab.bab...".
    value = (visit ^ _mask(mac)) << MAC_BITS | mac
    return f"{_render(value, chosen)}@{domain.lower().rstrip('.')}"


def decode(address: str, secret: bytes, trap_domains: tuple[str, ...] | list[str] = ()) -> Decoded:
    """Decode ``address`` offline. Valid only if it parses and its MAC verifies (and, when
    ``trap_domains`` is given, its domain is one of them)."""
    text = normalise(address)
    local, sep, domain = text.rpartition("@")
    if not sep:
        local, domain = text, ""
    if trap_domains and domain not in {d.lower().rstrip(".") for d in trap_domains}:
        return Decoded(text, False, domain=domain or None, reason="not-a-trap-domain")
    parsed = _parse(local)
    if parsed is None:
        return Decoded(text, False, domain=domain or None, reason="unparseable")
    value, style = parsed
    mac = value & ((1 << MAC_BITS) - 1)
    visit = (value >> MAC_BITS) ^ _mask(mac)
    # Constant-time compare: a timing oracle would let an attacker forge MACs byte by byte.
    if not hmac.compare_digest(mac.to_bytes(5, "big"), _mac(secret, visit).to_bytes(5, "big")):
        return Decoded(text, False, style=style, domain=domain or None, reason="bad-mac")
    return Decoded(text, True, visit=visit, style=style, domain=domain or None)


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
