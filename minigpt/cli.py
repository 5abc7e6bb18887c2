"""Command line: ``python -m minigpt run --profile cpu --seed 0`` (what ``make run`` calls).

Also ``break1``, ``break2``, ``sweep-freeze`` and ``hybrid`` (same options), each printing a summary
and writing its JSON next to ``table.json``, and ``seeds --seeds 0,1,2``: ``run`` for each seed, then
the mean and std of the headline numbers across them.
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


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise ValueError(f"--seeds takes comma-separated integers such as 0,1,2, got {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text} repeats a seed; give each seed once")
    return seeds


def _run_seeds(profile: str | None, seeds: list[int]) -> None:
    """``run`` for each seed (cached models are loaded), then mean ± std across seeds."""
    from .analysis import seed_summary
    from .cache import write_json
    from .experiment import Experiment, results_root

    reports = []
    for seed in seeds:
        exp = Experiment(profile, seed)
        minutes = exp.profile.expected_minutes
        print(f"seed {seed}: training or loading (if nothing is cached: "
              f"{f'about {minutes:.0f} min' if minutes >= 1 else 'under a minute'})", flush=True)
        # the ceiling tells whether a better-trained router could close what the run leaves open
        reports.append({**exp.run()["report"], "routing_ceiling": exp.routing_ceiling()})
    summary = seed_summary(reports)
    name = reports[0]["profile"]
    pd.set_option("display.width", 160)
    print(f"\nprofile {name}, seeds {','.join(map(str, seeds))}, K={reports[0]['freeze_k']} "
          f"({reports[0]['headline']}; routing accuracy of the per-token router; 'ceiling' = the same "
          f"router fitted on the eval windows themselves)\n")
    print(summary.round(4).to_string())
    out = results_root() / name / "seeds.json"
    write_json(out, {"profile": name, "seeds": seeds, "headline": reports[0]["headline"],
                     "summary": summary.round(6).astype(object).where(summary.notna(), None).to_dict(orient="index"),
                     "provenance": {f"seed-{r['seed']}": {k: r[k] for k in ("corpus_fingerprint", "tokenizer_fingerprint",
                                                                           "router_code", "base_fingerprint")}
                                    for r in reports}})
    print(f"\nwrote {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minigpt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    profile_option = dict(choices=sorted(PROFILES), default=None,
                          help="model/data/steps scale (default: $MINIGPT_PROFILE or cpu)")
    for name, help_ in [("run", "train (or load) everything and print the chapter's table"),
                        ("break1", "Break 1: specialists from differently seeded bases, and a tokenizer mismatch"),
                        ("break2", "Break 2: router collapse from imbalanced data and a near-zero temperature"),
                        ("sweep-freeze", "freeze depth K = 0..L-1 and the divergence -> gain fit"),
                        ("hybrid", "last-token vs per-token router on single-domain and hybrid windows")]:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--profile", **profile_option)
        p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("seeds", help="`run` for several seeds, then mean and std of gain, oracle gap and routing")
    p.add_argument("--profile", **profile_option)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    args = parser.parse_args(argv)

    from .experiment import Experiment

    t0 = time.time()
    try:
        if args.command == "seeds":
            _run_seeds(args.profile, _parse_seeds(args.seeds))
        elif args.command == "run":
            _print_run(Experiment(args.profile, args.seed).run())
        elif args.command in ("break1", "break2", "sweep-freeze"):
            from . import breaks

            fn, summary = {"break1": (breaks.break1, breaks.summarize_break1),
                           "break2": (breaks.break2, breaks.summarize_break2),
                           "sweep-freeze": (breaks.freeze_sweep, breaks.summarize_freeze_sweep)}[args.command]
            rep = fn(Experiment(args.profile, args.seed))
            print(summary(rep))
            print(f"\nwrote {rep['out_path']}")
        elif args.command == "hybrid":
            from .hybrid import run_hybrid, summarize_hybrid

            rep = run_hybrid(Experiment(args.profile, args.seed))
            print(summarize_hybrid(rep))
            print(f"\nwrote {rep['out_path']}")
    except (ValueError, RuntimeError) as err:  # our errors are one line that says what to do
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"total {time.time() - t0:.1f} s")
    return 0
