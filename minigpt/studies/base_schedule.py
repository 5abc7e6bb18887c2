"""The base's schedule, chosen so that every seed gets past the same fork (docs/design.md, "The base").

At ``cpu`` with a 50-step warmup, bases of one configuration ended in two groups 0.4 nats apart, and
the order of the batches, not the initialisation, decided which. This study trains the base with each
warmup of :data:`WARMUP_SHARES` (a share of the steps; same peak learning rate, same 800 steps, so the same cost) for
:data:`SEEDS` seeds, and scores every base on the dev windows (choices) and the eval windows
(reported only). The chosen warmup is the lowest mean dev loss among candidates whose seeds agree
(standard deviation at most :data:`MAX_SD` nats); the current value stays when none does. Each base
also reports how spread out its first block's attention is (:mod:`minigpt.analysis.attention`),
the difference between the two groups.
"""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from ..analysis.attention import attention_entropy
from ..config import DOMAINS, REPO_ROOT
from ..device import resolve, to_device
from ..experiment import Experiment
from ..scoring import model_nll
from .common import token_sample, write_report

WARMUP_SHARES = (1 / 16, 1 / 8, 1 / 4, 1 / 2)  # of the base's steps: 50, 100, 200, 400 at cpu
SEEDS = (0, 1, 2, 3, 4)
MAX_SD = 0.02  # nats: the seeds of a candidate must agree this closely
CURVE_EVERY = 10  # the training curve is kept as means of this many steps


def _mixed(nll: dict) -> float:
    return float(np.mean([float(v.mean()) for v in nll.values()]))


def _one_base(exp: Experiment, warmup: int, seed: int) -> dict:
    """One base of the candidate: dev and eval loss, training time, its curve and its first block's attention."""
    p = exp.profile
    run = Experiment(replace(p, base=replace(p.base, warmup=warmup)), seed)
    base = run.base()
    losses = base.manifest["train_losses"]
    curve = [float(np.mean(losses[i:i + CURVE_EVERY])) for i in range(0, len(losses), CURVE_EVERY)]
    xs = to_device(token_sample(exp.dev_sets, 16), resolve())
    return {"dev_mixed": _mixed(model_nll(base, exp.dev_sets, p.eval_batch_size)),
            "eval_mixed": _mixed(model_nll(base, exp.eval_sets, p.eval_batch_size)),
            "train_seconds": base.manifest["train_seconds"], "curve": curve,
            "layer0_attention_entropy": attention_entropy(to_device(base, resolve()), xs, 0)}


def _candidate(exp: Experiment, warmup: int, seeds) -> dict:
    per = {str(s): _one_base(exp, warmup, s) for s in seeds}
    dev, ev = [r["dev_mixed"] for r in per.values()], [r["eval_mixed"] for r in per.values()]
    return {"warmup": warmup, "lr": exp.profile.base.lr, "steps": exp.profile.base.steps, "seeds": per,
            "dev_mean": float(np.mean(dev)), "dev_sd": float(np.std(dev, ddof=1)),
            "eval_mean": float(np.mean(ev)), "eval_sd": float(np.std(ev, ddof=1)),
            "train_seconds_mean": float(np.mean([r["train_seconds"] for r in per.values()]))}


def choose(candidates: list[dict], current: int) -> int:
    """Lowest mean dev loss among the candidates whose seeds agree (sd <= MAX_SD); else ``current``."""
    agree = [c for c in candidates if c["dev_sd"] <= MAX_SD]
    return min(agree, key=lambda c: c["dev_mean"])["warmup"] if agree else current


def base_schedule(exp: Experiment, warmups=None, seeds=SEEDS, out=None) -> dict:
    """Every warmup of ``warmups`` (default :data:`WARMUP_SHARES` of the base's steps) for every seed of
    ``seeds``; writes ``base_schedule.json``."""
    p = exp.profile
    warmups = warmups or [max(1, round(share * p.base.steps)) for share in WARMUP_SHARES]
    # the profile's own warmup first: its bases are the ones every later step uses
    order = sorted(warmups, key=lambda w: (w != p.base.warmup, w))
    candidates = sorted((_candidate(exp, w, seeds) for w in order), key=lambda c: c["warmup"])
    report = {"profile": p.name, "seed": exp.seed, "seeds": list(seeds), "domains": list(DOMAINS),
              "dev_windows_per_domain": p.dev_chunks, "eval_windows_per_domain": p.eval_chunks,
              "current_warmup": p.base.warmup, "candidates": candidates,
              "criterion": f"lowest mean dev loss among warmups whose {len(seeds)} seeds' dev losses have a standard "
                           f"deviation of at most {MAX_SD} nats; else the current warmup",
              "chosen_warmup": choose(candidates, p.base.warmup), "curve_every": CURVE_EVERY, **exp.provenance()}
    return write_report(exp, report, "base_schedule", out)


def summarize(rep: dict) -> str:
    lines = [f"Base schedule — profile {rep['profile']}, seeds {rep['seeds']}, "
             f"{rep['dev_windows_per_domain']} dev windows per domain; criterion: {rep['criterion']}"]
    for c in rep["candidates"]:
        dev = ", ".join(f"{s}: {r['dev_mixed']:.3f}" for s, r in c["seeds"].items())
        lines.append(f"  warmup {c['warmup']:>4}: dev {c['dev_mean']:.4f} ± {c['dev_sd']:.4f}  eval {c['eval_mean']:.4f} "
                     f"± {c['eval_sd']:.4f}  ({dev}); {c['train_seconds_mean']:.0f} s per base")
    lines.append(f"chosen warmup: {rep['chosen_warmup']} (current {rep['current_warmup']})")
    return "\n".join(lines)


def reference(profile: str = "cpu") -> dict | None:
    """The committed ``base_schedule.json`` of ``profile`` (``results/reference/``), or None when this
    installation has no reference results (a wheel installed without the repository)."""
    path = REPO_ROOT / "results" / "reference" / profile / "seed-0" / "base_schedule.json"
    return json.loads(path.read_text()) if path.exists() else None
