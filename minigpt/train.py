"""Training loops: the base on mixed data, a specialist's crown on one domain, a monolithic baseline,
and a specialist with nothing frozen (:func:`fine_tune_everything`, the freeze sweep's ``none`` point).

AdamW with linear warmup and cosine decay, gradient clipping, a tqdm bar, and a seed that fixes
both the data order and the initialisation, so the same seed gives the same weights on CPU.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch

from .config import TrainConfig, device_name
from .model import GPT, lm_loss
from .progress import progress

Batch = tuple[torch.Tensor, torch.Tensor]


def default_device() -> torch.device:
    """``$MINIGPT_DEVICE`` if set, else CUDA when available, else the CPU (the models here are small
    enough that Apple's MPS rarely beats the CPU, so it is used only when asked for)."""
    name = device_name() or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``cfg.lr``, then cosine decay to ``cfg.lr * cfg.min_lr_ratio``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    done = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * min(1.0, done)))


def make_optimizer(params: dict[str, torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    # decay matrices only; biases, LayerNorm gains and embeddings of size 1-D are left alone
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # One fused kernel instead of ~10 small ops per tensor: the for-loop AdamW's dispatch overhead is
    # a few % of a cpu-profile step on one thread and much more with two contended threads
    # (benchmarks/train_throughput.py). Deterministic; differs from the loop only by rounding.
    fused = all(p.device.type in ("cpu", "cuda") for p in params.values())
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=fused or None)


def trainable_parameters(model: GPT, freeze_k: int | None) -> dict[str, torch.nn.Parameter]:
    """Every parameter, or with ``freeze_k`` only the crown's, after switching the trunk's gradients off."""
    if freeze_k is None:
        return dict(model.named_parameters())
    for p in model.trunk_parameters(freeze_k).values():
        p.requires_grad_(False)
    return model.crown_parameters(freeze_k)


def train_lm(model: GPT, next_batch: Callable[[torch.Generator], Batch], cfg: TrainConfig,
             seed: int, freeze_k: int | None = None, desc: str = "train") -> list[float]:
    """Train ``model`` in place and return the per-step training loss.

    With ``freeze_k`` set, the trunk (embeddings + first K blocks, and so the tied head) is frozen
    and run under ``no_grad``: no activations are kept for it and backward stops at block K.
    """
    gen = torch.Generator().manual_seed(seed)
    device = default_device()
    model.to(device)  # trained where it is fastest, handed back on the CPU
    params = trainable_parameters(model, freeze_k)
    opt = make_optimizer(params, cfg)
    plist = list(params.values())
    foreach = all(p.device.type in ("cpu", "cuda") for p in plist) or None
    model.train()
    losses: list[float] = []
    bar = progress(range(cfg.steps), desc)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        x, y = (t.to(device) for t in next_batch(gen))
        if freeze_k is None:
            logits, loss = model(x, y)
        else:
            with torch.no_grad():
                h = model.trunk(x, freeze_k)
            loss = lm_loss(model.crown(h, freeze_k), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # foreach: same norm bit for bit, fewer dispatches (CPU is not foreach's default device)
        torch.nn.utils.clip_grad_norm_(plist, cfg.grad_clip, foreach=foreach)
        opt.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.cpu().eval()
    return losses


def fine_tune_everything(base: GPT, next_batch: Callable[[torch.Generator], Batch], cfg: TrainConfig, seed: int,
                         desc: str = "train") -> tuple[GPT, list[float]]:
    """A copy of ``base`` with nothing frozen: its head untied (a copy of the embedding, trained on its
    own) and every parameter trained, embeddings included. Returns (model, per-step training loss)."""
    model = copy.deepcopy(base).untie_head()
    return model, train_lm(model, next_batch, cfg, seed, freeze_k=None, desc=desc)
