"""Keep a long run's memory from growing: large freed tensors go straight back to the system,
except inside loops that keep nothing between batches (training, scoring), where reusing them is
safe and much faster.

glibc serves allocations below its mmap threshold from a heap that it rarely returns to the
system. The threshold starts at 128 KiB and grows each time a large block is freed, so after a
few training phases most tensors of a few hundred KiB to a few MiB come from that heap; a scoring
pass that mixes them with small long-lived results then fragments it. Break 1 at ``cpu`` grew past
20 GB this way. With the threshold fixed at 1 MiB, every larger tensor is its own mapping, released
when freed.

That mapping costs page faults on every allocation: at ``cpu`` a third of a training step's time
went to the kernel. A loop that allocates the same tensors every step and keeps none of them
cannot fragment the heap: :func:`reuse_large_blocks` raises the threshold for the loop and, after it, lowers it
again and hands the heap's free pages back (``malloc_trim``). ``benchmarks/heap.py`` measures
both sides against glibc's default, run for run.
"""
from __future__ import annotations

import ctypes
import sys
from contextlib import contextmanager
from typing import Iterator

from .config import env

M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h
THRESHOLD_BYTES = 1 << 20  # studies and scoring: every tensor above 1 MiB is its own mapping
LOOP_THRESHOLD_BYTES = 64 << 20  # inside such loops: everything but the largest buffers from the heap

_libc: ctypes.CDLL | None = None  # set once the threshold is fixed; None leaves glibc alone


def fix_mmap_threshold(threshold: int = THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes; True when it was set. Does nothing off
    glibc (macOS, Windows, musl), when ``$MINIGPT_HEAP_DEFAULT`` is 1, or when the user already chose
    one with ``MALLOC_MMAP_THRESHOLD_``."""
    global _libc
    if not sys.platform.startswith("linux") or env("MINIGPT_HEAP_DEFAULT") == "1" or env("MALLOC_MMAP_THRESHOLD_"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        if libc.mallopt(M_MMAP_THRESHOLD, threshold):  # 1 on success
            _libc = libc
            return True
    except (OSError, AttributeError):  # not glibc
        pass
    return False


@contextmanager
def reuse_large_blocks() -> Iterator[None]:
    """Inside: tensors up to 64 MiB are reused from the heap (each step of the loop allocates the
    same sizes again and keeps none of them). After: back to 1 MiB, and the heap's free pages are returned to the
    system. Does nothing when :func:`fix_mmap_threshold` did not fix the threshold."""
    libc = _libc
    if libc is None:
        yield
        return
    libc.mallopt(M_MMAP_THRESHOLD, LOOP_THRESHOLD_BYTES)
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES)
        libc.malloc_trim(0)
