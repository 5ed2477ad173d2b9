"""Build the hostile parse fixtures from one real spam (deterministic; see ../SOURCE.md).

Each builder returns the bytes of one attack on the parser. ``python build.py`` writes the small
ones next to this file; the large ones (10 MB header line, 100k URLs) are only built in memory by
the tests, so the repository stays small.

Example: python tests/data/eml/hostile/build.py
"""

from __future__ import annotations

import io
import random
import zipfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASE = HERE.parent / "spam" / "sa-spam-00001.eml"  # real HTML spam with an mbox postmark


def base() -> bytes:
    """The real spam without its mbox postmark, with LF line ends."""
    data = BASE.read_bytes()
    return data[data.index(b"\n") + 1 :]


def _split(message: bytes) -> tuple[bytes, bytes]:
    head, _, body = message.partition(b"\n\n")
    return head, body


def to_16k() -> bytes:
    """A ``To:`` with 16,384 addresses: quadratic in ``policy.default``'s address parser."""
    head, body = _split(base())
    head = b"\n".join(line for line in head.split(b"\n") if not line.lower().startswith(b"to:"))
    addrs = b",\n ".join(b'"User %d" <user%d@example.net>' % (i, i) for i in range(16384))
    return head + b"\nTo: " + addrs + b"\n\n" + body


def nested_rfc822_50() -> bytes:
    """The spam forwarded inside itself 50 times (``message/rfc822`` onion)."""
    inner = base()
    for level in range(50):
        inner = (
            b"From: fwd%d@example.org\nSubject: Fwd level %d\nMIME-Version: 1.0\n"
            b"Content-Type: message/rfc822\n\n" % (level, level)
        ) + inner
    return inner


def nested_multipart(levels: int) -> bytes:
    """``levels`` of ``multipart/mixed`` around one text part."""
    body = wrap_multipart(b"Content-Type: text/plain\n\ninnermost text\n", levels)
    return b"From: deep@example.org\nSubject: deep\nMIME-Version: 1.0\n" + body


def wrap_multipart(body: bytes, levels: int) -> bytes:
    """``body`` (a MIME entity) inside ``levels`` of ``multipart/mixed``."""
    for level in range(levels):
        boundary = b"b%d" % level
        body = (
            b'Content-Type: multipart/mixed; boundary="'
            + boundary
            + b'"\n\n--'
            + boundary
            + b"\n"
            + body
            + b"\n--"
            + boundary
            + b"--\n"
        )
    return body


def nested_multipart_300() -> bytes:
    """300 levels of ``multipart/mixed``: beyond the fast parser's depth cap of 256."""
    return nested_multipart(300)


def zip_bomb_bytes() -> bytes:
    """A zip whose one member inflates 1,000x (16 MB of zeros in about 16 KB)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        info = zipfile.ZipInfo("invoice.pdf", date_time=(2002, 8, 22, 0, 0, 0))
        zf.writestr(info, b"\0" * (16 * 1024 * 1024), compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def zip_bomb() -> bytes:
    """The spam with a zip-bomb attachment: parse must hash the zip, never inflate it."""
    import base64

    head, _body = _split(base())
    head = b"\n".join(
        line for line in head.split(b"\n") if not line.lower().startswith(b"content-")
    )
    encoded = base64.encodebytes(zip_bomb_bytes())
    return (
        head
        + b'\nContent-Type: multipart/mixed; boundary="BOMB"\n\n--BOMB\n'
        + b"Content-Type: text/plain\n\nPlease see the attached invoice.\n--BOMB\n"
        + b'Content-Type: application/zip; name="invoice.zip"\n'
        + b'Content-Disposition: attachment; filename="invoice.zip"\n'
        + b"Content-Transfer-Encoding: base64\n\n"
        + encoded
        + b"--BOMB--\n"
    )


def header_10mb() -> bytes:
    """One 10 MB header line (RFC 5322 §2.1.1 allows 998 characters)."""
    head, body = _split(base())
    return head + b"\nX-Padding: " + b"A" * (10 * 1024 * 1024) + b"\n\n" + body


def nul_bytes() -> bytes:
    """NUL bytes inside the Subject, a header name's value and the body."""
    data = base().replace(b"Subject: Life Insurance", b"Subject: Life\0 Insurance", 1)
    return data.replace(b"<BODY>", b"<BODY>\0\0\0", 1) + b"\0tail\0"


def binary_junk() -> bytes:
    """64 KiB of random bytes: not a message at all."""
    return random.Random(2).randbytes(65536)


def headers_then_junk() -> bytes:
    """Real headers followed by a random binary body: still a message, with a junk body."""
    head, _ = _split(base())
    return head + b"\n\n" + random.Random(3).randbytes(8192)


def many_headers() -> bytes:
    """50,000 header fields."""
    head, body = _split(base())
    extra = b"".join(b"\nX-Filler-%d: value %d" % (i, i) for i in range(50000))
    return head + extra + b"\n\n" + body


def many_urls() -> bytes:
    """100,000 distinct URLs in a plain-text body."""
    head, _ = _split(base())
    head = b"\n".join(
        line for line in head.split(b"\n") if not line.lower().startswith(b"content-")
    )
    body = b"\n".join(b"http://host%d.example.com/p?%d" % (i, i) for i in range(100000))
    return head + b"\nContent-Type: text/plain\n\n" + body + b"\n"


BUILDERS: dict[str, Callable[[], bytes]] = {
    "to-16k": to_16k,
    "nested-rfc822-50": nested_rfc822_50,
    "nested-multipart-300": nested_multipart_300,
    "zip-bomb": zip_bomb,
    "header-10mb": header_10mb,
    "nul-bytes": nul_bytes,
    "binary-junk": binary_junk,
    "headers-then-junk": headers_then_junk,
    "many-headers": many_headers,
    "many-urls": many_urls,
}
STORED = (
    "to-16k",
    "nested-rfc822-50",
    "nested-multipart-300",
    "zip-bomb",
    "nul-bytes",
    "binary-junk",
    "headers-then-junk",
)


if __name__ == "__main__":
    for name in STORED:
        (HERE / f"{name}.eml").write_bytes(BUILDERS[name]())
        print(f"wrote {name}.eml")
