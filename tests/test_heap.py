"""minigpt.heap: the mmap threshold is fixed at import, raised only inside loops that reuse their
memory, and lowered again (with the heap's free pages returned) however the loop ends."""
from __future__ import annotations

import sys

import pytest

from minigpt import heap


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


def test_loops_raise_the_threshold_then_restore_it_and_trim(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(heap, "_libc", libc)
    with heap.reuse_large_blocks():
        assert libc.calls == [("mallopt", heap.M_MMAP_THRESHOLD, heap.LOOP_THRESHOLD_BYTES)]
    assert libc.calls[1:] == [("mallopt", heap.M_MMAP_THRESHOLD, heap.THRESHOLD_BYTES), ("malloc_trim", 0)]


def test_a_failing_loop_still_restores_the_threshold(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(heap, "_libc", libc)
    with pytest.raises(KeyboardInterrupt):
        with heap.reuse_large_blocks():
            raise KeyboardInterrupt
    assert libc.calls[-2:] == [("mallopt", heap.M_MMAP_THRESHOLD, heap.THRESHOLD_BYTES), ("malloc_trim", 0)]


def test_nothing_happens_when_the_threshold_was_left_to_glibc(monkeypatch):
    monkeypatch.setattr(heap, "_libc", None)
    with heap.reuse_large_blocks():
        pass  # no libc to call: must not fail


def test_the_opt_out_leaves_glibc_alone(monkeypatch):
    monkeypatch.setattr(heap, "_libc", None)
    monkeypatch.setenv("MINIGPT_HEAP_DEFAULT", "1")
    assert heap.fix_mmap_threshold() is False
    assert heap._libc is None  # so loops do not touch it either


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt exists on Linux only")
def test_the_threshold_is_fixed_on_glibc(monkeypatch):
    monkeypatch.setattr(heap, "_libc", None)
    monkeypatch.delenv("MINIGPT_HEAP_DEFAULT", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert heap.fix_mmap_threshold() is True
    assert heap._libc is not None
