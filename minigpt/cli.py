"""Command line: ``python -m minigpt run --profile cpu --seed 0`` (what ``make run`` calls).

Also ``break1``, ``break2``, ``sweep-freeze`` and ``hybrid`` (same options), each printing a summary
and writing its JSON next to ``table.json``.
"""
from __future__ import annotations

import argparse
import sys
import time

import pandas as pd

from .config import PROFILES


def _print_run(res: dict) -> None:
    rep = res["report"]
    pd.set_option("display.width", 160)
    print(f"\nChapter 32 table — profile {rep['profile']}, seed {rep['seed']}, K={rep['freeze_k']} "
          f"(mean held-out loss, nats/token; Δ% > 0 is better)\n")
    print(res["table"].round(4).to_string())
    print("\nrouting accuracy (argmax = the window's own domain):")
    for router, acc in rep["routing_accuracy"].items():
        print(f"  {router:>10}: " + "  ".join(f"{d} {a:.1%}" for d, a in acc.items()))
    print(f"\noracle gap ({rep['headline']} − oracle per sequence): {rep['oracle_gap_nats']:+.4f} nats")
    print("  by token position: " + "  ".join(f"{k}: {v:+.4f}" for k, v in rep["oracle_gap_by_position"].items()))
    print("\nStep 8 litmus:")
    for c in rep["litmus"]:
        print(f"  {'✓' if c['holds'] else '✗'} {c['condition']}  [{c['evidence']}]")
    print(f"\nwrote {res['out_dir']}/table.json and cross_domain.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minigpt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in [("run", "train (or load) everything and print the chapter's table"),
                        ("break1", "Break 1: specialists from differently seeded bases, and a tokenizer mismatch"),
                        ("break2", "Break 2: router collapse from imbalanced data and a near-zero temperature"),
                        ("sweep-freeze", "freeze depth K = 0..L-1 and the divergence -> gain fit"),
                        ("hybrid", "last-token vs per-token router on single-domain and hybrid windows")]:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--profile", choices=sorted(PROFILES), default=None,
                       help="model/data/steps scale (default: $MINIGPT_PROFILE or cpu)")
        p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from .experiment import Experiment

    t0 = time.time()
    try:
        exp = Experiment(args.profile, args.seed)
        if args.command == "run":
            _print_run(exp.run())
        elif args.command in ("break1", "break2", "sweep-freeze"):
            from . import breaks

            fn, summary = {"break1": (breaks.break1, breaks.summarize_break1),
                           "break2": (breaks.break2, breaks.summarize_break2),
                           "sweep-freeze": (breaks.freeze_sweep, breaks.summarize_freeze_sweep)}[args.command]
            rep = fn(exp)
            print(summary(rep))
            print(f"\nwrote {rep['out_path']}")
        elif args.command == "hybrid":
            from .hybrid import run_hybrid, summarize_hybrid

            rep = run_hybrid(exp)
            print(summarize_hybrid(rep))
            print(f"\nwrote {rep['out_path']}")
    except (ValueError, RuntimeError) as err:  # our errors are one line that says what to do
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"total {time.time() - t0:.1f} s")
    return 0
