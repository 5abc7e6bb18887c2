"""What fixing glibc's mmap threshold (minigpt/heap.py) costs and saves, on a study-like workload.

    python benchmarks/heap.py                          # the package: 1 MiB, loops reuse their memory
    python benchmarks/heap.py --no-reuse               # 1 MiB everywhere, loops included
    MINIGPT_HEAP_DEFAULT=1 python benchmarks/heap.py   # glibc's default, for the comparison

Run them side by side (alternating, several runs each) with any whole-process timer, e.g.
``/usr/bin/time -v``, and compare wall time and peak resident memory. The workload mimics a study
at the ``cpu`` size with random weights: a few training steps of a crown (large gradient and
optimizer buffers freed and reallocated), then scoring passes that stack N experts' logits (tens
of MB each) and keep only small per-window results, repeated as a study scores one model set after
another. The last line prints the process's peak and final resident memory.
"""
from __future__ import annotations

import argparse
import copy
import resource

import torch

import minigpt  # noqa: F401  (importing the package applies the threshold unless MINIGPT_HEAP_DEFAULT=1)
from minigpt import heap
from minigpt.config import PROFILES, TrainConfig, env
from minigpt.fusion import FusedModel
from minigpt.model import GPT
from minigpt.scoring import per_window_losses
from minigpt.train import train_lm


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def workload(rounds: int, windows: int) -> None:
    cfg = PROFILES["cpu"].model
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    base = GPT(cfg)
    batch = lambda g: tuple(torch.randint(0, cfg.vocab_size, (16, cfg.block_size), generator=g) for _ in range(2))  # noqa: E731
    x, y = (torch.randint(0, cfg.vocab_size, (windows, cfg.block_size), generator=gen) for _ in range(2))
    for r in range(rounds):  # one "model set" per round: train three crowns a little, then score them
        specs = [copy.deepcopy(base) for _ in range(3)]
        for i, m in enumerate(specs):
            train_lm(m, batch, TrainConfig(steps=3, batch_size=16, warmup=1), seed=r * 3 + i, freeze_k=1, desc="")
        per_window_losses(FusedModel(specs, 1), x, y, 16)
        del specs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--windows", type=int, default=128, help="scored windows per round")
    ap.add_argument("--no-reuse", action="store_true",
                    help="keep the 1 MiB threshold inside training and scoring loops too")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.no_reuse:
        heap._libc = None  # the threshold stays fixed; reuse_large_blocks() then does nothing
    workload(args.rounds, args.windows)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    threshold = ("glibc default" if env("MINIGPT_HEAP_DEFAULT") == "1"
                 else "1 MiB everywhere" if args.no_reuse else "1 MiB, loops reuse")
    print(f"threshold={threshold} peak_rss_mb={peak:.0f} final_rss_mb={_rss_mb():.0f}")


if __name__ == "__main__":
    main()
