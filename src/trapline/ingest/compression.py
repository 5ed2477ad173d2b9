"""Turn a binary input (plain or gzip/bzip2/xz/zstd compressed) into a stream of bounded chunks.

The codec is chosen by the first bytes (magic numbers), not the file name: a ``.gz`` renamed to
``.eml`` still opens, and a plain file called ``x.gz`` is not mangled. Every read is bounded
(``CHUNK`` output bytes per step) so a decompression bomb cannot take memory with it; the mbox
splitter downstream caps the size of one message.

Truncation is reported as :class:`TruncatedInput`, garbage as :class:`CorruptInput`, so the
caller can keep the messages recovered before the damage and say what happened.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import zlib
from collections.abc import Callable, Iterator
from typing import IO, cast

import zstandard

CHUNK = 1 << 20  # 1 MiB of decompressed output per step: big enough for C-speed scanning

# Magic numbers: RFC 1952 §2.3.1 (gzip ID1 ID2 and CM=8, the only method), xz file format
# §2.1.1.1, RFC 8878 §3.1.1 (zstd). Long enough that no plain mail starts with one by chance.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b\x08", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
# bzip2: "BZh", block size 1-9, then a block magic (pi) or the end-of-stream magic (sqrt(pi)),
# so a message that happens to begin with "BZh" is not mistaken for an archive.
_BZIP2 = re.compile(rb"BZh[1-9](?:1AY&SY|\x17rE8P\x90)")
# Containers we do not unpack: say so instead of feeding a zip's bytes to the MIME parser.
_ARCHIVE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "zip"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"Rar!\x1a\x07", "rar"),
)
COMPRESSED_SUFFIXES = (".gz", ".gzip", ".bz2", ".xz", ".zst", ".zstd")


class TruncatedInput(Exception):
    """The compressed stream ended before its end-of-stream marker."""


class CorruptInput(Exception):
    """The compressed stream holds data its codec cannot decode."""


class UnsupportedArchive(Exception):
    """A container format (zip, 7z, rar, tar) that must be unpacked first."""


def sniff(head: bytes) -> str | None:
    """Codec name for the first bytes of an input, ``None`` for plain data.

    Raises :class:`UnsupportedArchive` for containers such as zip or tar.
    """
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if _BZIP2.match(head):
        return "bzip2"
    for magic, name in _ARCHIVE_MAGIC:
        if head.startswith(magic):
            raise UnsupportedArchive(name)
    if len(head) >= 262 and head[257:262] == b"ustar":  # POSIX tar header magic at offset 257
        raise UnsupportedArchive("tar")
    return None


def strip_compression_suffix(name: str) -> str:
    """``phishing0.mbox.gz`` -> ``phishing0.mbox``: the name that tells the inner format."""
    lower = name.lower()
    for suffix in COMPRESSED_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


class CountingReader(io.RawIOBase):
    """A raw reader that reports every byte it hands out (compressed bytes, for progress)."""

    def __init__(self, inner: IO[bytes], on_read: Callable[[int], None]) -> None:
        super().__init__()
        self._inner = inner
        self._on_read = on_read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self._inner.read(len(view))
        n = len(data) if data else 0
        view[:n] = data or b""
        if n:
            self._on_read(n)
        return n


def open_counted(inner: IO[bytes], on_read: Callable[[int], None]) -> io.BufferedReader:
    """Wrap ``inner`` so reads are counted and the first bytes can be peeked for sniffing."""
    return io.BufferedReader(CountingReader(inner, on_read), buffer_size=CHUNK)


def peek_head(stream: io.BufferedReader, size: int = 512) -> bytes:
    """Up to ``size`` leading bytes without consuming them (fewer near EOF or on a pipe)."""
    return stream.peek(size)[:size]


def iter_chunks(stream: io.BufferedReader, codec: str | None) -> Iterator[bytes]:
    """Decompressed chunks of at most ~``CHUNK`` bytes; never an empty chunk."""
    if codec == "zstd":
        yield from _iter_zstd(stream)
        return
    try:
        with _decompressing(stream, codec) as reader:
            while True:
                chunk = reader.read(CHUNK)
                if not chunk:
                    return
                yield chunk
    except EOFError as exc:  # gzip, bz2 and lzma all say "ended before the end-of-stream marker"
        raise TruncatedInput(str(exc)) from exc
    except (gzip.BadGzipFile, zlib.error, lzma.LZMAError) as exc:
        raise CorruptInput(str(exc)) from exc
    except OSError as exc:
        if codec == "bzip2" and "Invalid data stream" in str(exc):
            raise CorruptInput(str(exc)) from exc
        raise


def _decompressing(stream: io.BufferedReader, codec: str | None) -> io.BufferedIOBase:
    """A reader of decompressed bytes; closing it leaves ``stream`` open."""
    if codec is None:
        return _Unclosed(stream)
    if codec == "gzip":
        return gzip.GzipFile(fileobj=stream, mode="rb")
    if codec == "bzip2":
        return bz2.BZ2File(stream, mode="rb")
    if codec == "xz":
        return lzma.LZMAFile(stream, mode="rb")
    raise ValueError(f"unknown codec {codec!r}")  # sniff() only returns the names above


class _Unclosed(io.BufferedIOBase):
    """Pass reads through; ``close`` does not close the wrapped stream (the caller owns it)."""

    def __init__(self, inner: io.BufferedReader) -> None:
        super().__init__()
        self._inner = inner

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return self._inner.read(size)


def _iter_zstd(stream: io.BufferedReader) -> Iterator[bytes]:
    """zstd frames one after another (RFC 8878 §3.1), detecting a frame cut short.

    ``stream_reader`` bounds the output of every read (a bomb cannot take memory) but silently
    returns a short result for a truncated frame, so a :class:`ZstdFrameWalker` follows the frame
    structure over the compressed bytes on their way in and tells whether input ended cleanly.
    """
    walker = ZstdFrameWalker()
    tee = _Tee(stream, walker.feed)
    reader = zstandard.ZstdDecompressor().stream_reader(
        cast(IO[bytes], tee), read_size=CHUNK, read_across_frames=True, closefd=False
    )
    try:
        while True:
            chunk = reader.read(CHUNK)
            if not chunk:
                break
            yield chunk
        while tee.read(CHUNK):  # let the walker see anything the decoder did not ask for
            pass
    except zstandard.ZstdError as exc:
        raise CorruptInput(str(exc)) from exc
    if walker.error:
        raise CorruptInput(walker.error)
    if not walker.complete:
        raise TruncatedInput("zstd frame ended before its last block")


class _Tee:
    """A reader that shows every byte it passes on to ``sink`` first."""

    def __init__(self, inner: io.BufferedReader, sink: Callable[[bytes], None]) -> None:
        self._inner = inner
        self._sink = sink

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        if data:
            self._sink(data)
        return data


class ZstdFrameWalker:
    """Follow zstd frame and block headers (RFC 8878 §3.1.1, §3.1.1.2) without decoding.

    Only lengths are read: magic number, frame header size, then each block header's type and
    size until the block marked last, then the optional checksum; skippable frames
    (§3.1.2) are skipped whole. ``complete`` is true when input ends on a frame boundary.
    """

    _SKIPPABLE = range(0x184D2A50, 0x184D2A60)
    _MAGIC = 0xFD2FB528

    def __init__(self) -> None:
        self._buf = b""  # header bytes collected so far
        self._need = 4  # header bytes wanted before the next step
        self._skip = 0  # payload bytes to pass over
        self._step: Callable[[bytes], None] = self._magic
        self._checksum = False
        self.error = ""

    @property
    def complete(self) -> bool:
        return self._step == self._magic and not self._buf and not self._skip and not self.error

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.error:
            if self._skip:
                n = min(self._skip, len(view))
                self._skip -= n
                view = view[n:]
                continue
            take = self._need - len(self._buf)
            self._buf += bytes(view[:take])
            view = view[take:]
            if len(self._buf) == self._need:
                header, self._buf = self._buf, b""
                self._step(header)

    def _want(self, need: int, step: Callable[[bytes], None]) -> None:
        self._need, self._step = need, step

    def _magic(self, header: bytes) -> None:
        magic = int.from_bytes(header, "little")
        if magic in self._SKIPPABLE:
            self._want(4, self._skippable_size)
        elif magic == self._MAGIC:
            self._want(1, self._descriptor)
        else:
            self.error = f"not a zstd frame (magic {header.hex()})"

    def _skippable_size(self, header: bytes) -> None:
        self._skip = int.from_bytes(header, "little")
        self._want(4, self._magic)

    def _descriptor(self, header: bytes) -> None:
        d = header[0]
        fcs_flag, single, dict_flag = d >> 6, (d >> 5) & 1, d & 3
        self._checksum = bool((d >> 2) & 1)
        fcs = (1 if single else 0, 2, 4, 8)[fcs_flag]
        rest = (0 if single else 1) + (0, 1, 2, 4)[dict_flag] + fcs
        self._skip = rest  # window descriptor, dictionary id, content size: lengths only
        self._want(3, self._block)

    def _block(self, header: bytes) -> None:
        value = int.from_bytes(header, "little")
        last, kind, size = value & 1, (value >> 1) & 3, value >> 3
        if kind == 3:
            self.error = "reserved zstd block type"
            return
        self._skip = 1 if kind == 1 else size  # RLE blocks carry one byte
        if not last:
            self._want(3, self._block)
        elif self._checksum:
            self._skip += 4
            self._want(4, self._magic)
        else:
            self._want(4, self._magic)
