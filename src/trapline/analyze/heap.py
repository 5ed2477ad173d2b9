"""Keep freed large arrays in the process heap while the clustering runs (glibc only).

Clustering makes many short-lived arrays of a few megabytes per band. glibc serves each from a
fresh memory mapping and unmaps it on free, so every band pays page faults and zeroing for
memory it just gave back, and that cost grows with the input. Inside ``reusing_freed_memory``
such arrays come from the heap and freed memory stays there for the next band; on leaving, the
thresholds go back to glibc's defaults and the heap is trimmed, so the process keeps nothing.
Elsewhere (musl, macOS) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import threading
from collections.abc import Iterator

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_LARGEST_HEAP_CHUNK = 32 * 1024 * 1024  # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit
_KEEP_ALL = 2**31 - 1
_DEFAULT = 128 * 1024  # glibc's default for both thresholds
_lock = threading.Lock()
_depth = 0


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt, libc.malloc_trim  # noqa: B018  (glibc has both)
    except (OSError, AttributeError, TypeError):
        return None
    return libc


_LIBC = _libc()


@contextlib.contextmanager
def reusing_freed_memory() -> Iterator[None]:
    """Serve arrays up to 32 MiB from the heap and keep freed memory until the block ends."""
    global _depth
    if _LIBC is None:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            _LIBC.mallopt(_M_MMAP_THRESHOLD, _LARGEST_HEAP_CHUNK)
            _LIBC.mallopt(_M_TRIM_THRESHOLD, _KEEP_ALL)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _LIBC.mallopt(_M_MMAP_THRESHOLD, _DEFAULT)
                _LIBC.mallopt(_M_TRIM_THRESHOLD, _DEFAULT)
                _LIBC.malloc_trim(0)
