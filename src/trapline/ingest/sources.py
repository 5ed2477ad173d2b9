"""Read mail from files, directories, Maildirs, mboxes, compressed files and stdin.

``SourceReader(paths)`` yields, one at a time and in a deterministic order, a
:class:`~trapline.model.RawMessage` for every message found and a
:class:`~trapline.model.SourceProblem` for every input that yielded no bytes (unreadable file,
empty file, truncated or corrupt archive, oversized message). Nothing is dropped silently.

What each input becomes:

* a directory is walked recursively in sorted name order; a directory holding ``cur/`` and
  ``new/`` is a Maildir (every file one message, ``tmp/`` skipped; see
  :mod:`trapline.ingest.maildir`);
* inside directories, files that are obviously not mail (``README*``, ``LICENSE*``, ``SOURCE*``,
  ``COMMIT*``, ``*.md``, ``*.json``, ``package.json``, hidden files, ...) are skipped and
  COUNTED in :attr:`SourceReader.skipped` (a list of paths), not reported as problems: they are not
  messages, and ``seen = messages + quarantined`` must stay true for the corpus. A path named on
  the command line is always read, whatever its name;
* a file is an mbox when its name says so (``*.mbox``, ``*.mbx``, ``mbox``, also under a
  compression suffix) or when it starts with ``From `` and holds a second strict postmark
  separator; otherwise it is ONE message whose bytes are the whole file, exactly (see
  :mod:`trapline.ingest.mbox` for separators and mboxrd unquoting);
* gzip, bzip2, xz and zstd are recognised by their magic bytes and decompressed on the fly;
  zip/7z/rar/tar are reported as ``unsupported-archive``;
* ``-`` is standard input (mbox or single message, detected from the content).

Sources: the path as given (``dir/sub/file``), plus ``#N`` (0-based) for mbox items, and
``<stdin>`` for standard input. A zero-byte file is a ``SourceProblem("empty-file")``.

A message bigger than ``max_message_bytes`` (default 64 MiB: real mail is far smaller, anything
bigger is junk or an attack on memory) becomes ``SourceProblem("too-large")`` and reading goes on
with the next message. ``unquote=False`` keeps mbox items exactly as stored (no mboxrd unquoting).

Symbolic links met while walking a directory are read only when their target stays inside the
directory given (``follow_symlinks`` reads the others too); a link out of the tree, a dangling
link, a link loop, and a fifo, socket or device inside a directory are problems. A path named
on the command line is read as named (a fifo such as ``<(zcat x)`` included), except a device.

Problem reasons: ``unreadable``, ``vanished``, ``read-error``, ``empty-file``, ``empty-message``,
``too-large``, ``truncated-archive``, ``corrupt-archive``, ``unsupported-archive``,
``symlink-outside``, ``dangling-symlink``, ``symlink-loop``, ``not-a-file``.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

from trapline.errors import SourceError
from trapline.ingest.compression import (
    CorruptInput,
    TruncatedInput,
    UnsupportedArchive,
    iter_chunks,
    open_counted,
    peek_head,
    sniff,
    strip_compression_suffix,
)
from trapline.ingest.maildir import FileEntry, display_name, file_entry, walk
from trapline.ingest.mbox import DEFAULT_MAX_MESSAGE_BYTES, Mode, split_mbox
from trapline.model import RawMessage, SourceProblem

STDIN_NAME = "<stdin>"

_MBOX_SUFFIXES = (".mbox", ".mbx")
_SLURP_BYTES = 1 << 20  # files up to this size are read in one call
_HEAD = 512  # bytes needed to recognise every codec and container (tar's magic is at 257)


def is_mbox_name(name: str) -> bool:
    """Whether a file name declares an mbox (``x.mbox``, ``x.mbx``, ``mbox``, ``x.mbox.gz``)."""
    lower = strip_compression_suffix(name).lower()
    return lower == "mbox" or lower.endswith(_MBOX_SUFFIXES)


class SourceReader:
    """Stream messages from ``paths``; see the module docstring for formats and problems.

    Missing paths raise :class:`~trapline.errors.SourceError` here, before anything is read.
    ``bytes_total`` (sum of input sizes as stored; ``None`` when stdin or a pipe is read) and
    ``bytes_read`` (advanced as compressed bytes are consumed) drive a progress bar;
    ``skipped`` lists the non-mail files passed over while walking directories.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        stdin: IO[bytes] | None = None,
        unquote: bool = True,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        follow_symlinks: bool = False,
    ) -> None:
        self._stdin = stdin
        self._follow = follow_symlinks
        self._unquote = unquote
        self._limit = max_message_bytes
        self._paths: list[str | None] = []  # None stands for stdin
        for given in paths:
            if str(given) == "-":
                if _is_terminal(stdin if stdin is not None else sys.stdin):
                    raise SourceError(
                        "'-' reads mail from standard input, which is a terminal here; "
                        "pipe or redirect a file in (trapline ingest - < spam.mbox)"
                    )
                self._paths.append(None)
                continue
            if not os.path.exists(given):
                raise SourceError(
                    f"{given}: no such file or directory (or no permission to see it); "
                    "check the path and try again"
                )
            self._paths.append(str(Path(given)))
        # One walk now for the progress total and the skipped list; the walk is repeated while
        # reading (generators, so a huge Maildir is never held as a list of files).
        self.skipped: list[str] = []
        self.bytes_read = 0
        total: int | None = 0
        for entry in self._entries(self.skipped):
            if entry is None or (isinstance(entry, FileEntry) and entry.size is None):
                total = None
            elif isinstance(entry, FileEntry) and total is not None:
                total += entry.size or 0
        self.bytes_total: int | None = total

    def __iter__(self) -> Iterator[RawMessage | SourceProblem]:
        self.bytes_read = 0  # iterating again reads everything again
        for entry in self._entries(None):
            if entry is None:
                stream = self._stdin if self._stdin is not None else sys.stdin.buffer
                yield from self._read_stream(stream, STDIN_NAME, single=False)
            elif isinstance(entry, SourceProblem):
                yield entry
            else:
                yield from self._read_file(entry)

    def _entries(self, skipped: list[str] | None) -> Iterator[FileEntry | SourceProblem | None]:
        for path in self._paths:
            if path is None:
                yield None
            elif os.path.isdir(path):
                yield from walk(path, skipped, follow_symlinks=self._follow)
            elif _is_device(path):
                # Named, but /dev/zero would never end; a fifo (<(zcat x)) is fine.
                yield SourceProblem(path, "not-a-file", "a device, not a file of mail")
            else:
                yield file_entry(path)

    # --- reading ----------------------------------------------------------------------------

    def _advance(self, n: int) -> None:
        self.bytes_read += n

    def _read_file(self, entry: FileEntry) -> Iterator[RawMessage | SourceProblem]:
        name = display_name(entry.path)
        try:
            handle = open(entry.path, "rb", buffering=0)  # noqa: SIM115 - closed below
        except FileNotFoundError:
            yield SourceProblem(name, "vanished", "the file was removed before it could be read")
            return
        except OSError as exc:
            yield SourceProblem(name, "unreadable", f"{exc.strerror or exc}; check permissions")
            return
        with handle:
            yield from self.read_open(handle, name, size=entry.size, single=entry.single)

    def read_open(
        self, handle: IO[bytes], name: str, *, size: int | None, single: bool = False
    ) -> Iterator[RawMessage | SourceProblem]:
        """The messages of a file someone else opened (a local file, or an object in a store
        opened through pyarrow): ``size`` None streams it; the caller closes ``handle``."""
        if size is None or size > _SLURP_BYTES:
            yield from self._read_stream(handle, name, single=single)
            return
        # Small file (the common one-message-per-file case): one read, no stream machinery,
        # which is what makes a 6,000-file corpus read at several times the speed.
        try:
            data = handle.read()
        except OSError as exc:
            yield SourceProblem(name, "read-error", f"{exc.strerror or exc}")
            return
        self._advance(len(data))
        try:
            codec = sniff(data[:_HEAD])
        except UnsupportedArchive as exc:
            yield SourceProblem(name, "unsupported-archive", f"{exc} archive: unpack it first")
            return
        if codec is None:
            yield from self._items([data], name, single=single)
        else:
            stream = open_counted(io.BytesIO(data), lambda _n: None)
            yield from self._items(iter_chunks(stream, codec), name, single=single)

    def _read_stream(
        self, raw: IO[bytes], name: str, *, single: bool
    ) -> Iterator[RawMessage | SourceProblem]:
        stream = open_counted(raw, self._advance)
        try:
            codec = sniff(peek_head(stream, _HEAD))
        except UnsupportedArchive as exc:
            yield SourceProblem(name, "unsupported-archive", f"{exc} archive: unpack it first")
            return
        except OSError as exc:
            yield SourceProblem(name, "read-error", f"{exc.strerror or exc}")
            return
        yield from self._items(iter_chunks(stream, codec), name, single=single)

    def _items(
        self, chunks: Iterable[bytes], name: str, *, single: bool
    ) -> Iterator[RawMessage | SourceProblem]:
        """Messages from decompressed ``chunks``; damage below becomes a problem after them."""
        found = 0
        try:
            if single:  # Maildir: one message per file by definition, never split
                yield from _whole(chunks, name, self._limit)
                return
            mode: Mode = "mbox" if is_mbox_name(name) else "auto"
            for item in split_mbox(
                chunks, name, mode=mode, unquote=self._unquote, max_message_bytes=self._limit
            ):
                if isinstance(item, RawMessage):
                    found += 1
                yield item
        except TruncatedInput as exc:
            yield SourceProblem(
                name,
                "truncated-archive",
                f"{exc}; kept the {found} complete message(s) before the damage, "
                "dropped the incomplete rest",
            )
        except CorruptInput as exc:
            yield SourceProblem(
                name, "corrupt-archive", f"{exc}; kept the {found} complete message(s) before it"
            )
        except OSError as exc:
            yield SourceProblem(
                name, "read-error", f"{exc.strerror or exc} after {found} message(s)"
            )


def _whole(chunks: Iterable[bytes], name: str, limit: int) -> Iterator[RawMessage | SourceProblem]:
    """One message made of every (decompressed) byte of the input."""
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size <= limit:
            parts.append(chunk)
        else:
            parts.clear()  # keep counting, so the problem can say how big it was
    if size == 0:
        yield SourceProblem(name, "empty-file", "the input holds no bytes")
    elif size > limit:
        yield SourceProblem(name, "too-large", f"{size} bytes > limit {limit}; skipped")
    else:
        yield RawMessage(parts[0] if len(parts) == 1 else b"".join(parts), name)


def _is_device(path: str) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def _is_terminal(stream: IO[bytes] | IO[str] | None) -> bool:
    """Whether reading ``stream`` would wait for someone to type mail in."""
    try:
        return stream is not None and stream.isatty()
    except (OSError, ValueError):  # closed or detached streams
        return False
