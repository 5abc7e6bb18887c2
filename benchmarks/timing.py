"""Interleaved timing shared by the benchmarks: variants take turns so they see the same load."""
from __future__ import annotations

import statistics
import time

import torch


def _wait() -> None:
    """CUDA runs asynchronously: wait for the queued kernels before reading the clock."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Timings(dict):
    """name -> list of seconds, one per repetition; repetition i of every variant ran back to back."""

    def median(self, name: str) -> float:
        return statistics.median(self[name])

    def ratio(self, a: str, b: str) -> float:
        """Median over repetitions of t_a / t_b: pairs runs that saw the same background load."""
        return statistics.median(x / y for x, y in zip(self[a], self[b]))


def timed(fns: dict, reps: int, budget_s: float, warmup: int = 1) -> Timings:
    """Run every variant ``reps`` times, interleaved in rotating order so they share the load."""
    names = list(fns)
    for fn in fns.values():
        for _ in range(warmup):
            fn()  # allocator, first-call dispatch
    times = Timings({n: [] for n in names})
    start = time.perf_counter()
    for r in range(reps):
        for name in names[r % len(names):] + names[:r % len(names)]:
            _wait()
            t0 = time.perf_counter()
            fns[name]()
            _wait()
            times[name].append(time.perf_counter() - t0)
        if r >= 2 and time.perf_counter() - start > budget_s:
            break
    return times
