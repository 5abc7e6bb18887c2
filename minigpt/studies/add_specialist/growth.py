"""Growing a trained router by one output, for a specialist that joins later.

The per-token router is a linear map of a decaying average of the trunk states, then a softmax. Its
N rows score the N experts. Growing it keeps those rows exactly and adds one more: the old experts
keep their scores relative to each other, and the softmax now shares the weight with the newcomer.
Two ways to get the new row: train only it (the old rows frozen) on a little data, or set it without
any gradient step from the new domain's prototype (:func:`prototype_row`). Dropping an expert is the
reverse: remove its row, and the softmax renormalises over the rest (:class:`Without`).
"""
from __future__ import annotations

import copy
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...router import CausalRouter, decayed_mean, normalized


def summaries(router: CausalRouter, shared_h: torch.Tensor) -> torch.Tensor:
    """What ``router``'s rows read: the decaying average of the (normalised) trunk states, (B, T, C)."""
    h = normalized(shared_h) if router.normalize else shared_h
    return decayed_mean(h, router.decay, h.new_ones(h.shape[:2]))


class GrownRouter(nn.Module):
    """A trained router plus one new output. The old router is frozen (its rows are not parameters of
    this module's optimiser: ``requires_grad`` off); only ``new`` (a row and a bias) trains."""

    def __init__(self, old: CausalRouter) -> None:
        super().__init__()
        self.old = copy.deepcopy(old).requires_grad_(False)
        self.new = nn.Linear(old.proj.in_features, 1)
        nn.init.zeros_(self.new.weight)
        nn.init.constant_(self.new.bias, -10.0)  # starts almost silent: the old router's weights, nearly

    def forward(self, shared_h: torch.Tensor) -> torch.Tensor:
        s = summaries(self.old, shared_h)  # (B, T, C)
        logits = torch.cat([self.old.proj(s), self.new(s)], dim=-1)  # (B, T, N + 1)
        return F.softmax(logits, dim=-1)


def prototype_row(router: CausalRouter, features: Mapping[str, torch.Tensor], new: str) -> tuple[torch.Tensor, float]:
    """A new row set without training: make the new domain look to the router the way each old domain
    looks to its own row. ``features[d]`` are trunk states (n, T, C) of a few router-split windows of each
    domain, old ones in the router's row order, then ``new``. The row points along the new domain's mean
    summary (its prototype); its bias is the old rows' mean bias; its scale makes its score on that
    prototype the mean score the old rows give their own domains' prototypes."""
    with torch.no_grad():
        proto = {d: summaries(router, h).mean((0, 1)) for d, h in features.items()}  # (C,) each
        old = [d for d in features if d != new]
        own = torch.stack([router.proj.weight[i] @ proto[d] + router.proj.bias[i] for i, d in enumerate(old)]).mean()
        bias = float(router.proj.bias.mean())
        p = proto[new]
        row = p * (own - bias) / (p @ p)
    return row, bias


def with_row(router: CausalRouter, row: torch.Tensor, bias: float) -> GrownRouter:
    """``router`` grown by a fixed new row (no training)."""
    grown = GrownRouter(router)
    with torch.no_grad():
        grown.new.weight.copy_(row.view(1, -1))
        grown.new.bias.fill_(bias)
    return grown


class Without(nn.Module):
    """A router with one expert taken away: its output removed, the softmax renormalised over the rest
    (the dropped expert gets weight 0, so logit fusion ignores it). ``drop`` is the expert's index."""

    def __init__(self, router: nn.Module, drop: int) -> None:
        super().__init__()
        self.router, self.drop = router, drop

    def forward(self, shared_h: torch.Tensor) -> torch.Tensor:
        w = self.router(shared_h)
        w = torch.cat([w[..., :self.drop], torch.zeros_like(w[..., :1]), w[..., self.drop + 1:]], dim=-1)
        return w / w.sum(-1, keepdim=True)
