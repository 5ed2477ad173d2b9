"""Build the McColo replay: real spam re-timed over Oct-Dec 2008 around the 11 Nov takedown.

Writes ``replay.mbox`` (ingest it with ``trapline ingest``), ``feeds.csv`` (C&C servers and
a sample of known bots per family, for ``trapline feeds import``), ``truth.json`` (what
happened, for tests) and ``README.md`` (what the replay is and is not). Every message carries
an ``X-Trapline-Replay`` header saying it is synthetic. Deterministic for a seed and corpus.
"""

from __future__ import annotations

import csv
import functools
import gzip
import ipaddress
import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

import numpy as np

from trapline.errors import UsageError
from trapline.ingest.sources import SourceReader
from trapline.model import RawMessage, message_id_of
from trapline.replay.model import (
    DROP_AT,
    END,
    FAMILIES,
    INDEPENDENT_SHARE,
    MCCOLO_ASN,
    MCCOLO_PREFIXES,
    START,
    Family,
    Style,
    level_at,
)
from trapline.replay.render import Bot, Template, random_style, render, split_template

MX = "mx1.spamtrap.replay.example"
TRAP_DOMAINS = ("spamtrap.replay.example", "lists.replay.example", "mail.replay.example")
# Folders of the shared corpora that hold ham, or parser fixtures rather than spam.
_NOT_SPAM = {"easy_ham", "easy_ham_2", "hard_ham", "ham", "nice", "mail-parser", "edge-cases"}
_ROUTING = "ipasn_20080501_v12.dat.gz"
MEAN_CAMPAIGN = 40  # messages per campaign on average
MESSAGES_PER_BOT = 1.5  # how often the trap sees one bot, on average: most bots once or twice


@dataclass(slots=True, frozen=True)
class ReplayResult:
    out: Path
    messages: int
    campaigns: int
    bots: int
    templates: int
    drop_share: float


@dataclass(slots=True)
class _Campaign:
    template: Template
    style: Style
    family: str
    center: float  # hours since START
    half_width: float
    hosts: list[Bot]


def default_corpus() -> Path:
    """The shared real corpora next to the project when present, else the bundled sample."""
    import os

    shared = os.environ.get("TRAPLINE_SHARED_DATA")
    candidates = [Path(shared) / "mail"] if shared else []
    candidates.append(Path.cwd().parent / "shared" / "data" / "mail")
    for path in candidates:
        if path.is_dir():
            return path
    return Path(str(resources.files("trapline").joinpath("data", "sample", "mail")))


def load_templates(corpus: Path) -> list[Template]:
    """Spam messages of a corpus folder as templates, one per distinct subject and body start."""
    return list(_load_templates(corpus.resolve()))


@functools.lru_cache(maxsize=4)
def _load_templates(corpus: Path) -> tuple[Template, ...]:
    if not corpus.exists():
        raise UsageError(f"no corpus at {corpus}; pass --corpus DIR with spam in it")
    files = sorted(
        p
        for p in ([corpus] if corpus.is_file() else corpus.rglob("*"))
        if p.is_file()
        and not _NOT_SPAM & set(p.relative_to(corpus).parts if corpus.is_dir() else ())
        and not p.name.upper().startswith(("SOURCE", "README", "LICENSE", "COMMIT", "PACKAGE"))
    )
    seen: set[tuple[bytes, bytes]] = set()
    out = []
    for item in SourceReader([str(p) for p in files]):
        if not isinstance(item, RawMessage) or len(item.data) > 200_000:
            continue
        template = split_template(item.data, item.source or "")
        if template is None:
            continue
        key = (dict(template.headers).get("Subject", b""), template.body[:300])
        if key not in seen:
            seen.add(key)
            out.append(template)
    if len(out) < 20:
        raise UsageError(f"{corpus} holds {len(out)} usable spam messages; the replay needs 20+")
    return tuple(out)


class _Distinct:
    """Accepts a template only when it is no near-duplicate of, and shares no URL template or
    domain with, one accepted before: two replay campaigns must not be one real campaign."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.keys: set[str] = set()

    def accept(self, template: Template) -> bool:
        from trapline.fingerprint import fingerprint_message
        from trapline.ingest.parse import parse

        msg = parse(RawMessage(data=template.original, source=template.source))
        if not hasattr(msg, "urls"):
            return False
        sig = fingerprint_message(msg)  # type: ignore[arg-type]
        row = sig.array()
        domains = {u.registered_domain for u in msg.urls if u.registered_domain}
        keys = set(sig.url_templates) | {f"d:{d}" for d in domains}
        if keys & self.keys:
            return False
        if self.rows and sig.n_words:
            same = (np.vstack(self.rows) == row).mean(axis=1)
            if float(same.max()) >= 0.3:
                return False
        self.rows.append(row)
        self.keys |= keys
        return True


def _template_feed(pool: list[Template]) -> Iterator[Template]:
    """Distinct templates first; when the corpus runs out of them, repeats (a small corpus)."""
    distinct = _Distinct()
    accepted = [t for t in pool if distinct.accept(t)] if len(pool) <= 50 else []
    if not accepted:
        for template in pool:
            if distinct.accept(template):
                accepted.append(template)
                yield template
    yield from itertools.cycle(accepted or pool)


_PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
              "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/3")
)  # fmt: skip


@functools.lru_cache(maxsize=1)
def _routes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first address, size, asn) of the 2008 table's public IPv4 prefixes /8../24."""
    path = resources.files("trapline").joinpath("data", "routing", _ROUTING)
    firsts, lengths, asns = [], [], []
    with gzip.open(str(path), "rt") as fh:
        for line in fh:
            if line.startswith(";"):
                continue
            prefix, _, origin = line.strip().partition("\t")
            addr, _, bits = prefix.partition("/")
            a, b, c, d = (int(x) for x in addr.split("."))
            firsts.append((a << 24) | (b << 16) | (c << 8) | d)
            lengths.append(int(bits))
            asns.append(int(origin))
    first_a = np.array(firsts, np.int64)
    len_a = np.array(lengths, np.int64)
    asn_a = np.array(asns, np.int64)
    keep = (len_a >= 8) & (len_a <= 24) & (asn_a != MCCOLO_ASN)
    for net in _PRIVATE:
        lo = int(net.network_address)
        keep &= (first_a < lo) | (first_a > int(net.broadcast_address))
    sizes = np.left_shift(np.int64(1), 32 - len_a[keep])
    return first_a[keep], sizes, asn_a[keep]


class _Hosts:
    """Addresses drawn from the real 2008 routing table (prefix uniformly, then a host in it)."""

    def __init__(self, rng: random.Random) -> None:
        self.firsts, self.sizes, self.asns = _routes()
        self.rng = rng

    def draw(self, dynamic: bool = True) -> Bot:
        i = self.rng.randrange(len(self.firsts))
        addr = int(self.firsts[i]) + self.rng.randrange(1, max(2, int(self.sizes[i]) - 1))
        ip = str(ipaddress.IPv4Address(addr))
        asn = int(self.asns[i])
        kind = "dyn" if dynamic else "srv"
        rdns = None if self.rng.random() < 0.3 else f"{kind}-{ip.replace('.', '-')}.as{asn}.example"
        return Bot(ip, asn, rdns)


def _hours() -> int:
    return int((END - START).total_seconds() // 3600)


def _rates() -> tuple[list[str], np.ndarray]:
    """Expected relative volume per (family, hour); the last row is the independent senders."""
    hours = _hours()
    names = [f.name for f in FAMILIES] + ["independent"]
    rates = np.zeros((len(names), hours))
    for i, fam in enumerate(FAMILIES):
        rates[i] = [
            fam.share * level_at(fam, START + timedelta(hours=h, minutes=30)) for h in range(hours)
        ]
    rates[-1] = INDEPENDENT_SHARE
    return names, rates


def _campaigns(
    fam_name: str, style: Style | None, n_msgs: int, templates: Iterator[Template],
    rng: random.Random, hosts: _Hosts,
) -> list[_Campaign]:  # fmt: skip
    k = max(2, round(n_msgs / MEAN_CAMPAIGN))
    span = _hours() / k
    out = []
    for i in range(k):
        own = style or random_style(rng)
        dedicated = [] if style else [hosts.draw(dynamic=False) for _ in range(rng.randint(1, 3))]
        out.append(
            _Campaign(
                next(templates), own, fam_name if style else f"independent-{i:03d}",
                (i + 0.5) * span, span * rng.uniform(0.6, 1.5), dedicated,
            )
        )  # fmt: skip
    return out


def _pick(camps: list[_Campaign], hour: float, rng: random.Random) -> _Campaign:
    live = [c for c in camps if abs(c.center - hour) <= c.half_width]
    return rng.choice(live) if live else min(camps, key=lambda c: abs(c.center - hour))


def _generate(
    templates: list[Template], messages: int, seed: int
) -> tuple[list[tuple[datetime, bytes, str]], dict[str, list[Bot]], int]:
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    hosts = _Hosts(rng)
    names, rates = _rates()
    counts = nrng.multinomial(messages, (rates / rates.sum()).ravel()).reshape(rates.shape)
    pool = list(templates)
    rng.shuffle(pool)
    feed = _template_feed(pool)
    label = f"synthetic McColo 2008 replay (seed {seed}); not captured mail"
    out: list[tuple[datetime, bytes, str]] = []
    bots: dict[str, list[Bot]] = {}
    n_campaigns = 0
    for row, name in enumerate(names):
        fam: Family | None = FAMILIES[row] if row < len(FAMILIES) else None
        total = int(counts[row].sum())
        camps = _campaigns(name, fam.style if fam else None, total, feed, rng, hosts)
        n_campaigns += len(camps)
        if fam:
            bots[name] = [hosts.draw() for _ in range(max(30, int(total / MESSAGES_PER_BOT)))]
        for hour in np.flatnonzero(counts[row]):
            for _ in range(int(counts[row, hour])):
                at = START + timedelta(hours=int(hour), seconds=rng.randrange(3600))
                camp = _pick(camps, float(hour), rng)
                bot = rng.choice(bots[name] if fam else camp.hosts)
                rcpt = f"{rng.choice(('', 'info', 'sales', 'j'))}{rng.randrange(10**5)}"
                rcpt = f"u{rcpt}@{rng.choice(TRAP_DOMAINS)}"
                data = render(
                    camp.template, camp.style, bot=bot, rcpt=rcpt, received=at, rng=rng,
                    mx=MX, label=label,
                )  # fmt: skip
                out.append((at, data, camp.family))
    out.sort(key=lambda item: (item[0], item[1]))
    return out, bots, n_campaigns


def _quote(data: bytes) -> bytes:
    """mboxrd quoting: one more '>' on every line that is '>*From '."""
    lines = data.split(b"\n")
    return b"\n".join(b">" + ln if ln.lstrip(b">").startswith(b"From ") else ln for ln in lines)


def write_mbox(path: Path, items: list[tuple[datetime, bytes, str]]) -> list[str]:
    """Write the mbox; return each message's id as ingest will compute it (read back)."""
    with path.open("wb") as fh:
        for at, data, _ in items:
            fh.write(b"From MAILER-DAEMON " + at.strftime("%a %b %d %H:%M:%S %Y").encode() + b"\n")
            fh.write(_quote(data) + b"\n\n")
    ids = [
        message_id_of(item.data)
        for item in SourceReader([str(path)])
        if isinstance(item, RawMessage)
    ]
    if len(ids) != len(items):
        raise UsageError(f"replay mbox re-read as {len(ids)} messages, wrote {len(items)}")
    return ids


def _cc_rows(rng: random.Random, hosts: _Hosts) -> list[list[str]]:
    """C&C servers: McColo-controlled families inside AS26780, the rest elsewhere."""
    mccolo = [ipaddress.ip_network(p) for p in MCCOLO_PREFIXES]
    rows = []
    for fam in FAMILIES:
        for _ in range(fam.cc_ips):
            if fam.mccolo:
                net = rng.choice(mccolo)
                ip = str(net[rng.randrange(2, net.num_addresses - 1)])
                first = START - timedelta(days=rng.randint(30, 200))
                rows.append([ip, "cc", fam.name, first.date().isoformat(), "2008-11-11", "replay"])
            else:
                first = START - timedelta(days=rng.randint(30, 200))
                rows.append([hosts.draw(dynamic=False).ip, "cc", fam.name,
                             first.date().isoformat(), "2008-12-31", "replay"])  # fmt: skip
    # Srizbi's comeback ran from servers in another network for two days.
    rows.append(
        [hosts.draw(dynamic=False).ip, "cc", "Srizbi", "2008-11-25", "2008-11-27", "replay"]
    )
    return rows


def _bot_rows(rng: random.Random, bots: dict[str, list[Bot]]) -> list[list[str]]:
    """A tenth of each family's bots, as a bot-tracking list would have named them."""
    rows = []
    for name, pool in bots.items():
        for bot in rng.sample(pool, max(3, len(pool) // 10)):
            first = START + timedelta(days=rng.randint(0, 35))
            rows.append([bot.ip, "bot", name, first.date().isoformat(), "2008-12-31", "replay"])
    return rows


def realised_drop(times: list[datetime], at: datetime, days: int = 7) -> float:
    """1 - (messages in the ``days`` after ``at``) / (messages in the ``days`` before)."""
    span = timedelta(days=days)
    before = sum(1 for t in times if at - span <= t < at)
    after = sum(1 for t in times if at <= t < at + span)
    return 1.0 - after / before if before else 0.0


def build_replay(
    out: Path, *, seed: int = 2008, messages: int = 20_000, corpus: Path | None = None
) -> ReplayResult:
    """Write the replay into ``out`` (created); see the module docstring."""
    if messages < 500:
        raise UsageError("--messages must be at least 500 for the takedown to show")
    templates = load_templates(corpus or default_corpus())
    items, bots, n_campaigns = _generate(templates, messages, seed)
    out.mkdir(parents=True, exist_ok=True)
    ids = write_mbox(out / "replay.mbox", items)
    rng = random.Random(seed + 1)
    with (out / "feeds.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["indicator", "kind", "family", "first_seen", "last_seen", "source"])
        writer.writerows(_cc_rows(rng, _Hosts(rng)) + _bot_rows(rng, bots))
    drop = realised_drop([t for t, _, _ in items], DROP_AT)
    truth = {
        "drop_at": DROP_AT.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "drop_share": round(drop, 4),
        "mccolo_botnets": [f.name for f in FAMILIES if f.mccolo],
        "botnet_of": {mid: fam for mid, (_, _, fam) in zip(ids, items, strict=True)},
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    (out / "README.md").write_text(_readme(seed, messages, len(templates)))
    n_bots = sum(len(v) for v in bots.values())
    return ReplayResult(out, len(items), n_campaigns, n_bots, len(templates), drop)


def _readme(seed: int, messages: int, templates: int) -> str:
    return f"""# McColo 2008 replay (synthetic)

This folder is a **replay**, not captured mail: {messages:,} messages built by
`trapline replay mccolo --seed {seed}` from {templates:,} real spam messages (bodies, subjects and
From lines kept; Received, Message-ID, Date, To and MIME boundaries rewritten), re-timed over
2008-10-01 .. 2008-12-31. Every message has an `X-Trapline-Replay` header.

- `replay.mbox`: ingest with `trapline ingest replay.mbox`.
- `feeds.csv`: C&C servers (kind `cc`) and a tenth of each family's bots (kind `bot`);
  `trapline feeds import feeds.csv`.
- `truth.json`: `drop_at` (the de-peering, 2008-11-11 21:30 UTC), `drop_share` (1 - messages in
  the 7 days after / the 7 days before), `mccolo_botnets` (families whose C&C sat in AS26780),
  `botnet_of` (message id = SHA-256 of the stored bytes -> family, or `independent-NNN`).

Shares, the takedown night and the recoveries follow the public record; docs/replay.md in the
trapline repository gives the sources.
"""
