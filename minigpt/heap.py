"""Keep a long run's memory from growing: large freed tensors go straight back to the system.

glibc serves allocations below its mmap threshold from a heap that it rarely returns to the
system. The threshold starts at 128 KiB and grows each time a large block is freed, so after a
few training phases most tensors of a few hundred KiB to a few MiB come from that heap; a scoring
pass that mixes them with small tensors then fragments it. Break 1 at ``cpu`` grew past 20 GB this
way. With the threshold fixed at 1 MiB, every larger tensor is its own mapping, released when freed.
The cost: a fresh mapping (and its page faults) per large allocation; ``benchmarks/heap.py``
measures it against glibc's default, run for run.
"""
from __future__ import annotations

import ctypes
import sys

from .config import env

M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h
THRESHOLD_BYTES = 1 << 20


def fix_mmap_threshold(threshold: int = THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes; True when it was set. Does nothing off
    glibc (macOS, Windows, musl), when ``$MINIGPT_HEAP_DEFAULT`` is 1, or when the user already chose
    one with ``MALLOC_MMAP_THRESHOLD_``."""
    if not sys.platform.startswith("linux") or env("MINIGPT_HEAP_DEFAULT") == "1" or env("MALLOC_MMAP_THRESHOLD_"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))  # 1 on success
    except (OSError, AttributeError):  # not glibc
        return False
