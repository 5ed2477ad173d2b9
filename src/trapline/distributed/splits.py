"""Cut the inputs of an ingest into independent tasks, and read one task's messages.

Planning walks the inputs exactly as the local reader does (``maildir.walk``, the same skip
rules, the same sorted order). Small files are grouped until a task holds about
``target_bytes``; an uncompressed mbox larger than that is cut at ``From `` separators that
the local splitter would also accept (a strict postmark after a blank line), so every piece
splits into the same messages as the whole file; compressed files cannot be cut and go whole.
Reading a task uses the local reader and splitter: the bytes, and so the ids, are the same.

Inputs may be URIs (``s3a://bucket/spam/2008-*/*.mbox.gz``, ``file://``): the driver expands
and walks them with pyarrow (:mod:`trapline.distributed.uris`), a plan carries the URIs, and
each task opens its own through pyarrow with ranged reads. Local paths and URIs go through the
same planning and reading code below; only the opening differs.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from trapline import objectstores
from trapline.distributed import uris
from trapline.errors import SourceError
from trapline.ingest.compression import sniff, strip_compression_suffix
from trapline.ingest.maildir import FileEntry, display_name, file_entry, walk
from trapline.ingest.mbox import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_POSTMARK,
    is_postmark,
    split_mbox,
)
from trapline.ingest.sources import SourceReader, is_mbox_name
from trapline.model import RawMessage, SourceProblem
from trapline.objectstores import ObjectStores

_WINDOW = 1 << 20  # bytes read at a time while looking for the next separator
_HEAD = 512


@dataclass(slots=True, frozen=True)
class Split:
    """One task: whole files, or the byte range ``[start, end)`` of one mbox (paths or URIs)."""

    paths: tuple[str, ...]
    singles: tuple[bool, ...] = ()  # Maildir files: one message each, never split
    start: int = 0
    end: int = -1  # -1 = whole files

    @property
    def is_range(self) -> bool:
        return self.end >= 0


@dataclass(slots=True, frozen=True)
class Plan:
    splits: tuple[Split, ...]
    problems: tuple[SourceProblem, ...]  # inputs that cannot be read at all
    skipped: tuple[str, ...]  # non-mail files passed over while walking (README, ...)


def _entries(
    paths: Sequence[str], skipped: list[str], stores: ObjectStores
) -> Iterator[FileEntry | SourceProblem]:
    for given in paths:
        if objectstores.is_uri(given):
            yield from uris.entries(given, stores, skipped)
            continue
        if not os.path.exists(given):
            raise SourceError(
                f"{given}: no such file or directory (or no permission to see it); "
                "check the path and try again"
            )
        if os.path.isdir(given):
            yield from walk(given, skipped)
        else:
            yield file_entry(given)


def _separator_after(handle: object, offset: int, size: int) -> int:
    """Offset of the first strict separator line (after a blank line) at or after ``offset``."""
    read = handle.read  # type: ignore[attr-defined]
    seek = handle.seek  # type: ignore[attr-defined]
    pos = offset
    while pos < size:
        seek(max(0, pos - 2))
        window = read(_WINDOW + 2 + MAX_POSTMARK)
        base = max(0, pos - 2)
        i = window.find(b"\nFrom ", pos - base - 1 if pos > base else 0)
        while i != -1:
            line_end = window.find(b"\n", i + 1)
            if line_end == -1:
                break  # the line runs past the window: look again from here
            blank = i >= 1 and (window[i - 1 : i] == b"\n" or window[i - 2 : i] == b"\n\r")
            if blank and is_postmark(window[i + 1 : line_end]):
                return base + i + 1
            i = window.find(b"\nFrom ", i + 1)
        pos = base + max(1, len(window) - MAX_POSTMARK)
        if len(window) < _WINDOW:
            break
    return size


def _cut_mbox(entry: FileEntry, target: int, stores: ObjectStores) -> list[Split]:
    """Byte ranges of an uncompressed mbox, each starting at a separator line."""
    size = entry.size or 0
    cuts = [0]
    handle, _size = objectstores.open_input(entry.path, stores)
    with handle:
        while cuts[-1] + target < size:
            nxt = _separator_after(handle, cuts[-1] + target, size)
            if nxt >= size:
                break
            cuts.append(nxt)
    cuts.append(size)
    return [Split((entry.path,), (False,), a, b) for a, b in itertools.pairwise(cuts)]


def _compressed(path: str, stores: ObjectStores) -> bool:
    """Compressed files are read whole: known by their suffix, or else by their magic bytes."""
    if strip_compression_suffix(os.path.basename(path)) != os.path.basename(path):
        return True
    try:
        handle, _size = objectstores.open_input(path, stores)
        with handle:
            return sniff(handle.read(_HEAD)) is not None
    except Exception:
        return True  # unreadable or an archive: the reader reports it, whole


def plan(paths: Sequence[str], target_bytes: int, stores: ObjectStores | None = None) -> Plan:
    """Tasks of about ``target_bytes`` each, in the local reader's order (paths or URIs)."""
    stores = stores or ObjectStores.from_settings({})
    skipped: list[str] = []
    problems: list[SourceProblem] = []
    splits: list[Split] = []
    group: list[FileEntry] = []
    group_bytes = 0

    def flush() -> None:
        nonlocal group, group_bytes
        if group:
            splits.append(Split(tuple(e.path for e in group), tuple(e.single for e in group)))
        group, group_bytes = [], 0

    for entry in _entries(paths, skipped, stores):
        if isinstance(entry, SourceProblem):
            problems.append(entry)
            continue
        size = entry.size or 0
        big_mbox = (
            size > target_bytes
            and not entry.single
            and is_mbox_name(os.path.basename(entry.path))
            and not _compressed(entry.path, stores)
        )
        if big_mbox:
            flush()
            splits.extend(_cut_mbox(entry, target_bytes, stores))
            continue
        if group and group_bytes + size > target_bytes:
            flush()
        group.append(entry)
        group_bytes += size
    flush()
    return Plan(tuple(splits), tuple(problems), tuple(skipped))


def read_split(
    split: Split, stores: ObjectStores | None = None
) -> Iterator[RawMessage | SourceProblem]:
    """The messages (and problems) of one task, read by the local reader and splitter."""
    stores = stores or ObjectStores.from_settings({})
    if not split.is_range:
        for path, single in zip(
            split.paths, split.singles or (False,) * len(split.paths), strict=True
        ):
            yield from _read_whole(path, single, stores)
        return
    (path,) = split.paths
    name = f"{display_name(path)}@{split.start}"  # items are numbered within the range
    try:
        handle, _size = objectstores.open_input(path, stores)
        with handle:
            handle.seek(split.start)
            data = handle.read(split.end - split.start)
    except FileNotFoundError:
        yield SourceProblem(name, "vanished", "removed between planning and reading")
        return
    except OSError as exc:
        yield SourceProblem(name, "read-error", f"{exc.strerror or exc}")
        return
    yield from split_mbox([data], name, mode="mbox", max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES)


def _read_whole(
    path: str, single: bool, stores: ObjectStores
) -> Iterator[RawMessage | SourceProblem]:
    """A whole file or object, by the local reader (``single``: a Maildir file, one message)."""
    name = display_name(path)
    try:
        handle, size = objectstores.open_input(path, stores)
    except FileNotFoundError:
        yield SourceProblem(name, "vanished", "removed between planning and reading")
        return
    except OSError as exc:
        yield SourceProblem(name, "unreadable", f"{exc.strerror or exc}; check permissions")
        return
    with handle:
        yield from SourceReader(()).read_open(handle, name, size=size, single=single)
