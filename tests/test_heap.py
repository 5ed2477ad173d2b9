"""Clustering keeps freed arrays in the heap while it runs, and gives the memory back after."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

from trapline.analyze import heap


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(heap._LIBC is None, reason="glibc only")
def test_freed_arrays_stay_in_the_heap_inside_the_block_and_leave_after_it() -> None:
    gc.collect()
    before = _rss_mb()
    with heap.reusing_freed_memory(), heap.reusing_freed_memory():  # nesting is fine
        arrays = [np.ones(1_000_000, dtype=np.int64) for _ in range(24)]  # 8 MB each
        del arrays
        gc.collect()
        kept = _rss_mb() - before
    after = _rss_mb() - before
    assert kept > 150  # freed, yet still this process's: the next band reuses it
    assert after < 50  # the heap is trimmed on leaving
