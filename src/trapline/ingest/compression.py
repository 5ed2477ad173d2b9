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
import zlib
from collections.abc import Callable, Iterator
from typing import IO

import zstandard

CHUNK = 1 << 20  # 1 MiB of decompressed output per step: big enough for C-speed scanning
_ZSTD_FEED = 2048  # zstd input slice; caps one step's output at ~64 MiB even for a bomb

# Magic numbers: RFC 1952 §2.3.1 (gzip), bzip2 "BZh", xz file format §2.1.1.1, RFC 8878 §3.1.1.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
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

    ``stream_reader`` silently returns a short result for a truncated frame, so we drive a
    ``decompressobj`` ourselves and check ``eof`` at the end of input.
    """
    dctx = zstandard.ZstdDecompressor()
    dobj = dctx.decompressobj()
    fed = False  # has the current frame received any input?
    pending: list[bytes] = []
    pending_size = 0
    try:
        while True:
            block = stream.read(CHUNK)
            if not block:
                break
            view = memoryview(block)
            for start in range(0, len(view), _ZSTD_FEED):
                piece = bytes(view[start : start + _ZSTD_FEED])
                while piece:
                    fed = True
                    out = dobj.decompress(piece)
                    if out:
                        pending.append(out)
                        pending_size += len(out)
                    if dobj.eof:
                        piece = dobj.unused_data
                        dobj = dctx.decompressobj()
                        fed = False
                    else:
                        piece = b""
                if pending_size >= CHUNK:
                    yield b"".join(pending)
                    pending, pending_size = [], 0
    except zstandard.ZstdError as exc:
        raise CorruptInput(str(exc)) from exc
    if pending:
        yield b"".join(pending)
    if fed:
        raise TruncatedInput("zstd frame ended before its end")
