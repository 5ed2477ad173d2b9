"""Build the two URL fixtures no real spam here carries whole, from parts of real messages.

    python tests/data/eml/urls/build.py     (needs ../shared/data beside the checkout)

- ``built-fake-bounce.eml``: a real bounce (SpamAssassin easy_ham/01436, ``multipart/report``)
  whose returned-message part is turned into ``message/rfc822`` carrying a real spam
  (SpamAssassin spam/00001): the fake-bounce shape backscatter spam uses.
- ``built-ftp-bare-host.eml``: the headers of a real spam (spam/00001) over a body made of a
  real sentence naming a bare ``ftp.`` host (easy_ham/01196), which no spam in the corpora has.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
SA = HERE.parents[4] / "shared" / "data" / "mail" / "spamassassin-2002"


def _split(data: bytes) -> tuple[bytes, bytes]:
    head, _, body = data.partition(b"\n\n")
    return head, body


def fake_bounce() -> bytes:
    bounce = (SA / "easy_ham" / "01436.dc449ba377210e77d84647619e49c872").read_bytes()
    spam = (SA / "spam" / "00001.7848dde101aa985090474a91ec93fcf0").read_bytes()
    start = bounce.index(b"Content-Type: text/rfc822-headers")
    end = bounce.rindex(b"--_===6628399====mx1.yipes.com===_--")
    return bounce[:start] + b"Content-Type: message/rfc822\n\n" + spam + b"\n" + bounce[end:]


def ftp_bare_host() -> bytes:
    spam_head, _ = _split((SA / "spam" / "00001.7848dde101aa985090474a91ec93fcf0").read_bytes())
    ham = (SA / "easy_ham" / "01196.bed50a1e10eb99f9ef1dbefa84c54731").read_bytes()
    line = next(ln for ln in ham.splitlines() if b"ftp.freshrpms.net" in ln)
    head = b"\n".join(ln for ln in spam_head.splitlines() if not ln.lower().startswith(b"content-"))
    return head + b"\nContent-Type: text/plain; charset=us-ascii\n\n" + line.strip() + b"\n"


if __name__ == "__main__":
    (HERE / "built-fake-bounce.eml").write_bytes(fake_bounce())
    (HERE / "built-ftp-bare-host.eml").write_bytes(ftp_bare_host())
