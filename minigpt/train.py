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

from .config import TrainConfig
from .device import autocast, grad_scaler, resolve, to_device, to_host
from .heap import reuse_large_blocks
from .model import GPT, lm_loss
from .progress import progress

Batch = tuple[torch.Tensor, torch.Tensor]


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
    """Train ``model`` in place on the device (:func:`minigpt.device.resolve`, where it stays) and
    return the per-step training loss.

    With ``freeze_k`` set, the trunk (embeddings + first K blocks, and so the tied head) is frozen
    and run under ``no_grad``: no activations are kept for it and backward stops at block K.
    Batches are drawn on the CPU (the generator fixes the data order on every device) and moved;
    the losses stay on the device until the end, so no step waits for the GPU.
    """
    gen = torch.Generator().manual_seed(seed)
    dev = resolve()
    to_device(model, dev)
    params = trainable_parameters(model, freeze_k)
    opt = make_optimizer(params, cfg)
    scaler = grad_scaler(dev)  # passes straight through unless CUDA runs in fp16
    plist = list(params.values())
    foreach = all(p.device.type in ("cpu", "cuda") for p in plist) or None
    model.train()
    losses: list[torch.Tensor] = []
    bar = progress(range(cfg.steps), desc)
    with reuse_large_blocks():  # every step allocates the same tensors: no fragmentation (heap.py)
        for step in bar:
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            x, y = to_device(next_batch(gen), dev)
            with autocast(dev):
                loss = _lm_step_loss(model, x, y, freeze_k)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
            # foreach: same norm bit for bit, fewer dispatches (CPU is not foreach's default device)
            torch.nn.utils.clip_grad_norm_(plist, cfg.grad_clip, foreach=foreach)
            scaler.step(opt)
            scaler.update()
            losses.append(loss.detach().clone())  # a bare detach() kept each step's loss buffers alive (GBs)
            if step % 20 == 0 and not bar.disable:  # the bar's value is the only read-back during training
                bar.set_postfix(loss=f"{float(to_host(loss.detach())):.3f}")
    model.eval()
    return to_host(torch.stack(losses)).tolist() if losses else []


def _lm_step_loss(model: GPT, x: torch.Tensor, y: torch.Tensor, freeze_k: int | None) -> torch.Tensor:
    """One step's loss: the whole model, or a frozen trunk under ``no_grad`` and the crown on top."""
    if freeze_k is None:
        return model(x, y)[1]
    with torch.no_grad():
        h = model.trunk(x, freeze_k)
    return lm_loss(model.crown(h, freeze_k), y)


def fine_tune_everything(base: GPT, next_batch: Callable[[torch.Generator], Batch], cfg: TrainConfig, seed: int,
                         desc: str = "train") -> tuple[GPT, list[float]]:
    """A copy of ``base`` with nothing frozen: its head untied (a copy of the embedding, trained on its
    own) and every parameter trained, embeddings included. Returns (model, per-step training loss)."""
    model = copy.deepcopy(base).untie_head()
    return model, train_lm(model, next_batch, cfg, seed, freeze_k=None, desc=desc)
