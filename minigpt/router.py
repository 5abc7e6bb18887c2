"""Routers that read the shared trunk's hidden state and weight the specialists.

* :class:`LinearRouter` is the chapter's router (Chapter 32, Step 3): one linear map of the *last*
  token's hidden state, one weight vector per sequence. For language modelling that summary has
  seen the whole window, so the weights used at early positions depend on later tokens.
* :class:`CausalRouter` is the honest per-token variant: the weights at position t read
  h_1..h_t only (a decaying average of them), never a later token.

Targets (Chapter 32, Step 5): domain labels, performance-based ``softmax(-loss / temp)``, or the
language-model loss of the fused output itself (``lm``, as KALAVAI trains its router).

Both routers read the trunk state through a LayerNorm without parameters, as the model's own head
reads ``ln_f``'s output: the residual stream's scale varies by position and by base. Whether to
normalise is one of the choices made on the dev split (docs/design.md, "Decision log").
"""
from __future__ import annotations

import hashlib
import inspect
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import RouterConfig
from .device import autocast, grad_scaler, resolve, to_device, to_host
from .fusion import fuse_logits
from .heap import reuse_large_blocks
from .model import token_nll_from_logprobs
from .progress import progress

TARGETS = ("domain", "performance", "lm")


def normalized(shared_h: torch.Tensor) -> torch.Tensor:
    """LayerNorm over channels with no learned scale or shift: the router sees direction, not size."""
    return F.layer_norm(shared_h, shared_h.shape[-1:])


class LinearRouter(nn.Module):
    def __init__(self, d_model: int, n_experts: int = 3, normalize: bool = True) -> None:
        super().__init__()
        self.normalize = normalize  # read the trunk state through `normalized` (RouterConfig.normalize)
        self.proj = nn.Linear(d_model, n_experts)

    def forward(self, shared_h: torch.Tensor) -> torch.Tensor:
        x = shared_h[:, -1, :]  # (B, C): the last token summarises the window
        x = normalized(x) if self.normalize else x
        return F.softmax(self.proj(x), dim=-1)  # (B, N)


class CausalRouter(nn.Module):
    """Per-token weights from a decaying average of the trunk states h_1..h_t.

    A single h_t says little about the domain at the start of a window, so the router averages
    the evidence seen so far, never looking ahead. The average forgets with ``decay`` per token
    (about 1 / (1 - decay) tokens of memory), so after a switch of domain inside a window the
    weights follow within a few tokens; a plain running mean would be dominated by the first
    domain for the rest of the window. Still one linear map + softmax.
    """

    def __init__(self, d_model: int, n_experts: int = 3, decay: float = 0.9, normalize: bool = True) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}; 0.9 remembers about 10 tokens")
        self.decay, self.normalize = decay, normalize
        self.proj = nn.Linear(d_model, n_experts)

    def forward(self, shared_h: torch.Tensor) -> torch.Tensor:
        h = normalized(shared_h) if self.normalize else shared_h  # (B, T, C)
        T = h.shape[1]
        t = torch.arange(T, device=shared_h.device, dtype=shared_h.dtype)
        age = t.view(T, 1) - t.view(1, T)  # (T, T): how many tokens ago position s was, seen from t
        w = torch.where(age >= 0, self.decay ** age.clamp(min=0), torch.zeros_like(age))  # causal: s <= t
        w = w / w.sum(-1, keepdim=True)  # rows sum to 1: a weighted mean of h_1..h_t
        summary = torch.einsum("ts,bsc->btc", w, h)  # (B, T, C)
        return F.softmax(self.proj(summary), dim=-1)  # (B, T, N)


ROUTERS = {"last_token": LinearRouter, "per_token": CausalRouter}


def make_router(kind: str, d_model: int, n_experts: int, cfg: RouterConfig | None = None) -> nn.Module:
    """An untrained router of ``kind`` with the architecture settings of ``cfg`` (normalisation, and
    the causal router's decay), the ones the dev split chose (docs/design.md, "Decision log")."""
    check_router_kind(kind)
    cfg = cfg or RouterConfig()
    if kind == "per_token":
        return CausalRouter(d_model, n_experts, decay=cfg.decay, normalize=cfg.normalize)
    return LinearRouter(d_model, n_experts, normalize=cfg.normalize)


# -- a per-token router that remembers the document ---------------------------------------------
# Each evaluation window starts the causal router cold, though in use a reader has the text before
# it. These run the SAME trained CausalRouter with its decaying average carried in from a prefix
# (the tokens just before the window), without touching its code (and so its cache key).
def decayed_mean(h: torch.Tensor, decay: float, keep: torch.Tensor) -> torch.Tensor:
    """CausalRouter's decaying average of (B, S, C) states, over the positions where ``keep`` (B, S)
    is 1: position t averages kept h_s, s <= t, with weight decay ** (t - s)."""
    S = h.shape[1]
    t = torch.arange(S, device=h.device, dtype=h.dtype)
    age = t.view(S, 1) - t.view(1, S)
    w = torch.where(age >= 0, decay ** age.clamp(min=0), torch.zeros_like(age))  # (S, S), causal
    w = w.unsqueeze(0) * keep.to(h.dtype).unsqueeze(1)  # (B, S, S): dropped positions weigh nothing
    w = w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(h.dtype).tiny)
    return torch.einsum("bts,bsc->btc", w, h)


def after_last_eos(prefix_ids: torch.Tensor, eos: int) -> torch.Tensor:
    """(B, P) token ids -> (B, P) mask, 1 strictly after the last end-of-document token (all 1 without
    one): the part of the prefix that belongs to the document the window continues."""
    P = prefix_ids.shape[1]
    pos = torch.arange(P, device=prefix_ids.device).expand_as(prefix_ids)
    last = torch.where(prefix_ids == eos, pos, torch.full_like(pos, -1)).max(-1, keepdim=True).values
    return (pos > last).float()


def with_memory(router: CausalRouter, prefix_h: torch.Tensor | None, shared_h: torch.Tensor,
                keep: torch.Tensor | None = None) -> torch.Tensor:
    """``router``'s per-token weights (B, T, N) for a window whose trunk states are ``shared_h``
    (B, T, C), its decaying average started on ``prefix_h`` (B, P, C), the states of the tokens
    before the window, instead of cold. ``keep`` (B, P) masks prefix positions out (0: forgotten,
    e.g. before a document boundary, or a window with no prefix). ``prefix_h=None``: cold start,
    what ``router(shared_h)`` gives."""
    T = shared_h.shape[1]
    if prefix_h is None:
        prefix_h, keep = shared_h[:, :0], shared_h.new_zeros(shared_h.shape[0], 0)
    if keep is None:
        keep = prefix_h.new_ones(prefix_h.shape[:2])
    h = torch.cat([prefix_h, shared_h], dim=1)  # (B, P + T, C)
    h = normalized(h) if router.normalize else h
    keep = torch.cat([keep.to(h.dtype), h.new_ones(shared_h.shape[:2])], dim=1)
    summary = decayed_mean(h, router.decay, keep)[:, -T:]  # the window's positions only
    return F.softmax(router.proj(summary), dim=-1)  # (B, T, N)


def memory_code_fingerprint() -> str:
    """Hash of the carried-state code: with :func:`router_code_fingerprint`, what a cached
    document-memory result was measured with."""
    src = "".join(inspect.getsource(obj) for obj in (decayed_mean, after_last_eos, with_memory))
    return hashlib.sha256(src.encode()).hexdigest()[:16]


def check_router_kind(kind: str) -> None:
    """One-line error for a router kind that is not in ``ROUTERS``."""
    if kind not in ROUTERS:
        raise ValueError(f"unknown router kind {kind!r}; choose one of {', '.join(ROUTERS)}")


def router_code_fingerprint() -> str:
    """Hash of the code that turns trunk states into weights. Router cache keys and results JSONs
    carry it, so editing a router (or ``normalized``) retrains cached routers and keeps results
    measured with the old code out of pooled fits."""
    src = "".join(inspect.getsource(obj) for obj in (normalized, LinearRouter, CausalRouter))
    return hashlib.sha256(src.encode()).hexdigest()[:16]


def performance_targets(losses: torch.Tensor, temp: float) -> torch.Tensor:
    """Soft targets from per-specialist losses (..., N): lower loss -> more weight.

    temp -> 0 gives one-hot on the best specialist; temp -> inf gives the uniform distribution.
    """
    if temp <= 0:
        raise ValueError(f"target temperature must be > 0, got {temp}; use e.g. 0.1 (sharp) to 1.0 (soft), "
                         "or target='domain' for one-hot domain labels")
    return F.softmax(-losses / temp, dim=-1)


def mean_max_target(losses: torch.Tensor, temp: float) -> float:
    """How sharp performance targets are: the mean target weight on each window's best expert,
    ``softmax(-loss / temp).max()``, over per-window losses (..., N). 1 is one-hot, 1/N uniform."""
    return float(performance_targets(losses, temp).max(-1).values.double().mean())


def router_loss(weights: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between target distributions and router weights, both (..., N).

    Per-sequence targets (B, N) for a per-token router's weights (B, T, N) apply at every position.
    """
    if weights.dim() == 3 and targets.dim() == 2:
        targets = targets.unsqueeze(1).expand_as(weights)
    return -(targets * weights.clamp_min(1e-9).log()).sum(dim=-1).mean()


def train_router(router: nn.Module, next_batch: Callable[[torch.Generator], tuple],
                 expert_logits: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                 cfg: RouterConfig, seed: int, desc: str = "router",
                 experts: Sequence[nn.Module] = ()) -> list[float]:
    """Train ``router`` in place on the device (:func:`minigpt.device.resolve`, where it stays).

    ``next_batch(gen)`` -> (x, y, domain_labels) on the CPU, moved here; ``expert_logits(x)`` ->
    (shared_h (B, T, C), logits (N, B, T, V)), computed without gradients by ``experts`` (the
    models it runs, moved to the device with the router). Every step runs the experts again: the
    only path for ``lm`` targets; domain and performance targets can train on a precomputed pool
    instead (:mod:`minigpt.router_pool`). Returns the per-step router loss.
    """
    check_target(cfg.target)
    dev = resolve()
    to_device(list(experts), dev)

    def step_loss(gen: torch.Generator) -> torch.Tensor:
        x, y, labels = to_device(next_batch(gen), dev)
        return _router_step_loss(router, expert_logits, x, y=y, labels=labels, cfg=cfg)

    return fit_router(router, step_loss, cfg, seed=seed, desc=desc)


def check_target(target: str) -> None:
    """One-line error for a router target that is not in ``TARGETS``."""
    if target not in TARGETS:
        raise ValueError(f"unknown router target {target!r}; choose one of {', '.join(TARGETS)}")


def fit_router(router: nn.Module, step_loss: Callable[[torch.Generator], torch.Tensor], cfg: RouterConfig,
               seed: int, desc: str) -> list[float]:
    """Adam on ``router`` for ``cfg.steps`` steps of ``step_loss(gen)`` (the batch drawn with the
    seeded ``gen``), on the device, under autocast; the per-step losses, read back once at the end."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    dev = resolve()
    to_device(router, dev)
    opt = torch.optim.Adam(router.parameters(), lr=cfg.lr)
    scaler = grad_scaler(dev)  # passes straight through unless CUDA runs in fp16
    router.train()
    history: list[torch.Tensor] = []
    with reuse_large_blocks():  # the same tensors every step (minigpt/heap.py)
        for step in progress(range(cfg.steps), desc):
            with autocast(dev):
                loss = step_loss(gen)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            history.append(loss.detach().clone())  # a bare detach() kept each step's loss buffers alive
    router.eval()
    return to_host(torch.stack(history)).tolist() if history else []


def window_targets(cfg: RouterConfig, labels: torch.Tensor, window_losses: torch.Tensor | None, n: int) -> torch.Tensor:
    """(B, N) per-window targets: one-hot ``labels`` (B,) for ``domain``, ``softmax(-loss / temp)`` of
    each expert's mean loss on the window, ``window_losses`` (B, N), for ``performance``."""
    if cfg.target == "domain":
        return F.one_hot(labels, n).float()
    return performance_targets(window_losses, cfg.temp)


def _router_step_loss(router: nn.Module, expert_logits: Callable, x: torch.Tensor, y: torch.Tensor,
                      labels: torch.Tensor, cfg: RouterConfig) -> torch.Tensor:
    """One step's router loss towards ``cfg.target`` (domain labels, performance targets or the fused LM loss)."""
    with torch.no_grad():
        h, logits = expert_logits(x)  # (B, T, C), (N, B, T, V)
    weights = router(h)  # (B, N) or (B, T, N)
    n = logits.shape[0]
    if cfg.target == "lm":
        fused = fuse_logits(weights, logits)
        return token_nll_from_logprobs(F.log_softmax(fused.float(), -1), y).mean()
    window_losses = None
    if cfg.target == "performance":
        with torch.no_grad():
            window_losses = expert_window_losses(logits, y)
    return router_loss(weights, window_targets(cfg, labels, window_losses, n))  # per-token router: same target everywhere


def expert_window_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, B, T, V) expert logits and (B, T) targets -> (B, N): each expert's mean loss on each window."""
    nll = torch.stack([token_nll_from_logprobs(F.log_softmax(l.float(), -1), y) for l in logits])  # (N, B, T)
    return nll.mean(-1).T
