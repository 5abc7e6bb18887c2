"""Routers trained on precomputed features: run the experts once, train any number of routers.

A router with ``domain`` or ``performance`` targets needs, per training window, only the router's
input (the trunk states, (T, C)) and each expert's mean loss on the window (N numbers); it never
needs the crowns' logits. So the experts run once over a fixed *pool* of router-split windows and
every router of the same experts trains on that pool: Break 2's grid, the sweep, the seeds' two
routers, the notebooks' target comparison. Training then costs one linear map per step instead of
N crown forward passes. ``lm`` targets need the fused logits and keep the full path
(:func:`minigpt.router.train_router`).

The pool is drawn from the router split with a seed of its own, so routers of the same seed read
the same windows whoever the experts are; batches are drawn from it with the router's domain mix,
as :func:`minigpt.streams.mixed_windows` draws from the streams.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from .cache import cached
from .config import DOMAINS, RouterConfig
from .device import autocast, resolve, to_device
from .heap import reuse_large_blocks
from .progress import progress
from .router import check_target, expert_window_losses, fit_router, router_loss, window_targets
from .streams import DomainStreams, draw_labels, random_windows


@dataclass
class RouterPool:
    """The router's inputs ``h`` (D * n, T, C) and each expert's mean loss ``losses`` (D * n, N) on
    ``n`` fixed router-split windows of each of the D domains, domain by domain, on the device."""

    h: torch.Tensor
    losses: torch.Tensor
    per_domain: int
    domains: tuple[str, ...] = DOMAINS

    def batch(self, n: int, gen: torch.Generator, mix: tuple[float, ...] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` pool windows drawn with replacement in proportion ``mix`` (default: equal):
        inputs (n, T, C), expert losses (n, N) and domain labels (n,)."""
        labels = draw_labels(n, gen, mix, self.domains)
        rows = labels * self.per_domain + torch.randint(0, self.per_domain, (n,), generator=gen)
        rows, labels = to_device((rows, labels), self.h.device)
        return self.h[rows], self.losses[rows], labels


class LatestPool:
    """The most recent pool, by key: routers trained one after another on the same experts share
    it. Only one is kept: a pool at ``cpu`` is about 200 MB, and rebuilding one costs about what
    training one router on fresh windows does."""

    def __init__(self) -> None:
        self._key: str | None = None
        self._pool: RouterPool | None = None

    def get(self, key: str, build: Callable[[], RouterPool]) -> RouterPool:
        if key != self._key:
            self._key, self._pool = None, None  # free the old pool before the new one is built
            self._pool, self._key = build(), key
        return self._pool


@dataclass
class KnownLosses:
    """The experts' window losses on a pool's windows, already computed (for another router input of the
    same experts, or in another process): a pool then runs only ``features`` (x -> router input), not
    the crowns. The losses do not depend on what the router reads."""

    features: Callable[[torch.Tensor], torch.Tensor]
    losses: torch.Tensor  # (D * n, N), on the device


def pool_keeping_losses(losses_path: Path | None, build: Callable[[KnownLosses | None], RouterPool],
                        features: Callable[[torch.Tensor], torch.Tensor] | None) -> RouterPool:
    """``build(known)`` a pool (``known=None``: run the experts), keeping the experts' losses at
    ``losses_path`` (a few kB): the next pool
    over the same experts and windows, whatever the router reads and in whichever notebook, runs only
    ``features``. The crowns are most of a pool's cost (Break 1's four inputs, its control on the
    chapter's specialists, Break 2's healthy routers all reuse losses computed once)."""
    if losses_path is None or features is None:
        return build(None)
    built = []

    def full() -> torch.Tensor:
        built.append(build(None))
        return built[0].losses.cpu()

    losses = cached(losses_path, full, lambda t, tmp: torch.save(t, tmp), lambda q: torch.load(q, weights_only=True))
    return built[0] if built else build(KnownLosses(features, to_device(losses, resolve())))


@torch.no_grad()
def build_pool(streams: DomainStreams, inputs: Callable[[torch.Tensor], tuple] | KnownLosses, per_domain: int,
               T: int, seed: int, batch_size: int, experts: list[nn.Module] = (), desc: str = "router pool") -> RouterPool:
    """Run ``inputs(x)`` -> (router input (B, T, C), expert logits (N, B, T, V)) once over
    ``per_domain`` random router-split windows of each domain (drawn with ``seed``), keeping the
    router inputs and each expert's mean loss per window, on the device. With :class:`KnownLosses` as
    ``inputs``, only the router inputs are computed."""
    dev = resolve()
    to_device(list(experts), dev)
    gen = torch.Generator().manual_seed(seed)
    domains = tuple(streams.domains("router"))  # the chapter's three, then any domain that joined later
    windows = [random_windows(streams.get(d, "router"), per_domain, T, gen) for d in domains]
    x_all, y_all = torch.cat([w[0] for w in windows]), torch.cat([w[1] for w in windows])  # domain by domain
    h = losses = None  # filled in place, allocated once: per-batch pieces kept between the large
    # transient logits would fragment glibc's heap (Break 1's pools grew past 13 GB that way); with
    # nothing kept, every batch can reuse the last one's memory (minigpt/heap.py)
    with reuse_large_blocks():
        for i in progress(range(0, x_all.shape[0], batch_size), desc):
            x, y = to_device((x_all[i:i + batch_size], y_all[i:i + batch_size]), dev)
            with autocast(dev):
                if isinstance(inputs, KnownLosses):
                    feats, batch_losses = inputs.features(x), inputs.losses[i:i + x.shape[0]]
                else:
                    feats, logits = inputs(x)  # (B, T, C), (N, B, T, V)
                    batch_losses = expert_window_losses(logits, y)  # (B, N)
            if h is None:
                h = feats.new_empty((x_all.shape[0], *feats.shape[1:]), dtype=torch.float32)
                losses = batch_losses.new_empty((x_all.shape[0], batch_losses.shape[1]), dtype=torch.float32)
            h[i:i + x.shape[0]] = feats
            losses[i:i + x.shape[0]] = batch_losses
    return RouterPool(h, losses, per_domain, domains)


def train_router_on_pool(router: nn.Module, pool: RouterPool, cfg: RouterConfig, seed: int,
                         desc: str = "router") -> list[float]:
    """Train ``router`` in place on ``pool`` towards ``cfg.target`` (``domain`` or ``performance``):
    the same optimiser, steps and batch size as :func:`minigpt.router.train_router`."""
    check_target(cfg.target)
    if cfg.target == "lm":
        raise ValueError("lm targets need the fused logits of every batch, which a pool does not keep; "
                         "train them with minigpt.router.train_router")

    def step_loss(gen: torch.Generator) -> torch.Tensor:
        h, losses, labels = pool.batch(cfg.batch_size, gen, cfg.domain_mix)
        return router_loss(router(h), window_targets(cfg, labels, losses, pool.losses.shape[1]))

    return fit_router(router, step_loss, cfg, seed=seed, desc=desc)
