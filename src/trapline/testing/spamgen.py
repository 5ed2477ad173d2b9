"""Ground-truth spam generator: real spam bodies mutated the way spam engines mutate them.

Each generated campaign starts from one REAL spam from ``../shared/data/mail`` and is sent by
one botnet (a known set of bot IPs). Every copy gets what bulk-mail engines add per recipient:
a greeting with the recipient's name, the address it went to, a tracking id, a block of random
words (hash buster), URLs rotated over the campaign's domain pool with per-recipient paths, and
a mutated subject. Some campaigns are image-spam stubs (a few words plus an ``<img>`` URL and
random words). A small share of every botnet's mail goes out through one shared open relay, so
botnet inference can be tested against a relay that must NOT merge botnets.

Deterministic for a seed: the same arguments give the same messages, ids and labels.
"""

from __future__ import annotations

import email
import hashlib
import mailbox
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.header import decode_header, make_header
from email.message import Message as EmailMessage
from pathlib import Path

from selectolax.lexbor import LexborHTMLParser

from trapline.fingerprint.normalise import normalise

_URL_RE = re.compile(r"https?://[^\s<>\"')]+", re.IGNORECASE)
_FIRST = [
    "james",
    "mary",
    "john",
    "patricia",
    "robert",
    "jennifer",
    "michael",
    "linda",
    "william",
    "elizabeth",
    "david",
    "barbara",
    "richard",
    "susan",
    "joseph",
    "jessica",
    "thomas",
    "sarah",
    "charles",
    "karen",
    "daniel",
    "nancy",
    "matthew",
    "lisa",
    "anthony",
    "betty",
    "mark",
    "margaret",
    "donald",
    "sandra",
    "steven",
    "ashley",
    "paul",
    "kimberly",
    "andrew",
    "emily",
    "joshua",
    "donna",
]
_LAST = [
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "perez",
    "thompson",
    "white",
    "harris",
    "sanchez",
    "clark",
    "ramirez",
    "lewis",
    "robinson",
    "walker",
    "young",
    "allen",
    "king",
    "wright",
    "scott",
    "torres",
    "nguyen",
]
_MAIL_DOMAINS = ("example.com", "example.net", "example.org", "mail.example", "isp.example")
_TLDS = ("com", "net", "biz", "info", "org", "ru", "cn")
_GREETINGS = ("Dear {first},", "Hello {first} {last},", "Hi {first}!", "{first}, good news:")
_START = datetime(2026, 1, 1)  # naive UTC, as the store keeps times
RELAY_IP = "198.51.100.25"  # TEST-NET-2 (RFC 5737): the one shared open relay


@dataclass(slots=True, frozen=True)
class BaseSpam:
    """A real spam reduced to what the generator mutates: subject, visible text, URLs."""

    path: str
    subject: str
    text: str
    urls: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class GenMessage:
    """One generated message with its ground-truth labels."""

    id: str
    subject: str
    text: str
    urls: tuple[str, ...]
    to_name: str
    to_addr: str
    origin_ip: str
    received_at: datetime
    campaign: int  # ground-truth campaign label
    botnet: int  # ground-truth botnet label
    base: str  # path of the real spam it came from


def _part_text(msg: EmailMessage) -> tuple[str, bool]:
    """Best text of a parsed message: first text/plain part, else first text/html (as text)."""
    html: str | None = None
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html"):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        text = payload.decode(part.get_content_charset() or "latin-1", errors="replace")
        if ctype == "text/plain" and text.strip():
            return text, False
        if ctype == "text/html" and html is None:
            html = text
    return (html or ""), html is not None


def read_base_spam(path: Path) -> BaseSpam:
    """Parse one real spam file into a ``BaseSpam`` (stdlib email, compat32; never raises)."""
    return base_spam_from_bytes(path.read_bytes(), str(path))


def base_spam_from_bytes(data: bytes, source: str) -> BaseSpam:
    """Parse one message's bytes into a ``BaseSpam`` (never raises)."""
    try:
        msg = email.message_from_bytes(data)
        text, is_html = _part_text(msg)
    except (LookupError, ValueError):
        return BaseSpam(source, "", "", ())
    urls = tuple(dict.fromkeys(_URL_RE.findall(text)))
    if is_html:
        tree = LexborHTMLParser(text)
        hrefs = [n.attributes.get("href") or "" for n in tree.css("a[href]")]
        urls = tuple(dict.fromkeys([*urls, *(h for h in hrefs if h.startswith("http"))]))
        # Invisible parts (CSS, scripts) are not what a reader sees; phishing kits share the
        # brand's stylesheet, which would make different letters look alike.
        tree.strip_tags(["style", "script", "head", "title", "noscript"])
        text = tree.text(separator=" ") if tree.body is not None else ""
    try:
        subject = str(make_header(decode_header(str(msg.get("Subject", "") or ""))))
    except (LookupError, ValueError, UnicodeError):
        subject = str(msg.get("Subject", "") or "")
    return BaseSpam(source, subject.strip(), text.strip(), urls)


def _messages_in(path: Path) -> Iterator[tuple[bytes, str]]:
    if path.suffix == ".mbox":
        for i, item in enumerate(mailbox.mbox(str(path), create=False)):
            yield item.as_bytes(), f"{path}#{i}"
    elif path.suffix == ".eml" or path.name[0].isdigit():
        yield path.read_bytes(), str(path)


def load_base_spams(folders: Sequence[Path], *, min_words: int = 40) -> list[BaseSpam]:
    """Real spams (one-per-file, ``.eml`` or ``.mbox``) in ``folders`` with enough words."""
    out = []
    for folder in folders:
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            for data, source in _messages_in(path):
                base = base_spam_from_bytes(data, source)
                if len(normalise(base.text)) >= min_words:
                    out.append(base)
    return out


def pick_distinct(bases: Sequence[BaseSpam], *, max_jaccard: float = 0.2) -> list[BaseSpam]:
    """Greedy subset of ``bases`` whose texts are pairwise dissimilar (word 3-gram Jaccard).

    The real corpus holds genuine near-duplicates (the same campaign caught twice); generating
    two "different" campaigns from them would make the ground truth wrong.
    """
    from trapline.fingerprint.minhash import minhash_matrix
    from trapline.fingerprint.normalise import shingles

    sets = [shingles(normalise(b.text)) for b in bases]
    sig = minhash_matrix(sets)
    kept: list[int] = []
    for i in range(len(bases)):
        if not kept or (sig[kept] == sig[i]).mean(axis=1).max() <= max_jaccard:
            kept.append(i)
    return [bases[i] for i in kept]


@dataclass(slots=True, frozen=True)
class _Campaign:
    label: int
    base: BaseSpam
    botnet: int
    domains: tuple[str, ...]
    start: datetime
    days: float
    image: bool
    img_host: str


def _token(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n))


def _domain(rng: random.Random) -> str:
    name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(5, 10)))
    return f"{name}.{rng.choice(_TLDS)}"


def _bot_ip(rng: random.Random, net: tuple[int, int]) -> str:
    return f"{net[0]}.{net[1]}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


class SpamGenerator:
    """Known campaigns from real bodies, sent by known bot sets; iterate with ``messages()``."""

    def __init__(
        self,
        bases: Sequence[BaseSpam],
        *,
        n_campaigns: int = 50,
        n_botnets: int = 8,
        bots_per_botnet: int = 60,
        image_share: float = 0.1,
        relay_share: float = 0.01,
        seed: int = 1,
        start: datetime = _START,
        days: int = 60,
    ) -> None:
        if len(bases) < n_campaigns:
            raise ValueError(f"need {n_campaigns} distinct base spams, got {len(bases)}")
        rng = random.Random(seed)
        self.seed = seed
        self.relay_share = relay_share
        self.vocabulary = sorted({w for b in bases for w in normalise(b.text) if w.isalpha()})
        self.bots: list[list[str]] = []
        for _ in range(n_botnets):
            # Bots of one botnet spread over a few /16s (infected home machines of some ISPs).
            nets = [(rng.randint(11, 199), rng.randint(0, 255)) for _ in range(4)]
            self.bots.append(
                sorted({_bot_ip(rng, rng.choice(nets)) for _ in range(bots_per_botnet)})
            )
        chosen = rng.sample(list(bases), n_campaigns)
        active = [rng.uniform(0, max(0.0, days - 35)) for _ in range(n_botnets)]
        self.campaigns = [
            _Campaign(
                label=i,
                base=base,
                botnet=i % n_botnets,
                domains=tuple(_domain(rng) for _ in range(rng.randint(2, 6))),
                # A botnet works through its campaigns in one active stretch of ~25 days.
                start=start + timedelta(days=active[i % n_botnets] + rng.uniform(0, 25)),
                days=rng.uniform(1, 10),
                image=rng.random() < image_share,
                img_host=f"img{rng.randint(1, 9)}.{_domain(rng)}",
            )
            for i, base in enumerate(chosen)
        ]
        # Heavy-tailed campaign sizes, as in real traps: a few huge campaigns, many small ones.
        self.weights = [1.0 / (rank + 1) ** 0.8 for rank in range(n_campaigns)]

    def _recipient(self, rng: random.Random) -> tuple[str, str, str]:
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        addr = f"{first}.{last}{rng.randint(1, 99)}@{rng.choice(_MAIL_DOMAINS)}"
        return first.title(), last.title(), addr

    def _message(self, i: int, rng: random.Random) -> GenMessage:
        camp = rng.choices(self.campaigns, weights=self.weights)[0]
        first, last, addr = self._recipient(rng)
        rid = _token(rng, 10)
        salad = " ".join(rng.choices(self.vocabulary, k=rng.randint(5, 20)))
        links = [
            f"http://{rng.choice(camp.domains)}/{_token(rng, 6)}/index.php?id={rid}"
            for _ in range(max(1, min(3, len(camp.base.urls))))
        ]
        if camp.image:
            img = f"http://{camp.img_host}/img/{rid}.gif"
            # The few visible words of image spam differ per campaign (its first line).
            stub = " ".join(camp.base.text.split()[:12])
            body = f"{stub} {links[0]}\n[image: {img}]\n{salad}"
            urls = (img, *links)
        else:
            text = camp.base.text
            # URL rotation: every URL of the real spam points into the campaign's domain pool.
            k = iter(range(10**6))
            text = _URL_RE.sub(lambda _m: links[next(k) % len(links)], text)
            greeting = rng.choice(_GREETINGS).format(first=first, last=last)
            body = f"{greeting}\n{text}\n\nRef: {rid}\nThis message was sent to {addr}.\n{salad}\n"
            urls = tuple(links)
        subject = camp.base.subject or "(no subject)"
        variant = rng.random()
        if variant < 0.3:
            subject = f"{first}, {subject}"
        elif variant < 0.6:
            subject = f"{subject} [{rng.randint(1000, 99999)}]"
        when = camp.start + timedelta(days=rng.uniform(0, camp.days))
        bots = self.bots[camp.botnet]
        ip = RELAY_IP if rng.random() < self.relay_share else rng.choice(bots)
        mid = hashlib.sha256(f"spamgen:{self.seed}:{i}".encode()).hexdigest()
        return GenMessage(
            mid, subject, body, urls, f"{first} {last}", addr, ip, when, camp.label,
            camp.botnet, camp.base.path,
        )  # fmt: skip

    def messages(self, n: int) -> Iterator[GenMessage]:
        """``n`` messages; message ``i`` depends only on (seed, i), so prefixes are stable."""
        for i in range(n):
            yield self._message(i, random.Random(f"{self.seed}:{i}"))
