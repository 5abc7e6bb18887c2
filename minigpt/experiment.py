"""The whole chapter experiment, with every step cached by a key of its full config.

``Experiment(profile, seed)`` hands out the tokenizer, token streams, base, specialists,
monolithic baseline and routers, training each one only if no valid cached copy exists. Notebooks
and the CLI ask for what they need and share the cache, so they run alone, in any order, or in
parallel.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from tokenizers import Tokenizer

from . import data as data_mod
from .cache import REPO_ROOT, cache_root, cached, config_key, write_json
from .checkpoint import load_checkpoint, model_fingerprint as _fingerprint, read_manifest, save_checkpoint, trunk_hash
from .config import Profile, RouterConfig, get_profile
from .data import DOMAINS, SPLITS
from .evaluate import (HEADLINE, ORACLE, collect, cross_domain_matrix, gap_by_position, litmus, loss_table,
                       routing_accuracy)
from .fusion import FusedModel, average_weights
from .model import GPT
from .router import ROUTERS, check_router_kind, router_code_fingerprint, train_router
from .streams import DomainStreams, encode_stream, eval_windows, mixed_windows, random_windows
from .tokenizer import eos_id, fingerprint, load_tokenizer, save_tokenizer, train_tokenizer
from .train import train_lm


def derive_seed(seed: int, *tags: Any) -> int:
    """An independent, reproducible seed for each (seed, role) pair."""
    return int(hashlib.sha256(json.dumps([seed, *tags]).encode()).hexdigest()[:8], 16)


def results_root() -> Path:
    return Path(os.environ.get("MINIGPT_RESULTS_DIR") or REPO_ROOT / "results")


class Experiment:
    """Everything Chapter 32 trains, for one profile and one seed."""

    def __init__(self, profile: str | Profile | None = None, seed: int = 0, **overrides) -> None:
        self.profile = get_profile(profile, **overrides)
        self.seed = seed
        self.k = self.profile.freeze_k
        self._memo: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Experiment(profile={self.profile.name!r}, seed={self.seed}, K={self.k})"

    # -- data ------------------------------------------------------------------------------
    @cached_property
    def corpus(self):
        return data_mod.load_corpus()

    @cached_property
    def corpus_fingerprint(self) -> str:
        """Content hash of the corpus: part of every cache key below it, so a changed corpus can
        never be paired with a tokenizer, token stream or checkpoint built from an older one."""
        return data_mod.corpus_fingerprint(self.corpus)

    def provenance(self) -> dict[str, str]:
        """The fingerprints every results JSON records; results with other ones come from another
        corpus, tokenizer or router code and must not be pooled with this run's."""
        return {"corpus_fingerprint": self.corpus_fingerprint, "tokenizer_fingerprint": self.tokenizer_fingerprint,
                "router_code": router_code_fingerprint()}

    @cached_property
    def tokenizer(self) -> Tokenizer:
        from .tokenizer import check_vocab

        p = self.profile
        if p.name == "gpt2":  # GPT-2's weights only make sense with its own tokenizer (minigpt.hf)
            from .hf import pretrained_tokenizer
            return check_vocab(pretrained_tokenizer("gpt2"), p.model)
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

    @cached_property
    def eval_sets(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        T, n = self.profile.model.block_size, self.profile.eval_chunks
        return {d: eval_windows(self.streams.get(d, "eval"), n, T) for d in DOMAINS}

    # -- models ----------------------------------------------------------------------------
    def _checkpoint(self, kind: str, key_parts: list, build, manifest: dict) -> GPT:
        """Load or train one checkpoint; the model comes back with its ``.manifest`` attached."""
        key = config_key(kind, self.tokenizer_fingerprint, self.corpus_fingerprint, *key_parts)
        if key in self._memo:
            return self._memo[key]
        path = cache_root() / "checkpoints" / f"{kind}-{key}"
        expect = {"tokenizer_fingerprint": self.tokenizer_fingerprint, "cache_key": key}

        def make() -> tuple[GPT, dict]:
            t0 = time.time()
            model, losses = build()
            return model, {**manifest, **expect, "train_losses": losses, "train_seconds": time.time() - t0}

        def save(obj, tmp):
            save_checkpoint(obj[0], tmp, obj[1])

        model, _ = cached(path, make, save, lambda p: load_checkpoint(p, expect))
        model.manifest = read_manifest(path)
        self._memo[key] = model
        return model

    def base(self, seed: int | None = None) -> GPT:
        """The pretrained base: all layers trained on equal parts of the three domains."""
        seed = self.seed if seed is None else seed
        p = self.profile
        if p.name == "gpt2":  # the base is pretrained GPT-2 itself, the same for every seed (minigpt.hf)
            from .hf import pretrained_base
            return self._checkpoint("base", [p.model, "hf:gpt2"], lambda: (pretrained_base(p.model, "gpt2"), []),
                                    {"role": "base", "profile": p.name, "source": "hf:gpt2"})

        def build():
            torch.manual_seed(derive_seed(seed, "base-init"))
            model = GPT(p.model)
            batch = lambda g: mixed_windows(self.streams, "pretrain", p.base.batch_size, p.model.block_size, g)[:2]  # noqa: E731
            return model, train_lm(model, batch, p.base, derive_seed(seed, "base-data"), desc=f"base seed {seed}")

        return self._checkpoint("base", [p.model, p.base, seed], build,
                                {"role": "base", "seed": seed, "profile": p.name})

    def base_fingerprint(self, seed: int | None = None) -> str:
        return _fingerprint(self.base(seed))

    def specialist(self, domain: str, base_seed: int | None = None, k: int | None = None) -> GPT:
        """A copy of the base whose crown (blocks K.., final LayerNorm) was trained on ``domain``."""
        if domain not in DOMAINS:
            raise ValueError(f"unknown domain {domain!r}; choose one of {', '.join(DOMAINS)}")
        base_seed = self.seed if base_seed is None else base_seed
        k = self.k if k is None else k
        p = self.profile
        base = self.base(base_seed)

        def build():
            model = copy.deepcopy(base)
            stream = self.streams.get(domain, "specialist")
            batch = lambda g: random_windows(stream, p.specialist.batch_size, p.model.block_size, g)  # noqa: E731
            seed = derive_seed(self.seed, "specialist", domain)
            return model, train_lm(model, batch, p.specialist, seed, freeze_k=k, desc=f"{domain} specialist")

        return self._checkpoint("specialist", [p.model, p.base, base_seed, p.specialist, domain, k, self.seed], build,
                                {"role": "specialist", "domain": domain, "seed": self.seed, "freeze_k": k,
                                 "base_seed": base_seed, "base_fingerprint": _fingerprint(base),
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
            batch = lambda g: mixed_windows(self.streams, "specialist", p.monolithic.batch_size, p.model.block_size, g)[:2]  # noqa: E731
            return model, train_lm(model, batch, p.monolithic, derive_seed(self.seed, "monolithic"),
                                   freeze_k=k, desc="monolithic")

        return self._checkpoint("monolithic", [p.model, p.base, p.monolithic, k, self.seed], build,
                                {"role": "monolithic", "seed": self.seed, "freeze_k": k, "profile": p.name})

    def fused(self, kind: str = "per_token", router_cfg: RouterConfig | None = None,
              k: int | None = None, fusion: str = "logits") -> FusedModel:
        k = self.k if k is None else k
        return FusedModel(self.specialists(k=k), k, self.router(kind, router_cfg, k), fusion=fusion)

    def router(self, kind: str = "per_token", cfg: RouterConfig | None = None, k: int | None = None):
        """A router of ``kind`` ('per_token' or 'last_token') trained on the router split."""
        check_router_kind(kind)  # before anything is loaded or trained
        cfg = cfg or self.profile.router
        k = self.k if k is None else k
        p = self.profile
        specs = self.specialists(k=k)
        fused = FusedModel(specs, k)
        # the router code is part of the key: editing it retrains the router instead of loading stale weights;
        # "seeded-init" retires routers cached before their initialisation was seeded (see build)
        key = config_key("router", kind, router_code_fingerprint(), "seeded-init", cfg,
                         [_fingerprint(m) for m in specs], k, self.seed, self.corpus_fingerprint)
        path = cache_root() / "routers" / f"{kind}-{key}.safetensors"

        def build():
            # seeded here, not by whatever ran before in this process: the same key gives the same
            # router whether the models before it were trained or loaded from the cache
            torch.manual_seed(derive_seed(self.seed, "router-init", kind, k))
            router = ROUTERS[kind](p.model.n_embd, len(specs))
            batch = lambda g: mixed_windows(self.streams, "router", cfg.batch_size, p.model.block_size, g, cfg.domain_mix)  # noqa: E731
            train_router(router, batch, fused.expert_logits, cfg, derive_seed(self.seed, "router", kind),
                         desc=f"{kind} router")
            return router

        def load(path):
            router = ROUTERS[kind](p.model.n_embd, len(specs))
            load_model(router, str(path))
            return router.eval()

        return cached(path, build, lambda r, tmp: save_model(r, str(tmp)), load)

    def routing_ceiling(self, kind: str = "per_token", steps: int = 300) -> dict:
        """A ``kind`` router fitted on the evaluation windows themselves (domain labels): its
        routing accuracy per domain and oracle gap are an optimistic reference for what a router
        reading these trunk features can reach (``diagnostics.fit_to_eval_labels``). Cached as JSON."""
        from .diagnostics import fit_to_eval_labels

        check_router_kind(kind)  # before anything is loaded or trained
        specs, k, p = self.specialists(), self.k, self.profile
        key = config_key("ceiling", kind, steps, router_code_fingerprint(), [_fingerprint(m) for m in specs],
                         k, self.seed, self.corpus_fingerprint, p.eval_chunks)
        path = cache_root() / "ceilings" / f"{kind}-{key}.json"

        def build() -> dict:
            with torch.no_grad():
                states = {d: torch.cat([specs[0].trunk(x[i:i + p.eval_batch_size], k)
                                        for i in range(0, x.shape[0], p.eval_batch_size)])
                          for d, (x, _) in self.eval_sets.items()}
            torch.manual_seed(derive_seed(self.seed, "ceiling-init", kind, k))
            router = fit_to_eval_labels(ROUTERS[kind](p.model.n_embd, len(specs)), states, steps)
            nll, weights = collect(self.eval_sets, self.base(), specs, k, {"eval-fitted": router},
                                   batch_size=p.eval_batch_size)
            mixed = loss_table(nll)["mixed"]
            return {"kind": kind, "steps": steps, "seed": self.seed, "freeze_k": k,
                    "routing_accuracy": _rounded(routing_accuracy(weights["eval-fitted"])),
                    "oracle_gap_nats": round(float(mixed["fused soft (eval-fitted router)"] - mixed[ORACLE]), 6)}

        return cached(path, build, lambda obj, tmp: tmp.write_text(json.dumps(obj, indent=2)),
                      lambda path: json.loads(path.read_text()))

    # -- the chapter's table ---------------------------------------------------------------
    def evaluate(self, k: int | None = None, router_cfg: RouterConfig | None = None) -> dict:
        """Score every row of the chapter's table on the held-out windows (models come from the cache)."""
        k = self.k if k is None else k
        specs = self.specialists(k=k)
        routers = {"per-token": self.router("per_token", router_cfg, k),
                   "last-token": self.router("last_token", router_cfg, k)}
        extra = {"weight average": average_weights(specs), "monolithic": self.monolithic(k)}
        nll, weights = collect(self.eval_sets, self.base(), specs, k, routers, extra,
                               self.profile.eval_batch_size)
        table = loss_table(nll)
        return {"table": table, "nll": nll, "weights": weights,
                "routing_accuracy": {r: routing_accuracy(w) for r, w in weights.items()},
                "cross_domain": cross_domain_matrix(nll),
                "oracle_gap": float(table.loc[HEADLINE, "mixed"] - table.loc[ORACLE, "mixed"]),
                "oracle_gap_by_position": gap_by_position(nll),
                "litmus": litmus(table)}

    def run(self, out_dir: Path | None = None) -> dict:
        """Train (or load) everything, evaluate, and write ``table.json`` and ``cross_domain.png``."""
        from .plots import plot_cross_domain

        t0 = time.time()
        res = self.evaluate()
        out_dir = Path(out_dir or results_root() / self.profile.name / f"seed-{self.seed}")
        out_dir.mkdir(parents=True, exist_ok=True)
        table = res["table"]
        report = {
            "profile": self.profile.name, "seed": self.seed, "freeze_k": self.k,
            "table": json.loads(table.round(6).to_json(orient="index")),
            "rows": list(table.index),
            "columns": list(table.columns),
            "routing_accuracy": _rounded(res["routing_accuracy"]),
            "oracle_gap_nats": round(res["oracle_gap"], 6),
            "oracle_gap_by_position": _rounded(res["oracle_gap_by_position"]),
            "headline": HEADLINE,
            "litmus": res["litmus"],
            "cross_domain": json.loads(res["cross_domain"].round(6).to_json(orient="index")),
            **self.provenance(),
            "base_fingerprint": self.base_fingerprint(),
            "tokens": self.streams.tokens(),
            "config": asdict(self.profile),
            "wall_seconds": round(time.time() - t0, 1),
        }
        write_json(out_dir / "table.json", report)
        plot_cross_domain(res["cross_domain"], out_dir / "cross_domain.png")
        res["report"], res["out_dir"] = report, out_dir
        return res


def _rounded(obj: Any, nd: int = 6) -> Any:
    if isinstance(obj, dict):
        return {k: _rounded(v, nd) for k, v in obj.items()}
    return round(obj, nd) if isinstance(obj, float) else obj
