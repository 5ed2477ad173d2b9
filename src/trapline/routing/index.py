"""The lookup structure: nested prefixes flattened into disjoint intervals, searched with numpy.

Longest-prefix match over nested CIDRs is the same question as "which interval holds this
address" once the prefixes are flattened: every address range is owned by its most specific
prefix. After flattening, a lookup is one ``np.searchsorted`` over the sorted interval starts, so
a batch of a million IPv4 addresses costs one vectorised binary search instead of a million trie
walks in Python. IPv6 keys are 128-bit; they are kept as two uint64 columns and merged with the
queries by ``np.lexsort``.

An index is a folder of ``.npy`` files. ``load`` memory-maps them read-only, so worker processes
that load the same snapshot share the operating system's page cache instead of each holding a
copy (ARCHITECTURE rule 1: lookup tables are read-only context).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np

from trapline.routing.formats import Route

V4_FILES = ("v4_bounds", "v4_owner", "v4_direct", "v4_start", "v4_end", "v4_len", "v4_asn")
DIRECT_BITS = 20  # v4_direct has one entry per /20 block
V6_FILES = (
    "v6_bounds_hi",
    "v6_bounds_lo",
    "v6_owner",
    "v6_start_hi",
    "v6_start_lo",
    "v6_len",
    "v6_asn",
)
_LO = (1 << 64) - 1


@dataclass(slots=True, frozen=True)
class Index:
    """Disjoint intervals per family. ``*_owner[i]`` is the route owning ``[bounds[i], bounds[i+1])``
    or -1 for unannounced space; route arrays give each owner's start, length and origin AS."""

    v4_bounds: np.ndarray  # uint32, ascending, first = 0
    v4_owner: np.ndarray  # int32
    v4_direct: np.ndarray  # int32 per /20: its owner when one interval covers it, else -2
    v4_start: np.ndarray  # uint32 per route
    v4_end: np.ndarray  # uint32 per route (last address; needed for non-CIDR ranges)
    v4_len: np.ndarray  # int16 per route (-1 = non-CIDR range)
    v4_asn: np.ndarray  # uint32 per route
    v6_bounds_hi: np.ndarray  # uint64
    v6_bounds_lo: np.ndarray  # uint64
    v6_owner: np.ndarray
    v6_start_hi: np.ndarray
    v6_start_lo: np.ndarray
    v6_len: np.ndarray
    v6_asn: np.ndarray

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in (*V4_FILES, *V6_FILES))


def _flatten(routes: Sequence[Route]) -> tuple[list[int], list[int]]:
    """Boundaries and owners of the disjoint intervals that ``routes`` (nested or not) define.

    Sweep in (start ascending, end descending) order with a stack of open blocks: a block is
    always inside the block below it on the stack, so the top is the longest match.
    """
    order = sorted(range(len(routes)), key=lambda i: (routes[i].start, -routes[i].end))
    bounds: list[int] = [0]
    owners: list[int] = [-1]

    def mark(at: int, owner: int) -> None:
        if bounds[-1] == at:
            owners[-1] = owner  # several changes at one address: the last one stands
        else:
            bounds.append(at)
            owners.append(owner)

    stack: list[int] = []
    for i in order:
        start = routes[i].start
        while stack and routes[stack[-1]].end < start:
            top = stack.pop()
            mark(routes[top].end + 1, stack[-1] if stack else -1)
        if stack and routes[i].end > routes[stack[-1]].end:
            # Overlapping but not nested (possible only for non-CIDR ranges, and the CSV tables
            # we read are disjoint): keep the block already open rather than guess.
            continue
        mark(start, i)
        stack.append(i)
    while stack:
        top = stack.pop()
        mark(routes[top].end + 1, stack[-1] if stack else -1)
    return bounds, owners


def build(routes: Iterable[Route]) -> Index:
    """Build the index for one snapshot (IPv4 and IPv6 routes together)."""
    v4 = [r for r in routes if r.family == 4]
    v6 = [r for r in routes if r.family == 6]
    b4, o4 = _flatten(v4)
    if b4[-1] > 0xFFFFFFFF:
        b4, o4 = b4[:-1], o4[:-1]
    b6, o6 = _flatten(v6)
    if b6[-1] > (1 << 128) - 1:
        b6, o6 = b6[:-1], o6[:-1]
    bounds4 = np.asarray(b4, dtype=np.uint32)
    owner4 = np.asarray(o4, dtype=np.int32)
    return Index(
        v4_bounds=bounds4,
        v4_owner=owner4,
        v4_direct=_direct_table(bounds4, owner4),
        v4_start=np.asarray([r.start for r in v4], dtype=np.uint32),
        v4_end=np.asarray([r.end for r in v4], dtype=np.uint32),
        v4_len=np.asarray([r.length for r in v4], dtype=np.int16),
        v4_asn=np.asarray([r.asn for r in v4], dtype=np.uint32),
        v6_bounds_hi=np.asarray([b >> 64 for b in b6], dtype=np.uint64),
        v6_bounds_lo=np.asarray([b & _LO for b in b6], dtype=np.uint64),
        v6_owner=np.asarray(o6, dtype=np.int32),
        v6_start_hi=np.asarray([r.start >> 64 for r in v6], dtype=np.uint64),
        v6_start_lo=np.asarray([r.start & _LO for r in v6], dtype=np.uint64),
        v6_len=np.asarray([r.length for r in v6], dtype=np.int16),
        v6_asn=np.asarray([r.asn for r in v6], dtype=np.uint32),
    )


def _direct_table(bounds: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Owner per /20 block, or -2 where the block holds a boundary (more specific routes).

    The DIR-24-8 idea (Gupta, Lin, McKeown, INFOCOM 1998) at a coarser grain: most addresses fall
    in blocks that one interval covers, and those are answered by one array read; only the
    rest need the binary search. 2^20 int32 entries = 4 MiB.
    """
    shift = 32 - DIRECT_BITS
    first = np.arange(1 << DIRECT_BITS, dtype=np.uint64) << np.uint64(shift)
    last = first + np.uint64((1 << shift) - 1)
    at_first = np.searchsorted(bounds, first, side="right") - 1
    at_last = np.searchsorted(bounds, last, side="right") - 1
    return np.where(at_first == at_last, owner[at_first], -2).astype(np.int32)


def save(index: Index, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*V4_FILES, *V6_FILES):
        np.save(folder / f"{name}.npy", getattr(index, name))


def load(folder: Path) -> Index:
    """Memory-map a saved index (read-only, shared between processes through the page cache)."""
    return Index(
        **{name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in (*V4_FILES, *V6_FILES)}
    )


def is_saved(folder: Path) -> bool:
    return all((folder / f"{name}.npy").is_file() for name in (*V4_FILES, *V6_FILES))


# --- address parsing --------------------------------------------------------------------------


def parse_ipv4(texts: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dotted quads → (uint32 values, valid mask).

    ``inet_pton`` is as strict as ``ipaddress`` (four decimal octets, no shorthand) and runs in
    C, so mapped over the whole batch it is far cheaper than ``ipaddress``; a vectorised numpy
    parser over a byte matrix is slower (it needs many passes over the batch). A batch holding
    anything invalid is redone one by one.
    """
    try:
        packed = b"".join(map(socket.inet_pton, repeat(socket.AF_INET), texts))
    except (OSError, TypeError, ValueError):  # ValueError: embedded NUL
        return _parse_ipv4_each(texts)
    values = np.frombuffer(packed, dtype=">u4").astype(np.uint32)
    return values, np.ones(len(values), dtype=bool)


def _parse_ipv4_each(texts: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    chunks: list[bytes] = []
    bad: list[int] = []
    for i, text in enumerate(texts):
        try:
            chunks.append(socket.inet_pton(socket.AF_INET, text))
        except (OSError, TypeError, ValueError):
            chunks.append(b"\0\0\0\0")
            bad.append(i)
    values = np.frombuffer(b"".join(chunks), dtype=">u4").astype(np.uint32)
    ok = np.ones(len(chunks), dtype=bool)
    ok[bad] = False
    return values, ok


def parse_ipv6(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IPv6 text → (hi, lo, valid); IPv6 is rarer in mail, so ``ipaddress`` is fast enough."""
    hi = np.zeros(len(texts), dtype=np.uint64)
    lo = np.zeros(len(texts), dtype=np.uint64)
    ok = np.zeros(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        try:
            value = int(ipaddress.IPv6Address(text.split("%", 1)[0]))
        except ValueError:
            continue
        hi[i], lo[i], ok[i] = value >> 64, value & _LO, True
    return hi, lo, ok


# --- lookups ------------------------------------------------------------------------------------


def lookup_v4(index: Index, values: np.ndarray) -> np.ndarray:
    """Route number for each uint32 address (-1 = not announced): one binary search per batch."""
    if len(index.v4_bounds) == 0:
        return np.full(len(values), -1, dtype=np.int32)
    owners = np.asarray(index.v4_direct)[values >> np.uint32(32 - DIRECT_BITS)]
    deep = np.nonzero(owners == -2)[0]
    if len(deep):
        pos = np.searchsorted(index.v4_bounds, values[deep], side="right") - 1
        owners[deep] = np.asarray(index.v4_owner)[pos]
    return owners


def lookup_v6(index: Index, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Route number for each 128-bit address given as (hi, lo) uint64 columns."""
    nb = len(index.v6_bounds_hi)
    if nb == 0 or len(hi) == 0:
        return np.full(len(hi), -1, dtype=np.int32)
    # Sort bounds and queries together (bounds first on ties: an address equal to a bound is in
    # it); the number of bounds before a query is the interval it falls in.
    all_hi = np.concatenate([index.v6_bounds_hi, hi])
    all_lo = np.concatenate([index.v6_bounds_lo, lo])
    is_query = np.concatenate([np.zeros(nb, dtype=np.int8), np.ones(len(hi), dtype=np.int8)])
    order = np.lexsort((is_query, all_lo, all_hi))
    bounds_before = np.cumsum(is_query[order] == 0)
    pos = np.empty(len(hi), dtype=np.int64)
    qmask = is_query[order] == 1
    pos[order[qmask] - nb] = bounds_before[qmask] - 1
    return np.asarray(index.v6_owner)[pos]


def route_prefix(index: Index, family: int, route: int) -> str:
    """Text form of a route: ``a.b.c.d/len``, or ``first-last`` for a non-CIDR range."""
    if family == 4:
        start, length = int(index.v4_start[route]), int(index.v4_len[route])
        if length >= 0:
            return f"{ipaddress.IPv4Address(start)}/{length}"
        end = int(index.v4_end[route])
        return f"{ipaddress.IPv4Address(start)}-{ipaddress.IPv4Address(end)}"
    start = (int(index.v6_start_hi[route]) << 64) | int(index.v6_start_lo[route])
    return f"{ipaddress.IPv6Address(start)}/{int(index.v6_len[route])}"


def announced_v4(index: Index) -> tuple[np.ndarray, np.ndarray]:
    """(asn, addresses) announced per origin AS: the union of its blocks, nested ones counted once."""
    bounds = np.asarray(index.v4_bounds).astype(np.int64)
    sizes = np.diff(np.append(bounds, 1 << 32))
    owner = np.asarray(index.v4_owner)
    held = owner >= 0
    asns = np.asarray(index.v4_asn)[owner[held]]
    uniq, inverse = np.unique(asns, return_inverse=True)
    return uniq, np.bincount(inverse, weights=sizes[held]).astype(np.int64)
