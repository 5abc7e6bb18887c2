"""What joining takes: the fourth domain's streams, its crown on the frozen trunk, the routers that
weight four experts, and the alternatives a reader would weigh (a crown from another base, a
monolithic crown retrained on all four domains).

Nothing here touches the tokenizer, the base or the three crowns already trained: they are loaded
from the cache as the chapter's run left them (``fingerprints`` records them before and after).
"""
from __future__ import annotations

import copy
from dataclasses import replace


import torch

from ... import late_domain
from ...cache import cache_root, cached, config_key
from ...checkpoint import model_fingerprint, trunk_hash
from ...config import DOMAINS, RouterConfig, derive_seed
from ...data import chars_per_token
from ...device import autocast, resolve, to_device
from ...experiment import Experiment, RouterRequest
from ...fusion import FusedModel
from ...model import GPT
from ...router import make_router
from ...streams import DomainStreams, mixed_windows, random_windows
from ...train import train_lm
from .growth import GrownRouter, prototype_row, with_row

LATE = late_domain.LATE_DOMAIN
FOUR = (*DOMAINS, LATE)
GROW_WINDOWS = 64  # router-split windows per domain that growing a router may see ("a little data")


def four_domain_streams(exp: Experiment) -> tuple[DomainStreams, dict]:
    """The chapter's streams with the late domain added (specialist, router, dev and eval splits),
    encoded by the pinned tokenizer; and the late corpus's fingerprint and sizes."""
    docs = late_domain.load_documents()
    fp = late_domain.fingerprint(docs)
    path = cache_root() / "streams" / f"{LATE}-{config_key(exp.tokenizer_fingerprint, fp)}"
    late = cached(path,
                  lambda: DomainStreams({s: {LATE: a} for s, a in late_domain.encode(exp.tokenizer, docs).items()}),
                  lambda obj, p: obj.save(p), DomainStreams.load)
    streams = DomainStreams({s: {**{d: exp.streams.get(d, s) for d in DOMAINS}, LATE: late.get(LATE, s)}
                             for s in late_domain.LATE_SPLITS})
    sizes = late_domain.stats(docs, {s: late.get(LATE, s) for s in late_domain.LATE_SPLITS})
    old = chars_per_token(exp.corpus, exp.streams.tokens()).loc["eval"]
    fit = {**{d: float(old[d]) for d in DOMAINS}, LATE: sizes["eval"]["chars_per_token"]}
    return streams, {"late_corpus_fingerprint": fp, "late_splits": sizes, "chars_per_token_eval": fit}


def fingerprints(exp: Experiment) -> dict[str, str]:
    """What must not change when a domain joins: the tokenizer, the base and the three crowns."""
    return {"tokenizer": exp.tokenizer_fingerprint, "base": model_fingerprint(exp.base()),
            **{f"{d} crown": model_fingerprint(m) for d, m in zip(DOMAINS, exp.specialists())}}


def new_crown(exp: Experiment, streams: DomainStreams, late_fp: str, base_seed: int | None = None) -> GPT:
    """The late domain's crown, trained on the frozen trunk of base ``base_seed`` (default: the run's own)
    exactly like the other crowns: same schedule, same K, a data seed of its own."""
    p, k = exp.profile, exp.k
    base_seed = exp.seed if base_seed is None else base_seed
    base = exp.base(base_seed)
    batch = lambda g: random_windows(streams.get(LATE, "specialist"), p.specialist.batch_size,  # noqa: E731
                                     p.model.block_size, g)
    return exp.checkpoint("specialist", [p.model, p.base, base_seed, p.specialist, LATE, late_fp, k, exp.seed],
                          lambda: exp.fine_tune(base, batch, LATE, k=k, desc=f"{LATE} specialist (base {base_seed})"),
                          {"role": "specialist", "domain": LATE, "seed": exp.seed, "freeze_k": k, "base_seed": base_seed,
                           "base_fingerprint": model_fingerprint(base), "trunk_hash": trunk_hash(base, k),
                           "profile": p.name, "joined_later": True})


def monolithic_four(exp: Experiment, streams: DomainStreams, late_fp: str) -> GPT:
    """The alternative to joining: one crown retrained on all four domains' specialist text, for as many
    steps as the four specialists together."""
    p, k = exp.profile, exp.k
    cfg = replace(p.specialist, steps=len(FOUR) * p.specialist.steps)

    def build():
        model = copy.deepcopy(exp.base())
        batch = lambda g: mixed_windows(streams, "specialist", cfg.batch_size, T=p.model.block_size, gen=g)[:2]  # noqa: E731
        return model, train_lm(model, batch, cfg, derive_seed(exp.seed, "monolithic", LATE), freeze_k=k,
                               desc="monolithic (four domains)")

    return exp.checkpoint("monolithic", [p.model, p.base, cfg, k, exp.seed, LATE, late_fp], build,
                          {"role": "monolithic", "domains": list(FOUR), "seed": exp.seed, "freeze_k": k,
                           "profile": p.name})


def four_way_config(exp: Experiment) -> RouterConfig:
    return replace(exp.profile.router, domain_mix=(1 / len(FOUR),) * len(FOUR))


def _four_way(exp: Experiment, experts: FusedModel, streams: DomainStreams, tag: str):
    cfg, k = four_way_config(exp), exp.k
    models = list(experts.specialists)
    return exp.train_or_load_router(RouterRequest(
        make=lambda: make_router("per_token", exp.profile.model.n_embd, len(models), cfg),
        key=["four-way", tag, cfg, [model_fingerprint(m) for m in models], k, experts.shared],
        init_tags=("router-init", "per_token", k, "four"), data_tags=("router", "per_token", "four"),
        inputs=experts.expert_logits, experts=models, reads=["trunk", k, experts.shared],
        desc=f"four-way router ({tag})", streams=streams), cfg)


def scratch_router(exp: Experiment, models: list, streams: DomainStreams):
    """(a) A four-way router trained from scratch, as the chapter trains its router."""
    return _four_way(exp, FusedModel(models, exp.k), streams, "scratch")


def other_base_router(exp: Experiment, models: list, streams: DomainStreams):
    """The negative case's router: four-way from scratch over experts that do not share a trunk (each
    crown runs on its own base's trunk), reading base X's trunk, as Break 1's router does."""
    return _four_way(exp, FusedModel(models, exp.k, shared=False), streams, "other base")


def grown_router(exp: Experiment, models: list, streams: DomainStreams):
    """(b) The chapter's router with one new output; only that output trains, on a little data
    (:data:`GROW_WINDOWS` windows per domain) and half the steps."""
    cfg, k, old = replace(four_way_config(exp), steps=exp.profile.router.steps // 2), exp.k, exp.router("per_token")
    return exp.train_or_load_router(RouterRequest(
        make=lambda: GrownRouter(old), key=["grown", cfg, model_fingerprint(old), [model_fingerprint(m) for m in models], k],
        init_tags=("router-init", "grown", k), data_tags=("router", "grown"),
        inputs=FusedModel(models, k).expert_logits, experts=models, reads=["trunk", k], desc="grown router (one new output)",
        streams=streams, pool_windows=GROW_WINDOWS), cfg)


@torch.no_grad()
def prototype_router(exp: Experiment, models: list, streams: DomainStreams):
    """(c) The chapter's router with one new output set from prototypes: no gradient step at all, only
    the trunk states of :data:`GROW_WINDOWS` router-split windows per domain."""
    old, k, dev = exp.router("per_token"), exp.k, resolve()
    gen = torch.Generator().manual_seed(derive_seed(exp.seed, "prototype-windows"))
    trunk = to_device(models[0], dev)
    feats = {}
    for d in FOUR:
        x, _ = random_windows(streams.get(d, "router"), GROW_WINDOWS, exp.profile.model.block_size, gen)
        with autocast(dev):
            feats[d] = torch.cat([trunk.trunk(to_device(x[i:i + 16], dev), k).float() for i in range(0, len(x), 16)])
    return with_row(to_device(old, dev), *prototype_row(old, feats, LATE))
