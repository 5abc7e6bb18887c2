"""What a notebook's slider recomputes while the reader waits: a per-token router retrained with
another setting on the experiment's router pool, then scored on a subset of the held-out windows.

The pool (the experts' trunk states and window losses on the router split, :mod:`minigpt.router_pool`)
is built once per experiment and kept in memory, so each move of a slider costs one router's training
(a linear map per step) and one scoring pass over a few windows per domain. Nothing here is cached on
disk: a reader exploring a slider should not fill the cache with routers nobody asked for by name. At
the profile's own settings the router is the one :meth:`Experiment.router` trains (same seeds).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
import torch.nn as nn

from .analysis.routing import collapse_signs
from .config import DOMAINS, RouterConfig
from .evaluate import loss_table
from .experiment import Experiment, train_new_router
from .fusion import FusedModel
from .router import mean_max_target
from .score_cache import not_remembered
from .scoring import SPECIALIST_ROWS, ScoreRequest, Scores, fused_row, score

LIVE_WINDOWS = 32  # held-out windows per domain a slider re-scores: seconds at `cpu`, not the table's 512


def eval_subset(eval_sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]], per_domain: int = LIVE_WINDOWS
                ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``per_domain`` windows of each domain's held-out set, evenly spread over it (all when it has fewer)."""
    out = {}
    for d, (x, y) in eval_sets.items():
        idx = torch.linspace(0, x.shape[0] - 1, min(per_domain, x.shape[0])).round().long().unique()
        out[d] = (x[idx], y[idx])
    return out


@dataclass
class LiveRouting:
    """One retrained router on the subset: its routing diagnostics (:func:`collapse_signs`), the fused
    (soft) mixed loss, how sharp its training targets were on the pool (mean target weight on each pool
    window's best expert; 1 for domain labels), the subset's loss table and weights, and how long training
    and scoring took."""

    cfg: RouterConfig
    routing_accuracy: dict[str, float]
    dominant_expert: int
    dominant_weight_elsewhere: float
    fused_mixed: float
    target_sharpness: float
    largest_routing_drop_pp: float | None  # against ``healthy_accuracy``, when it was given
    table: object  # pandas.DataFrame: every row scored on the subset
    weights: dict[str, torch.Tensor] = field(repr=False)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def mean_accuracy(self) -> float:
        return sum(self.routing_accuracy.values()) / len(self.routing_accuracy)

    @property
    def row(self) -> dict:
        """What :func:`minigpt.plots.plot_retrained` draws for this router."""
        return {"routing_accuracy": self.routing_accuracy, "dominant_weight_elsewhere": self.dominant_weight_elsewhere,
                "mixed": self.fused_mixed}


def score_routers(exp: Experiment, routers: Mapping[str, nn.Module], *, experts: Sequence[nn.Module] | None = None,
                  names: Sequence[str] = SPECIALIST_ROWS, per_domain: int = LIVE_WINDOWS) -> Scores:
    """``routers`` over ``experts`` (default: the specialists) on :func:`eval_subset`, scored afresh and not
    remembered on disk."""
    models = exp.specialists() if experts is None else list(experts)
    with not_remembered():
        return score(ScoreRequest(windows=eval_subset(exp.eval_sets, per_domain), experts=FusedModel(models, exp.k),
                                  routers=dict(routers), names=list(names), batch_size=exp.profile.eval_batch_size))


def retrain_router(exp: Experiment, cfg: RouterConfig, *, experts: Sequence[nn.Module] | None = None) -> nn.Module:
    """A per-token router over ``experts`` (default: the specialists) trained with ``cfg`` on the pool, not cached.
    Its seeds are those of :meth:`Experiment.router`, so at the profile's settings it is that router."""
    req = exp.router_request("per_token", cfg, experts=None if experts is None else list(experts))
    exp.router_pool(req)  # built once, then kept for the next move of the slider
    router, _ = train_new_router(exp, req, cfg)
    return router


def live_router(exp: Experiment, cfg: RouterConfig, *, experts: Sequence[nn.Module] | None = None,
                names: Sequence[str] = SPECIALIST_ROWS, healthy_accuracy: Mapping[str, float] | None = None,
                per_domain: int = LIVE_WINDOWS) -> LiveRouting:
    """Retrain a per-token router with ``cfg`` (:func:`retrain_router`) and score it on :func:`eval_subset`.
    ``healthy_accuracy`` (a reference router's routing accuracy on the same subset) adds the drop per domain."""
    t0 = time.perf_counter()
    router = retrain_router(exp, cfg, experts=experts)
    t1 = time.perf_counter()
    pool = exp.router_pool(exp.router_request("per_token", cfg, experts=None if experts is None else list(experts)))
    sharp = 1.0 if cfg.target == "domain" else mean_max_target(pool.losses, cfg.temp)
    scores = score_routers(exp, {"live": router}, experts=experts, names=names, per_domain=per_domain)
    t2 = time.perf_counter()
    table = loss_table(scores.nll)
    signs = collapse_signs(scores.weights["live"], healthy_accuracy)
    return LiveRouting(cfg=cfg, routing_accuracy=signs["routing_accuracy"], dominant_expert=signs["dominant_expert"],
                       dominant_weight_elsewhere=signs["dominant_weight_elsewhere"],
                       largest_routing_drop_pp=signs.get("largest_routing_drop_pp"),
                       fused_mixed=float(table.loc[fused_row("soft", "live"), "mixed"]), target_sharpness=sharp,
                       table=table, weights=scores.weights["live"], seconds={"train": t1 - t0, "score": t2 - t1})


def code_mix(code_share: float, n_domains: int = len(DOMAINS)) -> tuple[float, ...]:
    """A router's training mix with ``code_share`` of the windows from code and the rest split evenly."""
    if not 0.0 < code_share < 1.0:
        raise ValueError(f"code share must be between 0 and 1 (exclusive), got {code_share}; e.g. 0.9 for 90 % code")
    rest = (1.0 - code_share) / (n_domains - 1)
    return (code_share, *([rest] * (n_domains - 1)))
