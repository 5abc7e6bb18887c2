"""A router fitted on the evaluation windows themselves: an optimistic reference for routing.

:func:`fit_to_eval_labels` trains a router on the held-out windows' trunk states with their own
domain labels, so it has seen the test and its answers. :func:`routing_ceiling` does this for an
:class:`~minigpt.experiment.Experiment` and scores that router like any other; its routing accuracy
and oracle gap say how far a router of the same form, reading the same trunk features, could get.
A trained router close to it has little left to gain from more steps or other targets; the rest
needs trunk features that tell the domains apart better.
"""
from __future__ import annotations

import json
from typing import Mapping

import torch
import torch.nn.functional as F

from ..cache import cache_root, cached, config_key
from ..chapter import rounded
from ..checkpoint import model_fingerprint
from ..config import DOMAINS, derive_seed
from ..device import autocast, resolve, to_device
from ..evaluate import ORACLE, loss_table, routing_accuracy
from ..router import check_router_kind, make_router, router_code_fingerprint, router_loss
from ..fusion import FusedModel
from ..scoring import ScoreRequest, fused_row, score
from ..progress import progress

FITTED = "eval-fitted"  # the router's name in the scored rows


def fit_to_eval_labels(router: torch.nn.Module, states: Mapping[str, torch.Tensor], steps: int = 300,
                       lr: float = 1e-2) -> torch.nn.Module:
    """Fit ``router`` in place on trunk states ``{domain: (n, T, C)}``, each window's own domain as target.

    Full batch, Adam, the router's own cross-entropy (:func:`minigpt.router.router_loss`) against
    one-hot labels at every position. The result is a reference, not a strict bound: cross-entropy
    is not accuracy, and on a weak trunk a trained router can beat it on one domain. Only the
    router's last linear map has parameters, so what it reads is computed once (:func:`_proj_input`).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not states:
        raise ValueError("no trunk states to fit on; pass {domain: (n, T, C) tensor} for at least one domain")
    unknown = [d for d in states if d not in DOMAINS]
    if unknown:
        raise ValueError(f"unknown domains {unknown}; states must be keyed by {', '.join(DOMAINS)}")
    dev = resolve()  # tiny and full batch: float32 even on CUDA
    to_device(router, dev)
    x = to_device(torch.cat([states[d] for d in states]), dev)  # (n_all, T, C)
    labels = torch.cat([torch.full((s.shape[0],), DOMAINS.index(d), device=dev) for d, s in states.items()])
    feats = _proj_input(router, x)  # (n_all, C) or (n_all, T, C)
    opt = torch.optim.Adam(router.parameters(), lr=lr)
    router.train()
    for _ in progress(range(steps), "router fitted on eval"):
        w = F.softmax(router.proj(feats), dim=-1)  # = router(x): (n_all, N) or (n_all, T, N)
        loss = router_loss(w, F.one_hot(labels, w.shape[-1]).to(w.dtype))  # the window's label everywhere
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return router.eval()


@torch.no_grad()
def _proj_input(router: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What ``router.proj`` reads when the router runs on ``x``: both router kinds end in
    ``softmax(proj(features))`` with parameter-free features, so a full-batch fit computes them once
    instead of at every step (same numbers, a fraction of the time). Checked, not assumed."""
    seen = []
    hook = router.proj.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    try:
        weights = router(x)
    finally:
        hook.remove()
    if len(seen) != 1 or not torch.equal(F.softmax(router.proj(seen[0]), dim=-1), weights):
        raise TypeError(f"{type(router).__name__} is not softmax(proj(features)); fit it step by step instead")
    return seen[0].contiguous()  # the causal router's einsum leaves it strided: each step's matmul 1.5x slower


@torch.no_grad()
def _eval_states(exp, specs, k: int) -> dict[str, torch.Tensor]:
    """The shared trunk's output on every held-out window, ``{domain: (n, T, C)}``."""
    bs, dev = exp.profile.eval_batch_size, resolve()
    to_device(specs[0], dev)
    states = {}
    with autocast(dev):
        for d, (x, _) in exp.eval_sets.items():
            x = to_device(x, dev)
            states[d] = torch.cat([specs[0].trunk(x[i:i + bs], k) for i in range(0, x.shape[0], bs)]).float()
    return states  # on the device, where the router is fitted on them


def routing_ceiling(exp, kind: str = "per_token", steps: int = 300) -> dict:
    """A ``kind`` router fitted on the evaluation windows (their domain labels), then scored on them.

    Returns its routing accuracy per domain and its oracle gap (nats, mixed), an optimistic
    reference for what a router reading these trunk features can reach. Cached as JSON under
    ``<cache>/ceilings``, keyed by the router code, the specialists and the evaluation set.
    """
    check_router_kind(kind)  # before anything is loaded or trained
    specs, k, p = exp.specialists(), exp.k, exp.profile
    key = config_key("ceiling", kind, steps, router_code_fingerprint(), p.router, [model_fingerprint(m) for m in specs],
                     k, exp.seed, exp.corpus_fingerprint, p.eval_chunks)
    path = cache_root() / "ceilings" / f"{kind}-{key}.json"

    def build() -> dict:
        states = _eval_states(exp, specs, k)
        torch.manual_seed(derive_seed(exp.seed, "ceiling-init", kind, k))
        router = fit_to_eval_labels(make_router(kind, p.model.n_embd, len(specs), p.router), states, steps)
        scores = score(ScoreRequest(windows=exp.eval_sets, experts=FusedModel(specs, k), routers={FITTED: router},
                                    batch_size=p.eval_batch_size))  # no base row: the ceiling reads none
        mixed = loss_table(scores.nll)["mixed"]
        return {"kind": kind, "steps": steps, "seed": exp.seed, "freeze_k": k,
                "routing_accuracy": rounded(routing_accuracy(scores.weights[FITTED])),
                "oracle_gap_nats": round(float(mixed[fused_row("soft", FITTED)] - mixed[ORACLE]), 6)}

    return cached(path, build, lambda obj, tmp: tmp.write_text(json.dumps(obj, indent=2)),
                  lambda q: json.loads(q.read_text()))
