"""Counted FLOPs: what every phase of a profile's full run costs, and how long that takes on a GPU.

No GPU was available to measure the `gpu` and `gpt2` profiles, so their time is estimated: FLOPs
counted at the profile's real step and window counts (6 x params x tokens to train, 2 x forward,
attention over the context; every crown a router's experts run; a frozen trunk forward only), each
study as if run after the chapter, divided by an assumed effective throughput (:data:`GPUS`).
``python -m minigpt smoke`` prints the table; notebooks print the estimate for the device they run on.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import DOMAINS, GPTConfig, Profile, RouterConfig, TrainConfig
from .studies.break2 import BAND_REPLICATES, COLLAPSE_MIXES, SETS, TARGET_WINDOWS
from .studies.freeze_sweep import default_points

# Effective throughputs, assumed (nobody measured them here): small models reach a fraction of peak.
GPUS = {"T4-class": (8e12, "fp16, ~8 TFLOP/s effective (assumed)"),
        "A100-class": (100e12, "bf16, ~100 TFLOP/s effective (assumed)")}
CEILING_STEPS = 300  # studies.ceiling.routing_ceiling's default


# -- counted FLOPs (per token; a multiply-add is 2) -------------------------------------------------
def block_flops(cfg: GPTConfig) -> float:
    """One block's forward: the qkv, projection and MLP matmuls (12 C^2 weights) and attention over
    the whole context (q.k and att.v, 2 T C each; the causal half is not assumed to be skipped)."""
    return 2 * 12 * cfg.n_embd ** 2 + 4 * cfg.block_size * cfg.n_embd


def head_flops(cfg: GPTConfig) -> float:
    return 2 * cfg.vocab_size * cfg.n_embd


def forward_flops(cfg: GPTConfig) -> float:
    """A whole model's forward pass (embedding lookups are free)."""
    return cfg.n_layer * block_flops(cfg) + head_flops(cfg)


def train_flops(cfg: GPTConfig, k: int | None) -> float:
    """One training token: 3x the forward for what trains (forward, input and weight gradients);
    with a frozen trunk (``k``) its K blocks run forward only and the frozen, tied head forward and
    input gradient (2x). ``k=None``: everything trains, 6 N + 12 L T C."""
    if k is None:
        return 3 * forward_flops(cfg)
    return k * block_flops(cfg) + 3 * (cfg.n_layer - k) * block_flops(cfg) + 2 * head_flops(cfg)


def experts_flops(cfg: GPTConfig, k: int, n: int, shared: bool = True) -> float:
    """N experts' logits: the trunk once (or once per expert without a shared trunk), every crown and head."""
    trunk = k * block_flops(cfg)
    return (trunk if shared else n * trunk) + n * ((cfg.n_layer - k) * block_flops(cfg) + head_flops(cfg))


def router_flops(cfg: GPTConfig, n: int) -> float:
    """The causal router's forward: the decaying mean over the context and the projection."""
    return 2 * cfg.block_size * cfg.n_embd + 2 * cfg.n_embd * n


# -- what the full run does, phase by phase, at the profile's real step and window counts -----------
@dataclass(frozen=True)
class _Costs:
    """FLOPs of the recurring units of work of one profile."""

    p: Profile

    def tokens(self, cfg: TrainConfig | RouterConfig) -> int:
        return cfg.steps * cfg.batch_size * self.p.model.block_size

    @property
    def eval_tokens(self) -> int:  # one scoring pass: every domain's held-out windows
        return len(DOMAINS) * self.p.eval_chunks * self.p.model.block_size

    def specialist(self, k: int | None = None) -> float:
        return self.tokens(self.p.specialist) * train_flops(self.p.model, self.p.freeze_k if k is None else k)

    def pool(self, k: int | None = None, n: int = len(DOMAINS), shared: bool = True) -> float:
        """The experts once over the router pool (minigpt.router_pool): what a router's training needs."""
        k = self.p.freeze_k if k is None else k
        return len(DOMAINS) * self.p.router_pool * self.p.model.block_size * experts_flops(self.p.model, k, n, shared)

    def router_steps(self, n: int = len(DOMAINS)) -> float:
        """Training one more router on a pool already computed: the router alone, forward and backward."""
        return self.tokens(self.p.router) * 3 * router_flops(self.p.model, n)

    def router(self, k: int | None = None, n: int = len(DOMAINS), shared: bool = True) -> float:
        """A router with a pool of its own."""
        return self.pool(k, n, shared) + self.router_steps(n)

    def scoring(self, whole_models: int, k: int | None = None, n: int = len(DOMAINS), shared: bool = True) -> float:
        """One scoring pass: ``whole_models`` whole models (base, weight average, ...) beside the experts."""
        k = self.p.freeze_k if k is None else k
        return self.eval_tokens * (whole_models * forward_flops(self.p.model) + experts_flops(self.p.model, k, n, shared))


def plan(p: Profile) -> dict[str, dict[str, float]]:
    """FLOPs of every phase of a full run of ``p``, item by item: the chapter (``python -m minigpt run``)
    and then each study as if run next (what the chapter trained is cached and not counted again)."""
    c, cfg, k = _Costs(p), p.model, p.freeze_k
    base = c.tokens(p.base) * train_flops(cfg, None)
    refused = {"refused: one pretrained base for every seed": 0.0}  # studies.break1 on the gpt2 profile
    return {
        "base": {"base training": base},
        "specialists": {"3 crowns": 3 * c.specialist()},
        "monolithic": {"crown, 3x the steps": c.tokens(p.monolithic) * train_flops(cfg, k)},
        "routers": {"pool + per-token and last-token routers": c.router() + c.router_steps()},
        "evaluation": {"scoring: base, weight average, monolithic, experts": c.scoring(3)},
        "break1": {"1 more base (seed 1: that seed run's own)": base,
                   "3 specialists (seed 1's run, reused when it ran)": 3 * c.specialist(),
                   "6 feature routers (4 on unshared trunks)": 2 * c.router() + 4 * c.router(shared=False),
                   "3 scoring passes, bases alone": 2 * c.scoring(2) + c.scoring(2, shared=False) + 2 * c.scoring(1, n=0),
                   "tokenizer case": c.specialist() + c.router() + 2 * c.scoring(1)
                   + 4 * p.eval_chunks * cfg.block_size * forward_flops(cfg)} if p.base.steps else refused,
        "break2": {f"{len(SETS)} pools, {len(SETS) * _break2_routers()} routers": len(SETS) * (
                       c.pool() + _break2_routers() * c.router_steps()),
                   f"{len(SETS)} scoring passes, target windows": len(SETS) * c.scoring(1) + len(DOMAINS)
                   * TARGET_WINDOWS * cfg.block_size * experts_flops(cfg, k, 3)},
        "freeze sweep": _sweep_plan(c),
        "hybrid": {"2 scoring passes": 2 * c.scoring(0)},
        "document memory": {"scoring, carried trunk states": c.scoring(1) + 4 * c.eval_tokens * k * block_flops(cfg)},
        "routing ceiling": {"eval trunk states, fit, scoring": c.eval_tokens * (k * block_flops(cfg) + CEILING_STEPS * 3
                                                                                  * router_flops(cfg, 3)) + c.scoring(1)},
    }


def _break2_routers() -> int:
    """Routers per expert set: the band's seeds and the curve (two temperatures), the healthy one shared."""
    return BAND_REPLICATES + 2 * len(COLLAPSE_MIXES) - 1


def _sweep_plan(c: _Costs) -> dict[str, float]:
    """The sweep's default depths (the profile's K reuses the chapter's crowns and router)."""
    p = c.p
    ks, nothing_frozen = default_points(p)
    new = [K for K in ks if K != p.freeze_k]
    plan = {f"3 specialists + router at {len(new)} new K": sum(3 * c.specialist(K) + c.router(K) for K in new),
            f"{len(ks)} scoring passes": sum(c.scoring(2, K) for K in ks)}
    if nothing_frozen:
        plan["nothing frozen: 3 specialists, router, scoring"] = (3 * c.tokens(p.specialist) * train_flops(p.model, None)
                                                                 + c.router(0, shared=False) + c.scoring(2, 0, shared=False))
    return plan


CHAPTER = ("base", "specialists", "monolithic", "routers", "evaluation")  # what `python -m minigpt run` does


def estimate_minutes(p: Profile) -> dict[str, dict[str, float]]:
    """Per phase: total TFLOP and minutes on each GPU class of :data:`GPUS`."""
    out = {}
    for phase, items in plan(p).items():
        flops = sum(items.values())
        out[phase] = {"tflop": flops / 1e12, **{gpu: flops / rate / 60 for gpu, (rate, _) in GPUS.items()}}
    return out
