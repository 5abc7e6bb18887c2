"""What a router is trained towards (Chapter 32, Step 5): domain labels or performance targets
``softmax(-loss / temp)``, compared on the same held-out windows (notebook 3)."""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..chapter import score_specialists
from ..config import DOMAINS
from ..evaluate import ORACLE, loss_table, routing_accuracy
from ..experiment import Experiment
from ..fusion import FusedModel
from ..router import mean_max_target
from ..scoring import dispatch_row, fused_row, per_window_losses
from ..streams import random_windows


def compare_router_targets(exp: Experiment, targets: Sequence[str] = ("domain", "performance"),
                           kind: str = "last_token", k: int | None = None):
    """Train (or load) one router per target type and score it on the studies' held-out windows
    (``Experiment.study_sets``: every router of the comparison on the same windows).

    Returns ``(summary, scores)``: ``summary`` has one row per target type with routing accuracy
    per domain and on average and the mixed loss of soft fusion and of hard dispatch with that
    router, next to the per-sequence oracle; ``scores`` is :func:`minigpt.scoring.score`'s result
    (routers named by their target).
    """
    routers = {t: exp.router(kind, replace(exp.profile.router, target=t), k) for t in targets}
    scores = score_specialists(exp, k, routers, windows=exp.study_sets)
    table = loss_table(scores.nll)
    hard = dispatch_row if kind == "last_token" else (lambda t: fused_row("hard", t))
    rows = {}
    for t in targets:
        acc = routing_accuracy(scores.weights[t])
        rows[t] = {**{f"accuracy {d}": acc[d] for d in DOMAINS},
                   "accuracy (mean)": sum(acc.values()) / len(acc),
                   "fused soft, mixed": table.loc[fused_row("soft", t), "mixed"],
                   f"{hard(t).split(' (')[0]}, mixed": table.loc[hard(t), "mixed"],
                   "oracle, mixed": table.loc[ORACLE, "mixed"]}
    return pd.DataFrame(rows).T.rename_axis("router target"), scores


@torch.no_grad()
def window_losses(exp: Experiment, x: torch.Tensor, y: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """Mean next-token loss of each specialist on each window: (B, T) ids -> (B, N)."""
    k = exp.k if k is None else k
    return per_window_losses(FusedModel(exp.specialists(k=k), k), x, y, exp.profile.eval_batch_size)


def router_windows(exp: Experiment, per_domain: int, seed: int = 0):
    """``per_domain`` random windows from each domain's ``router`` split.

    Returns ids (n, T), targets (n, T), labels like ``"code #1"`` and each specialist's mean
    loss on each window (n, N).
    """
    gen = torch.Generator().manual_seed(seed)
    T = exp.profile.model.block_size
    pairs = [random_windows(exp.streams.get(d, "router"), per_domain, T, gen) for d in DOMAINS]
    x, y = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
    labels = [f"{d} #{i + 1}" for d in DOMAINS for i in range(per_domain)]
    return x, y, labels, window_losses(exp, x, y)


def target_sharpness(losses: torch.Tensor, temps: Sequence[float]) -> np.ndarray:
    """Mean target weight on the best specialist, ``softmax(-loss/temp).max()``, for each temperature."""
    return np.array([mean_max_target(losses, t) for t in temps])
