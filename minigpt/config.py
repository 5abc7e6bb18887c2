"""Configuration: the three domains and their splits, the model's shape, the run profiles
(``ci``, ``cpu``, ``gpu``, ``gpt2``), seeds, and every environment variable the package reads.

One knob, ``MINIGPT_PROFILE`` (or the ``profile=`` argument), scales model, data and steps together.
This module imports nothing from the package: everything else may import it.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

__version__ = "0.1.0"  # recorded in every checkpoint's manifest
REPO_ROOT = Path(__file__).resolve().parent.parent

# -- the chapter's domains and the corpus splits ------------------------------------------------
DOMAINS: tuple[str, ...] = ("code", "medical", "legal")
SPLITS: tuple[str, ...] = ("pretrain", "specialist", "router", "dev", "eval")
# A document's split comes from a hash of its id in [0, 1), cut at these cumulative edges, in this
# order. Every choice the book makes is made on ``dev``; ``eval`` only reports.
SPLIT_FRACTIONS: dict[str, float] = {"pretrain": 0.45, "specialist": 0.30, "dev": 0.05, "router": 0.10, "eval": 0.10}


def check_domain(domain: str) -> str:
    """One-line error for a domain name that is not one of :data:`DOMAINS`; returns ``domain``."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; choose one of {', '.join(DOMAINS)}")
    return domain


# -- environment: every variable the package reads is read here ---------------------------------
PROFILE_ENV = "MINIGPT_PROFILE"
DEFAULT_PROFILE = "cpu"
ENV_VARS = {
    PROFILE_ENV: "profile name (ci, cpu, gpu, gpt2); default cpu",
    "MINIGPT_DEVICE": "torch device for every compute path (cpu, cuda, cuda:N, mps; meta in the device-leak "
                      "test); default cuda when available, else cpu",
    "MINIGPT_AMP": "0 turns off mixed precision (autocast, TF32) on CUDA; default on (never used on the CPU)",
    "MINIGPT_CACHE_DIR": "where trained models and corpora are cached; default <home>/.cache (see home_dir)",
    "MINIGPT_RESULTS_DIR": "where results JSONs and figures go; default <home>/results",
    "MINIGPT_WHEEL_DIR": "where the corpus source wheels are kept; default <cache>/wheels",
    "MINIGPT_HEADLESS": "1 forces static output instead of sliders, 0 forces live widgets",
    "MINIGPT_NUM_THREADS": "torch intra-op threads for notebooks",
    "MINIGPT_BATCHED_CROWNS": "1 runs the fused model's crowns in one batched pass (minigpt.stacked) wherever no "
                              "gradient reaches them; default 0, one crown after another",
    "MINIGPT_SCORE_CACHE": "0 scores every call afresh instead of reading remembered scores (minigpt.score_cache)",
    "MINIGPT_HEAP_DEFAULT": "1 leaves glibc's mmap threshold as it is (minigpt.heap fixes it at 1 MiB)",
    "MALLOC_MMAP_THRESHOLD_": "glibc's own setting; when set, minigpt.heap leaves the threshold to it",
    "TQDM_DISABLE": "set to hide progress bars (tqdm's own variable, passed on to notebook bars too)",
}


def env(name: str) -> str | None:
    """The value of one of :data:`ENV_VARS` (None when unset or blank)."""
    if name not in ENV_VARS:
        raise KeyError(f"{name} is not one of the package's settings ({', '.join(ENV_VARS)})")
    value = os.environ.get(name)
    return value if value is not None and value.strip() else None


def quiet_worker() -> None:
    """For worker processes that train side by side (minigpt.studies.prefetch): no progress bars, and the
    tokenizer library on one thread like torch."""
    os.environ.update(TQDM_DISABLE="1", RAYON_NUM_THREADS="1")


def home_dir() -> Path:
    """The folder that holds the default ``.cache/`` and ``results/``: the repository when the package
    runs from a checkout (``pip install -e .``), else the working folder (an installed wheel, e.g. on
    Colab ``/content``), so nothing is ever written into site-packages."""
    return REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() else Path.cwd()


def cache_dir() -> Path:
    return Path(env("MINIGPT_CACHE_DIR") or home_dir() / ".cache").expanduser()


def results_dir() -> Path:
    return Path(env("MINIGPT_RESULTS_DIR") or home_dir() / "results").expanduser()


def wheel_dir() -> Path:
    """Where source wheels are kept: ``$MINIGPT_WHEEL_DIR`` or ``<cache>/wheels``."""
    return Path(env("MINIGPT_WHEEL_DIR") or cache_dir() / "wheels").expanduser()


def device_name() -> str | None:
    return env("MINIGPT_DEVICE")


def amp_enabled() -> bool:
    """False when ``MINIGPT_AMP`` is 0 (or off/false/no): CUDA runs then stay in float32."""
    return (env("MINIGPT_AMP") or "1").strip().lower() not in ("0", "off", "false", "no")


def batched_crowns() -> bool:
    """True when ``MINIGPT_BATCHED_CROWNS`` is 1 (or on/true/yes): the fused model's batched engine."""
    return (env("MINIGPT_BATCHED_CROWNS") or "0").strip().lower() in ("1", "on", "true", "yes")


def automated_run() -> bool:
    """True under pytest (nbmake starts kernels from inside a test, so they inherit its variable) or CI."""
    return bool(os.environ.get("PYTEST_CURRENT_TEST") or os.environ.get("CI"))


# -- seeds ---------------------------------------------------------------------------------------
def derive_seed(seed: int, *tags: Any) -> int:
    """An independent, reproducible seed for each (seed, role) pair."""
    return int(hashlib.sha256(json.dumps([seed, *tags]).encode()).hexdigest()[:8], 16)


@dataclass(frozen=True)
class GPTConfig:
    """GPT-2 shaped model: pre-LayerNorm blocks, GELU MLP, learned positions, tied head."""

    vocab_size: int = 2048
    block_size: int = 128  # context length T
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True
    layer_norm_eps: float = 1e-5


@dataclass(frozen=True)
class TrainConfig:
    """One training phase (base, specialist or monolithic): AdamW, linear warmup, cosine decay."""

    steps: int = 800
    batch_size: int = 16
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0


@dataclass(frozen=True)
class RouterConfig:
    """Router training: ``target`` is ``domain``, ``performance`` (softmax(-loss/temp)) or ``lm``."""

    steps: int = 150
    batch_size: int = 16
    lr: float = 1e-2
    target: str = "performance"
    temp: float = 0.1
    decay: float = 0.9  # the causal router's memory: about 1 / (1 - decay) tokens
    normalize: bool = True  # read the trunk state through a parameter-free LayerNorm
    # share of router training windows per domain (code, medical, legal); Break 2 skews it
    domain_mix: tuple[float, ...] = (1 / 3, 1 / 3, 1 / 3)

    def __post_init__(self) -> None:  # fail at construction, before anything is trained
        if self.target not in ("domain", "performance", "lm"):
            raise ValueError(f"unknown router target {self.target!r}; choose one of domain, performance, lm")
        if self.temp <= 0:
            raise ValueError(f"target temperature must be > 0, got {self.temp}; use e.g. 0.1 (sharp) to 1.0 (soft)")
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"router decay must be in [0, 1), got {self.decay}; 0.9 remembers about 10 tokens")


@dataclass(frozen=True)
class Profile:
    name: str
    model: GPTConfig
    base: TrainConfig
    specialist: TrainConfig
    router: RouterConfig
    freeze_k: int = 2  # trunk = embeddings + first K blocks
    tokenizer_chars: int = 3_000_000  # characters of pretrain text used to learn the BPE merges
    eval_chunks: int = 64  # held-out windows per domain (eval split: reported, never chosen on)
    dev_chunks: int = 64  # windows per domain of the dev split, where choices are made
    # eval windows per domain the studies score (the breaks, joining, hybrid text, notebook 3's router
    # targets); None = eval_chunks. Fewer than the headline's, for the book's time budget; document memory
    # and the routing ceiling stay on the headline's windows, being held against its row
    study_chunks: int | None = None
    eval_batch_size: int = 16  # one batch size for every model (docs/design.md, "Evaluation protocol")
    # router-split windows per domain on which domain- and performance-target routers train; the
    # experts run over them once (minigpt.router_pool), then each router is one linear map per step
    router_pool: int = 512
    expected_minutes: float = 5.0  # shown to readers before long cells

    @property
    def study_windows(self) -> int:
        """Eval windows per domain of every study (:attr:`study_chunks`, else the headline's)."""
        return min(self.study_chunks or self.eval_chunks, self.eval_chunks)

    @property
    def monolithic(self) -> TrainConfig:
        """Same total steps as the three specialists together, on mixed specialist data."""
        return replace(self.specialist, steps=3 * self.specialist.steps)


PROFILES: dict[str, Profile] = {
    "ci": Profile(
        name="ci",
        model=GPTConfig(vocab_size=512, block_size=64, n_layer=4, n_head=2, n_embd=64),
        base=TrainConfig(steps=150, batch_size=16, lr=3e-3, warmup=15),
        specialist=TrainConfig(steps=60, batch_size=16, lr=2e-3, warmup=6),
        router=RouterConfig(steps=60, batch_size=16),
        freeze_k=2,
        tokenizer_chars=400_000,
        eval_chunks=24,
        dev_chunks=24,
        router_pool=256,
        expected_minutes=0.5,
    ),
    "cpu": Profile(
        name="cpu",
        model=GPTConfig(vocab_size=2048, block_size=128, n_layer=4, n_head=4, n_embd=128),
        # the warmup is chosen on dev so that five seeds end at the same loss (`python -m minigpt
        # base-schedule`; docs/design.md, "The base")
        base=TrainConfig(steps=800, batch_size=16, lr=3e-3, warmup=400),
        # specialist lr, freeze depth and the router's settings chosen on the dev split (`python -m minigpt
        # decisions`; docs/design.md, "Decision log")
        specialist=TrainConfig(steps=400, batch_size=16, lr=8e-3, warmup=20),
        router=RouterConfig(steps=200, batch_size=16, decay=0.8),
        freeze_k=1,
        tokenizer_chars=3_000_000,
        # 512 windows per domain: the fused-vs-best-specialist interval is about +-1 point wide
        eval_chunks=512,
        dev_chunks=256,
        # 128 per domain: every study verdict as at 512 (docs/design.md, "What was cut, and why it is safe")
        study_chunks=128,
        router_pool=1024,
        expected_minutes=8.0,
    ),
    "gpu": Profile(
        name="gpu",
        model=GPTConfig(vocab_size=8192, block_size=256, n_layer=8, n_head=8, n_embd=512),
        base=TrainConfig(steps=4000, batch_size=32, lr=1e-3, warmup=200),
        specialist=TrainConfig(steps=1500, batch_size=32, lr=6e-4, warmup=100),
        router=RouterConfig(steps=500, batch_size=32, lr=3e-3),
        freeze_k=4,
        tokenizer_chars=20_000_000,
        eval_chunks=256,
        dev_chunks=128,
        study_chunks=128,
        eval_batch_size=32,
        # not measured (no GPU here): `python -m minigpt smoke --profile gpu` counts the FLOPs of the
        # chapter's run at these steps; at an assumed ~8 TFLOP/s (a T4 in fp16) that is ~13 min for
        # the base, ~10 for the specialists, ~10 for the monolithic crown, under 1 for the routers (on a pool)
        expected_minutes=33.0,
    ),
    # Real GPT-2 small (124M) as the base: its hub weights and tokenizer replace the trained base and
    # the learned BPE (minigpt.hf; needs the Hugging Face hub and `pip install -e '.[hf]'`). Only
    # crowns and routers train, on one GPU. A 256-token context (GPT-2 has 1024) keeps memory low.
    "gpt2": Profile(
        name="gpt2",
        model=GPTConfig(vocab_size=50257, block_size=256, n_layer=12, n_head=12, n_embd=768),
        base=TrainConfig(steps=0, batch_size=16, lr=0.0, warmup=0),  # not trained: the base is GPT-2 itself
        specialist=TrainConfig(steps=600, batch_size=16, lr=1e-4, warmup=60),  # ~3 passes over a split
        router=RouterConfig(steps=500, batch_size=16, lr=3e-3),
        freeze_k=6,
        router_pool=384,  # 1.1 GB of trunk states (T 256, C 768) on the GPU
        eval_chunks=192,  # fewer than gpu's 256: GPT-2's BPE is not fitted to the code eval split
        dev_chunks=96,
        eval_batch_size=16,
        expected_minutes=17.0,  # smoke --profile gpt2: counted FLOPs at an assumed ~8 TFLOP/s (a T4 in fp16)
    ),
}


def get_profile(name: str | Profile | None = None, **overrides) -> Profile:
    """Profile by name (argument, else ``$MINIGPT_PROFILE``, else ``cpu``), with field overrides."""
    if isinstance(name, Profile):
        profile = name
    else:
        name = name or env(PROFILE_ENV) or DEFAULT_PROFILE
        if name not in PROFILES:
            raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)} "
                             f"(argument or ${PROFILE_ENV})")
        profile = PROFILES[name]
    profile = replace(profile, **overrides) if overrides else profile
    check_freeze_k(profile.freeze_k, profile.model.n_layer)
    return profile


def check_freeze_k(k: int, n_layer: int) -> None:
    if not 0 <= k <= n_layer:
        raise ValueError(f"freeze depth K={k} is outside 0..{n_layer}; "
                         f"pick K between 0 (embeddings only) and n_layer={n_layer}")
