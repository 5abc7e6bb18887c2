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
as :func:`minigpt.streams.mixed_windows` draws from the streams. The same windows for every set is
also why each expert's losses can be kept on disk on their own (:func:`experts_window_losses`): a
set that shares experts with an earlier one runs only its new crowns.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
import torch.nn as nn

from .cache import cache_root, cached, config_key
from .checkpoint import model_fingerprint, tensors_hash, trunk_hash
from .config import DOMAINS, RouterConfig
from .device import autocast, resolve, to_device, to_host
from .heap import reuse_large_blocks
from .progress import progress
from .router import check_target, expert_window_losses, fit_router, router_loss, window_targets
from .streams import DomainStreams, draw_labels, random_windows

Batch = tuple[torch.Tensor, torch.Tensor]


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
    """The experts' window losses on a pool's windows, already computed (:func:`experts_window_losses`
    keeps them on disk): a pool then runs only ``features`` (x -> router input), not the crowns. The
    losses do not depend on what the router reads."""

    features: Callable[[torch.Tensor], torch.Tensor]
    losses: torch.Tensor  # (D * n, N), on the device


def pool_windows(streams: DomainStreams, per_domain: int, T: int, seed: int) -> dict[str, Batch]:
    """The pool's windows, ``{domain: (ids (n, T), targets (n, T))}``: ``per_domain`` random router-split
    windows of each domain, drawn with ``seed`` in the order of ``streams.domains("router")``."""
    gen = torch.Generator().manual_seed(seed)
    return {d: random_windows(streams.get(d, "router"), per_domain, T, gen) for d in streams.domains("router")}


def experts_window_losses(experts: Sequence[nn.Module], k: int, shared: bool, windows: Mapping[str, Batch],
                          batch_size: int) -> torch.Tensor:
    """Each expert's mean loss on every pool window, (D * n, N), domain by domain, kept on disk one expert and
    one domain at a time (a few kB each). An expert's losses depend on its weights, the trunk it runs on and
    the windows, not on the set it is in: a set that shares experts with an earlier one (Break 1's different
    set and its controls, the joined set and the chapter's) runs only the crowns that are new."""
    providers = [0 if shared else j for j in range(len(experts))]  # whose trunk each expert runs on
    return torch.cat([_domain_columns(experts, providers, k, xy, batch_size, d) for d, xy in windows.items()])


def _domain_columns(experts: Sequence[nn.Module], providers: Sequence[int], k: int, windows: Batch, batch_size: int,
                    domain: str) -> torch.Tensor:
    """(n, N): every expert's losses on one domain's windows, each read from disk or computed; the experts
    still missing run together, in one pass over the windows."""
    x, y = windows
    paths = [_losses_path(m, experts[providers[j]], k, x, y, batch_size) for j, m in enumerate(experts)]
    fresh: dict[int, torch.Tensor] = {}

    def compute(j: int) -> torch.Tensor:
        if j not in fresh:
            todo = [i for i, q in enumerate(paths) if i == j or not os.path.lexists(q)]
            fresh.update(_domain_losses(experts, providers, todo, k, windows, batch_size, f"expert losses on {domain}"))
        return fresh[j]

    return torch.stack([cached(q, lambda j=j: compute(j), lambda t, tmp: torch.save(t, tmp),
                               lambda f: torch.load(f, weights_only=True)) for j, q in enumerate(paths)], 1)


def _losses_path(expert: nn.Module, trunk_of: nn.Module, k: int, x: torch.Tensor, y: torch.Tensor,
                 batch_size: int) -> Path:
    key = config_key("expert-window-losses", model_fingerprint(expert), trunk_hash(trunk_of, k), k,
                     tensors_hash({"x": x, "y": y}), batch_size, resolve().type)
    return cache_root() / "pool_losses" / f"{key}.pt"


@torch.no_grad()
def _domain_losses(experts: Sequence[nn.Module], providers: Sequence[int], todo: Sequence[int], k: int,
                   windows: Batch, batch_size: int, desc: str) -> dict[int, torch.Tensor]:
    """``{j: (n,)}``, expert j's mean loss on each window, for every j in ``todo``: each trunk once per batch,
    then every crown on it, as :meth:`minigpt.fusion.FusedModel.crowns` runs them (the same numbers)."""
    (x, y), dev = windows, resolve()
    to_device([experts[i] for i in {*todo, *(providers[j] for j in todo)}], dev)
    out = {j: torch.empty(x.shape[0], device=dev) for j in todo}  # filled on the device, read back once
    with autocast(dev), reuse_large_blocks():
        for i in progress(range(0, x.shape[0], batch_size), desc):
            xb, yb = to_device((x[i:i + batch_size], y[i:i + batch_size]), dev)
            trunks: dict[int, torch.Tensor] = {}
            for j in todo:
                p = providers[j]
                if p not in trunks:
                    trunks[p] = experts[p].trunk(xb, k)
                logits = experts[j].lm_head(experts[j].crown_hidden(trunks[p], k))  # (B, T, V)
                out[j][i:i + xb.shape[0]] = expert_window_losses(logits.unsqueeze(0), yb)[:, 0]
    return to_host(out)


@torch.no_grad()
def build_pool(streams: DomainStreams, inputs: Callable[[torch.Tensor], tuple] | KnownLosses, per_domain: int,
               T: int, seed: int, batch_size: int, experts: list[nn.Module] = (), desc: str = "router pool") -> RouterPool:
    """Run ``inputs(x)`` -> (router input (B, T, C), expert logits (N, B, T, V)) once over
    ``per_domain`` random router-split windows of each domain (drawn with ``seed``), keeping the
    router inputs and each expert's mean loss per window, on the device. With :class:`KnownLosses` as
    ``inputs``, only the router inputs are computed."""
    dev = resolve()
    to_device(list(experts), dev)
    windows = pool_windows(streams, per_domain, T, seed)  # the chapter's three, then any domain that joined later
    domains = tuple(windows)
    x_all, y_all = (torch.cat([w[i] for w in windows.values()]) for i in (0, 1))  # domain by domain
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
