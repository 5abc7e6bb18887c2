"""Train every language model the book needs, several at a time, before its notebooks run.

Each model is cached under a key of its full config (minigpt.cache), so a notebook that asks for
one later loads it in a second. Training them here first, in worker processes with one torch
thread each, keeps both cores busy: two small models side by side train about twice as fast as one
model on two threads. The notebooks then spend their time on routers and scores, not on waiting.

The plan is what the book trains (the chapter's run, Break 1's bases and specialists, the fourth
domain's crown), taken from the studies' own defaults so it follows them when they change.
``everything=True`` adds what ``make reference`` also trains and the book reads from the committed
reference: the freeze sweep's crowns (:func:`..freeze_sweep.saved_or_run`), Break 1's
other-tokenizer crown (:func:`..break1.with_tokenizer_case`), and joining's alternatives (a crown on
another base, a monolithic crown on four domains: :func:`..add_specialist.with_alternatives`).
Bases come first, then every crown, longest first. ``python -m minigpt prefetch --jobs 2`` (``make book`` calls it).
"""
from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Sequence

import torch

from ..config import DOMAINS, get_profile, quiet_worker
from ..experiment import Experiment
from ..progress import progress
from .add_specialist.joining import FOUR, four_domain_streams, monolithic_four, new_crown
from .break1.sets import base_seeds_for
from .freeze_sweep import default_points, none_specialist
from .tokenizer_mismatch import alt_tokenizer_specialist


@dataclass(frozen=True)
class Job:
    """One model to train: ``kind`` names the call (:data:`CALLS`), ``seed`` the run it belongs to."""
    kind: str
    seed: int
    arg: str | int | None = None
    cost: float = 1.0  # in crown trainings, to start the longest first

    @property
    def label(self) -> str:
        return f"{self.kind} (seed {self.seed}{'' if self.arg is None else f', {self.arg}'})"


def _late_crown(exp: Experiment, base_seed: int):
    streams, late = four_domain_streams(exp)
    return new_crown(exp, streams, late["late_corpus_fingerprint"], base_seed=base_seed)


def _monolithic_four(exp: Experiment, _arg):
    streams, late = four_domain_streams(exp)
    return monolithic_four(exp, streams, late["late_corpus_fingerprint"])


def _none(exp: Experiment, domain: str):
    return none_specialist(exp, domain)


def _other_tokenizer(exp: Experiment, _arg):
    return alt_tokenizer_specialist(exp)


# kind -> what trains (or loads) it, given the run and the job's argument
CALLS = {
    "base": lambda exp, _arg: exp.base(),
    "specialist": lambda exp, domain: exp.specialist(domain),
    "monolithic": lambda exp, _arg: exp.monolithic(),
    "sweep crown": lambda exp, arg: exp.specialist(arg.split("@")[0], k=int(arg.split("@")[1])),
    "nothing-frozen crown": _none,
    "other-tokenizer crown": _other_tokenizer,
    "late crown": lambda exp, base_seed: _late_crown(exp, int(base_seed)),
    "monolithic (four domains)": _monolithic_four,
}


def book_plan(profile: str | None = None, seed: int = 0, everything: bool = False) -> tuple[list[Job], list[Job]]:
    """(bases, crowns): every language model the book trains at ``seed`` (``everything``: and the ones
    it reads from the committed reference)."""
    exp = Experiment(profile, seed)
    p = exp.profile
    teams = sorted(set(base_seeds_for(exp, None)))
    # the fourth domain's negative case puts a crown on base seed + 1
    bases = [Job("base", s, cost=p.base.steps / p.specialist.steps) for s in sorted({*teams, *([seed + 1] if everything else [])})]
    crowns = [Job("specialist", s, d) for s in teams for d in DOMAINS]
    crowns += [Job("monolithic", seed, cost=p.monolithic.steps / p.specialist.steps), Job("late crown", seed, seed)]
    if everything:
        ks, nothing_frozen = default_points(p)
        crowns += [Job("sweep crown", seed, f"{d}@{K}") for K in ks if K != exp.k for d in DOMAINS]
        crowns += [Job("nothing-frozen crown", seed, d, cost=1.3) for d in DOMAINS] if nothing_frozen else []
        crowns += [Job("other-tokenizer crown", seed), Job("late crown", seed, seed + 1)]
        crowns += [Job("monolithic (four domains)", seed, cost=len(FOUR))]  # four crowns' steps: the longest job
    return bases, sorted(crowns, key=lambda j: -j.cost)


def _one_thread() -> None:
    """Worker start-up: one thread for torch and the tokenizer library, no progress bars."""
    quiet_worker()
    torch.set_num_threads(1)


def _train(profile: str, job: Job) -> tuple[str, float]:
    t0 = time.time()
    CALLS[job.kind](Experiment(profile, job.seed), job.arg)
    return job.label, time.time() - t0


def _run_wave(pool: ProcessPoolExecutor, profile: str, jobs: Sequence[Job], desc: str) -> dict[str, float]:
    """Every job of one wave, at most the pool's size at a time; seconds per model as each finishes."""
    futures = [pool.submit(_train, profile, j) for j in jobs]
    seconds = {}
    for f in progress(as_completed(futures), desc=f"{desc} ({len(jobs)})"):
        label, s = f.result()
        seconds[label] = round(s, 1)
    return seconds


def prefetch(profile: str | None = None, seed: int = 0, jobs: int = 2, everything: bool = False) -> dict:
    """Train (or load) every model of :func:`book_plan` (``everything``: the reference's too) with ``jobs``
    worker processes. The data
    (corpus, tokenizer, token streams) is built first, here, so the workers only read it."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}; use the number of CPU cores (or GPUs)")
    t0 = time.time()
    name = get_profile(profile).name
    _build_data(Experiment(name, seed))
    bases, crowns = book_plan(name, seed, everything)
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_one_thread) as pool:
        seconds = _run_wave(pool, name, bases, "prefetch: bases")
        seconds |= _run_wave(pool, name, crowns, "prefetch: crowns")
    return {"profile": name, "seed": seed, "jobs": jobs, "models": seconds, "wall_seconds": round(time.time() - t0, 1)}


def _build_data(exp: Experiment) -> None:
    """Corpus, tokenizer and token streams (the fourth domain's too), once, before any worker reads them."""
    four_domain_streams(exp)


def summarize(rep: dict) -> str:
    lines = [f"prefetch at {rep['profile']!r}, seed {rep['seed']}, {rep['jobs']} at a time: "
             f"{len(rep['models'])} models in {rep['wall_seconds']:.0f} s (seconds each; ~0 = already cached)"]
    return "\n".join(lines + [f"  {label}: {s:.1f}" for label, s in rep["models"].items()])
