"""Routers that read the shared trunk's hidden state and weight the specialists.

* :class:`LinearRouter` is the chapter's router (Chapter 32, Step 3): one linear map of the *last*
  token's hidden state, one weight vector per sequence. For language modelling that summary has
  seen the whole window, so the weights used at early positions depend on later tokens.
* :class:`CausalRouter` is the honest per-token variant: the weights at position t read
  h_1..h_t only (their running mean), never a later token.

Targets (Chapter 32, Step 5): domain labels, performance-based ``softmax(-loss / temp)``, or the
language-model loss of the fused output itself (``lm``, as KALAVAI trains its router).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .config import RouterConfig
from .model import token_nll_from_logprobs

TARGETS = ("domain", "performance", "lm")


class LinearRouter(nn.Module):
    def __init__(self, d_model: int, n_experts: int = 3) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, n_experts)

    def forward(self, shared_h: torch.Tensor) -> torch.Tensor:
        x = shared_h[:, -1, :]  # (B, C): the last token summarises the window
        return F.softmax(self.proj(x), dim=-1)  # (B, N)


class CausalRouter(nn.Module):
    """Per-token weights from the running mean of the trunk states h_1..h_t.

    A single h_t says little about the domain at the start of a window; the running mean
    gathers the evidence seen so far without ever looking ahead. Still one linear map + softmax.
    """

    def __init__(self, d_model: int, n_experts: int = 3) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, n_experts)

    def forward(self, shared_h: torch.Tensor) -> torch.Tensor:
        T = shared_h.shape[1]
        steps = torch.arange(1, T + 1, device=shared_h.device, dtype=shared_h.dtype).view(1, T, 1)
        prefix_mean = shared_h.cumsum(dim=1) / steps  # (B, T, C): position t sees h_1..h_t only
        return F.softmax(self.proj(prefix_mean), dim=-1)  # (B, T, N)


ROUTERS = {"last_token": LinearRouter, "per_token": CausalRouter}


def performance_targets(losses: torch.Tensor, temp: float) -> torch.Tensor:
    """Soft targets from per-specialist losses (..., N): lower loss -> more weight.

    temp -> 0 gives one-hot on the best specialist; temp -> inf gives the uniform distribution.
    """
    if temp <= 0:
        raise ValueError(f"target temperature must be > 0, got {temp}")
    return F.softmax(-losses / temp, dim=-1)


def router_loss(weights: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between target distributions and router weights, both (..., N)."""
    return -(targets * weights.clamp_min(1e-9).log()).sum(dim=-1).mean()


def train_router(router: nn.Module, next_batch: Callable[[torch.Generator], tuple],
                 expert_logits: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                 cfg: RouterConfig, seed: int, desc: str = "router") -> list[float]:
    """Train ``router`` in place.

    ``next_batch(gen)`` -> (x, y, domain_labels); ``expert_logits(x)`` -> (shared_h (B, T, C),
    logits (N, B, T, V)), computed without gradients. Returns the per-step router loss.
    """
    if cfg.target not in TARGETS:
        raise ValueError(f"unknown router target {cfg.target!r}; choose one of {', '.join(TARGETS)}")
    from .fusion import fuse_logits  # fusion imports nothing from here

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(router.parameters(), lr=cfg.lr)
    router.train()
    history: list[float] = []
    for step in tqdm(range(cfg.steps), desc=desc, leave=False, mininterval=1.0):
        x, y, labels = next_batch(gen)
        with torch.no_grad():
            h, logits = expert_logits(x)  # (B, T, C), (N, B, T, V)
        weights = router(h)  # (B, N) or (B, T, N)
        n = logits.shape[0]
        if cfg.target == "lm":
            fused = fuse_logits(weights, logits)
            loss = token_nll_from_logprobs(F.log_softmax(fused.float(), -1), y).mean()
        else:
            if cfg.target == "domain":
                targets = F.one_hot(labels, n).float()  # (B, N)
            else:
                with torch.no_grad():
                    nll = torch.stack([token_nll_from_logprobs(F.log_softmax(l.float(), -1), y)
                                       for l in logits])  # (N, B, T)
                targets = performance_targets(nll.mean(-1).T, cfg.temp)  # (B, N) per sequence
            if weights.dim() == 3:  # per-token router: the sequence's target at every position
                targets = targets.unsqueeze(1).expand_as(weights)
            loss = router_loss(weights, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(loss.item())
    router.eval()
    return history
