"""Everything Chapter 32 trains, handed out by one cached factory.

``Experiment(profile, seed)`` hands out the corpus, tokenizer, token streams, evaluation windows,
base, specialists, monolithic baseline and routers, training each one only if no valid cached copy
exists. Every checkpoint goes through :meth:`Experiment.checkpoint` and every router through
:meth:`Experiment.train_or_load_router`, keyed by the full config plus the fingerprints of the
data and models below it. Notebooks, the CLI and the studies ask for what they need and share the
cache, so they run alone, in any order, or in parallel. Scoring and reports live elsewhere
(:mod:`minigpt.scoring`, :mod:`minigpt.chapter`).
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from safetensors.torch import load_model, save_model
from tokenizers import Tokenizer

from . import data as data_mod
from . import hf
from .cache import cache_root, cached, config_key
from .checkpoint import load_checkpoint, model_fingerprint, read_manifest, save_checkpoint, trunk_hash
from .config import DOMAINS, SPLITS, Profile, RouterConfig, check_domain, derive_seed, get_profile
from .device import resolve, to_device
from .fusion import FusedModel, feature_width
from .model import GPT
from .router import CausalRouter, check_router_kind, make_router, router_code_fingerprint, train_router
from .router_pool import (KnownLosses, LatestPool, RouterPool, build_pool, experts_window_losses, pool_windows,
                          train_router_on_pool)
from .streams import DomainStreams, encode_stream, mixed_windows, random_windows, split_windows
from .tokenizer import check_vocab, eos_id, fingerprint, load_tokenizer, save_tokenizer, train_tokenizer
from .train import train_lm

# a router's cache entry: a folder with its weights and its per-step training losses
ROUTER_WEIGHTS, ROUTER_HISTORY = "router.safetensors", "history.json"


Windows = dict[str, tuple[torch.Tensor, torch.Tensor]]  # {domain: (inputs (n, T), targets (n, T))}


@dataclass
class RouterRequest:
    """One router, named and explained: how to build it, its cache key and seeds, what it reads and weights."""

    make: Callable[[], nn.Module]  # the untrained router, built right after seeding with ``init_tags``
    key: list  # cache key parts; the first names the entry
    init_tags: tuple  # seed of its initialisation (derived from the experiment's seed)
    data_tags: tuple  # seed of its batches
    inputs: Callable  # x -> (router input, expert logits (N, B, T, V)), run without gradients
    experts: list  # the models whose logits ``inputs`` stacks
    reads: list  # what ``inputs`` reads, named in the pool's key
    desc: str  # the progress bar's label
    streams: DomainStreams | None = None  # where the router windows come from (default: the experiment's)
    pool_windows: int | None = None  # pool windows per domain (default: the profile's ``router_pool``)

    @property
    def fused(self) -> FusedModel | None:
        """The fused model whose ``expert_logits`` are ``inputs`` (every request the package makes), else None."""
        owner = getattr(self.inputs, "__self__", None)
        return owner if isinstance(owner, FusedModel) else None


class Experiment:
    """Everything Chapter 32 trains, for one profile and one seed."""

    def __init__(self, profile: str | Profile | None = None, seed: int = 0, **overrides) -> None:
        self.profile = get_profile(profile, **overrides)
        self.seed = seed
        self.k = self.profile.freeze_k
        self._memo: dict[str, Any] = {}
        self._pools = LatestPool()

    def __repr__(self) -> str:
        return f"Experiment(profile={self.profile.name!r}, seed={self.seed}, K={self.k})"

    # -- data ------------------------------------------------------------------------------
    @cached_property
    def corpus(self):
        return data_mod.load_corpus()

    @cached_property
    def corpus_fingerprint(self) -> str:
        """Content hash of the corpus, in every cache key below it: a changed corpus rebuilds everything."""
        return data_mod.corpus_fingerprint(self.corpus)

    def provenance(self) -> dict[str, str]:
        """The fingerprints every results JSON records: results with others must not be pooled with these."""
        return {"corpus_fingerprint": self.corpus_fingerprint, "tokenizer_fingerprint": self.tokenizer_fingerprint,
                "router_code": router_code_fingerprint()}

    @cached_property
    def tokenizer(self) -> Tokenizer:
        p = self.profile
        if p.name == "gpt2":  # GPT-2's weights only make sense with its own tokenizer (minigpt.hf)
            return check_vocab(hf.pretrained_tokenizer("gpt2"), p.model)
        key = config_key("tokenizer", p.model.vocab_size, p.tokenizer_chars, self.corpus_fingerprint)
        path = cache_root() / "tokenizers" / f"{key}.json"

        def build() -> Tokenizer:  # equal characters from each domain's pretrain split
            return train_tokenizer(data_mod.balanced_texts(self.corpus, "pretrain", p.tokenizer_chars),
                                   p.model.vocab_size)

        return check_vocab(cached(path, build, save_tokenizer, load_tokenizer), p.model)

    @cached_property
    def tokenizer_fingerprint(self) -> str:
        return fingerprint(self.tokenizer)

    @cached_property
    def streams(self) -> DomainStreams:
        path = cache_root() / "streams" / f"{self.tokenizer_fingerprint[:16]}-{self.corpus_fingerprint[:16]}"

        def build() -> DomainStreams:
            eos = eos_id(self.tokenizer)
            return DomainStreams({s: {d: encode_stream(self.tokenizer, data_mod.domain_texts(self.corpus, d, s), eos)
                                      for d in DOMAINS} for s in SPLITS})

        return cached(path, build, lambda obj, p: obj.save(p), DomainStreams.load)

    # every reported number is scored on eval windows (the studies on fewer of them, profile.study_windows
    # per domain, spread the same way); every choice is made on dev windows
    eval_sets = cached_property(lambda self: self._windows("eval", self.profile.eval_chunks))
    study_sets = cached_property(lambda self: self._windows("eval", self.profile.study_windows))
    dev_sets = cached_property(lambda self: self._windows("dev", self.profile.dev_chunks))

    def _windows(self, split: str, n: int) -> Windows:
        return split_windows(self.streams, split, n, self.profile.model.block_size)

    # -- models ----------------------------------------------------------------------------
    def checkpoint(self, kind: str, key_parts: list, build: Callable[[], tuple[GPT, list]], manifest: dict,
                   tokenizer_fingerprint: str | None = None) -> GPT:
        """Load or train one checkpoint (``build()`` -> model, per-step losses), keyed by ``kind``, the data
        fingerprints and ``key_parts``; it comes back with ``.manifest``. ``tokenizer_fingerprint``
        overrides the shared tokenizer's (Break 1: text encoded by another tokenizer)."""
        path = self.checkpoint_path(kind, key_parts)
        key = path.name.removeprefix(f"{kind}-")
        if key in self._memo:
            return self._memo[key]
        expect = {"tokenizer_fingerprint": tokenizer_fingerprint or self.tokenizer_fingerprint, "cache_key": key}

        def make() -> tuple[GPT, dict]:
            t0 = time.time()
            model, losses = build()
            # the thread count is recorded, not keyed: it moves only the last bits (README, "Reproducibility")
            return model, {**manifest, **expect, "train_losses": losses, "train_seconds": time.time() - t0,
                           "torch_threads": torch.get_num_threads()}

        model, _ = cached(path, make, lambda obj, tmp: save_checkpoint(obj[0], tmp, obj[1]),
                          lambda q: load_checkpoint(q, expect))
        to_device(model, resolve())  # trained or loaded, every model lives on the device from here on
        model.manifest = read_manifest(path)
        self._memo[key] = model
        return model

    def checkpoint_path(self, kind: str, key_parts: list) -> Path:
        """Where :meth:`checkpoint` keeps ``kind`` with ``key_parts``: ``<cache>/checkpoints/<kind>-<key>``."""
        key = config_key(kind, self.tokenizer_fingerprint, self.corpus_fingerprint, *key_parts)
        return cache_root() / "checkpoints" / f"{kind}-{key}"

    def base(self, seed: int | None = None) -> GPT:
        """The pretrained base: all layers trained on equal parts of the three domains."""
        seed = self.seed if seed is None else seed
        p = self.profile
        if p.name == "gpt2":  # the base is pretrained GPT-2 itself, the same for every seed (minigpt.hf)
            return self.checkpoint("base", [p.model, "hf:gpt2"], lambda: (hf.pretrained_base(p.model, "gpt2"), []),
                                   {"role": "base", "profile": p.name, "source": "hf:gpt2"})

        def build():
            torch.manual_seed(derive_seed(seed, "base-init"))
            model = GPT(p.model)
            batch = lambda g: mixed_windows(self.streams, "pretrain", p.base.batch_size, T=p.model.block_size, gen=g)[:2]  # noqa: E731
            return model, train_lm(model, batch, p.base, derive_seed(seed, "base-data"), desc=f"base seed {seed}")

        return self.checkpoint("base", [p.model, p.base, seed], build, {"role": "base", "seed": seed, "profile": p.name})

    def fine_tune(self, base: GPT, next_batch, domain: str, k: int, desc: str) -> tuple[GPT, list[float]]:
        """A copy of ``base``, crown trained on ``next_batch`` with ``domain``'s schedule and data seed."""
        model = copy.deepcopy(base)
        seed = derive_seed(self.seed, "specialist", domain)
        return model, train_lm(model, next_batch, self.profile.specialist, seed, freeze_k=k, desc=desc)

    def specialist(self, domain: str, base_seed: int | None = None, k: int | None = None) -> GPT:
        """A copy of the base whose crown (blocks K.., final LayerNorm) was trained on ``domain``."""
        check_domain(domain)
        base_seed = self.seed if base_seed is None else base_seed
        k = self.k if k is None else k
        p = self.profile
        base = self.base(base_seed)
        stream = lambda: self.streams.get(domain, "specialist")  # noqa: E731
        batch = lambda g: random_windows(stream(), p.specialist.batch_size, p.model.block_size, g)  # noqa: E731
        return self.checkpoint("specialist", [p.model, p.base, base_seed, p.specialist, domain, k, self.seed],
                               lambda: self.fine_tune(base, batch, domain, k=k, desc=f"{domain} specialist"),
                               {"role": "specialist", "domain": domain, "seed": self.seed, "freeze_k": k,
                                "base_seed": base_seed, "base_fingerprint": model_fingerprint(base),
                                "trunk_hash": trunk_hash(base, k), "profile": p.name})

    def specialists(self, base_seed: int | None = None, k: int | None = None) -> list[GPT]:
        return [self.specialist(d, base_seed, k) for d in DOMAINS]

    def monolithic(self, k: int | None = None) -> GPT:
        """Equal-compute baseline: the same crown trained for 3x the steps on mixed specialist data."""
        k = self.k if k is None else k
        p = self.profile
        base = self.base()

        def build():
            model = copy.deepcopy(base)
            batch = lambda g: mixed_windows(self.streams, "specialist", p.monolithic.batch_size, T=p.model.block_size,
                                            gen=g)[:2]  # noqa: E731
            return model, train_lm(model, batch, p.monolithic, derive_seed(self.seed, "monolithic"),
                                   freeze_k=k, desc="monolithic")

        return self.checkpoint("monolithic", [p.model, p.base, p.monolithic, k, self.seed], build,
                               {"role": "monolithic", "seed": self.seed, "freeze_k": k, "profile": p.name})

    # -- routers ---------------------------------------------------------------------------
    def train_or_load_router(self, req: RouterRequest, cfg: RouterConfig) -> nn.Module:
        """Load the cached router ``req`` names, or train one with ``cfg`` on the router split. Domain and
        performance targets train on the pool of what ``req.inputs`` reads (:meth:`router_pool`), ``lm``
        targets run the experts at every step. ``train_history`` and ``train_seconds`` on the result."""
        pooled = cfg.target != "lm"
        path = self.router_path([*req.key, "pool", req.pool_windows or self.profile.router_pool] if pooled else req.key)
        router, history = cached(path, lambda: train_new_router(self, req, cfg), _save_router,
                                 lambda q: _load_router(to_device(req.make(), resolve()), q))
        router.train_history, router.train_seconds = history.get("train_losses"), history.get("train_seconds")
        return router

    def router_pool(self, req: RouterRequest) -> RouterPool:
        """What ``req.inputs`` reads and each expert's loss on ``profile.router_pool`` router-split windows per
        domain (the same windows for every router of this seed), kept for the routers that follow."""
        streams, n = req.streams or self.streams, req.pool_windows or self.profile.router_pool
        same = [[model_fingerprint(m) for m in req.experts], n, self.seed, self.corpus_fingerprint,
                self.tokenizer_fingerprint, streams.domains("router")]
        return self._pools.get(config_key("router-pool", *req.reads, *same), lambda: new_pool(self, req, streams, n))

    def router_path(self, key_parts: list) -> Path:
        """Where :meth:`train_or_load_router` keeps the router of ``key_parts`` (its first part names it)."""
        key = config_key(*key_parts[:1], router_code_fingerprint(), *key_parts[1:], self.seed, self.corpus_fingerprint)
        return cache_root() / "routers" / f"{key_parts[0]}-{key}.safetensors"

    def router(self, kind: str = "per_token", cfg: RouterConfig | None = None, k: int | None = None, *,
               experts: list[GPT] | None = None, replicate: int = 0) -> nn.Module:
        """A router of ``kind`` ('per_token' or 'last_token') over ``experts`` (default: the specialists at ``k``)
        on their shared trunk; ``replicate`` > 0 reseeds its initialisation and batches (Break 2's band)."""
        cfg = cfg or self.profile.router
        return self.train_or_load_router(self.router_request(kind, cfg, k, experts=experts, replicate=replicate), cfg)

    def router_request(self, kind: str, cfg: RouterConfig, k: int | None = None, *,
                       experts: list[GPT] | None = None, replicate: int = 0) -> RouterRequest:
        """What :meth:`router` asks for: its cache key, seeds, inputs and experts. :meth:`router_pool` of it is
        the pool every such router of this seed trains on; :func:`train_new_router` trains one without caching."""
        check_router_kind(kind)  # before anything is loaded or trained
        k = self.k if k is None else k
        models = self.specialists(k=k) if experts is None else list(experts)
        again = ("replicate", replicate) if replicate else ()
        return RouterRequest(
            make=lambda: make_router(kind, self.profile.model.n_embd, len(models), cfg),
            key=[kind, "seeded-init", cfg, [model_fingerprint(m) for m in models], k, *again],
            init_tags=("router-init", kind, k, *again), data_tags=("router", kind, *again),
            inputs=FusedModel(models, k).expert_logits, experts=models, reads=["trunk", k],
            desc=f"{kind} router{f' #{replicate}' if replicate else ''}")

    def feature_router(self, experts: FusedModel, feature: str, cfg: RouterConfig | None = None,
                       tag: str = "") -> CausalRouter:
        """A causal per-token router reading ``feature`` of ``experts`` (Break 1: maybe no shared trunk). Every
        router of a comparison gets the same config, initialisation and batches: only what it reads differs."""
        cfg, models = cfg or self.profile.router, list(experts.specialists)
        fused = FusedModel(models, experts.k, shared=experts.shared, reads=feature)
        return self.train_or_load_router(RouterRequest(
            make=lambda: make_router("per_token", feature_width(feature, models), len(models), cfg),
            key=["break", feature, cfg, [model_fingerprint(m) for m in models], experts.k, experts.shared],
            init_tags=("break-router-init", feature), data_tags=("router", "per_token"),
            inputs=fused.expert_logits, experts=models, reads=[feature, experts.k, experts.shared],
            desc=f"router [{tag}: {feature}]"), cfg)

    def fused(self, kind: str = "per_token", router_cfg: RouterConfig | None = None,
              k: int | None = None, fusion: str = "logits") -> FusedModel:
        k = self.k if k is None else k
        return FusedModel(self.specialists(k=k), k, self.router(kind, router_cfg, k), fusion=fusion)


def new_pool(exp: Experiment, req: RouterRequest, streams: DomainStreams, n: int) -> RouterPool:
    """:meth:`Experiment.router_pool`'s pool of ``n`` windows per domain, built. What the router reads does not
    decide the experts' losses, and each expert's losses are kept on disk (:func:`experts_window_losses`): a
    pool then runs only its router inputs and the crowns no earlier pool ran, in whichever notebook."""
    p, fused = exp.profile, req.fused
    T, seed, bs = p.model.block_size, derive_seed(exp.seed, "router-pool"), p.eval_batch_size
    known = None
    if fused is not None:  # every request the package makes; another caller's experts run with the pool
        losses = experts_window_losses(list(fused.specialists), fused.k, fused.shared, pool_windows(streams, n, T, seed), bs)
        known = KnownLosses(lambda x: fused.router_input(x, fused.trunks(x)), to_device(losses, resolve()))
    return build_pool(streams, known or req.inputs, n, T=T, seed=seed, batch_size=bs, experts=req.experts)


def train_new_router(exp: Experiment, req: RouterRequest, cfg: RouterConfig) -> tuple[nn.Module, dict]:
    """A new router for ``req``, seeded, trained with ``cfg``: on the pool, or on fresh windows for ``lm``.
    Nothing is cached here (:meth:`Experiment.train_or_load_router` caches what this returns); returns the
    router and its history (per-step losses, seconds)."""
    torch.manual_seed(derive_seed(exp.seed, *req.init_tags))
    router, seed, t0 = req.make(), derive_seed(exp.seed, *req.data_tags), time.time()
    if cfg.target != "lm":
        losses = train_router_on_pool(router, exp.router_pool(req), cfg, seed=seed, desc=req.desc)
    else:
        streams, T = req.streams or exp.streams, exp.profile.model.block_size
        batch = lambda g: mixed_windows(streams, "router", cfg.batch_size, T=T, gen=g, mix=cfg.domain_mix)  # noqa: E731
        losses = train_router(router, batch, req.inputs, cfg=cfg, seed=seed, desc=req.desc, experts=req.experts)
    return router, {"train_losses": losses, "train_seconds": time.time() - t0}


def _save_router(obj: tuple[nn.Module, dict], path: Path) -> None:
    """A router's cache entry: a new folder with its weights and its training history (losses, seconds)."""
    router, history = obj
    path.mkdir()
    save_model(router, str(path / ROUTER_WEIGHTS))
    (path / ROUTER_HISTORY).write_text(json.dumps({"train_losses": [float(v) for v in history["train_losses"]],
                                                   "train_seconds": history["train_seconds"]}))


def _load_router(router: nn.Module, path: Path) -> tuple[nn.Module, dict]:
    """``router`` with the weights of the cache entry at ``path``, and its training history (empty for an
    entry that is a single safetensors file, without a history)."""
    path = Path(path)
    if not path.is_dir():
        load_model(router, str(path))
        return router.eval(), {}
    load_model(router, str(path / ROUTER_WEIGHTS))
    return router.eval(), json.loads((path / ROUTER_HISTORY).read_text())
