"""Routing diagnostics: what the headline mixed loss does not show about a router.

Routing weights come as ``{domain: (n, T, N)}`` (the shape :func:`minigpt.scoring.score` returns in
``Scores.weights``): for each eval domain, the weight every token gave each of the N specialists.

* routing accuracy (:func:`minigpt.evaluate.routing_accuracy`), confusion matrix (eval domain x
  argmax specialist, rows sum to 1), mean weights, the dominant specialist per domain, gate-weight
  histograms;
* misrouting: when the argmax is not the window's domain, was the chosen specialist still the
  best one for that window (two specialists both fit) or a worse one (a wrong domain)?
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..config import DOMAINS
from ..model import GPT
from ..scoring import SPECIALIST_ROWS
from ..evaluate import routing_accuracy  # noqa: F401  (re-exported: one definition of accuracy)

WeightsByDomain = Mapping[str, torch.Tensor]


def specialist_names(n: int, names: Sequence[str] | None) -> list[str]:
    if names is not None:
        return list(names)
    return [f"{d} specialist" for d in DOMAINS[:n]] if n <= len(DOMAINS) else [f"expert {i}" for i in range(n)]


def confusion_matrix(weights: WeightsByDomain, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows: eval domain; columns: specialist; entry: share of tokens whose argmax is that specialist."""
    n = next(iter(weights.values())).shape[-1]
    rows = {}
    for domain, w in weights.items():
        counts = torch.bincount(w.argmax(-1).flatten(), minlength=n).double()
        rows[domain] = (counts / counts.sum()).tolist()
    return pd.DataFrame.from_dict(rows, orient="index", columns=specialist_names(n, names))


def mean_weights(weights: WeightsByDomain, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows: eval domain; columns: specialist; entry: mean routing weight over that domain's tokens."""
    n = next(iter(weights.values())).shape[-1]
    rows = {d: w.reshape(-1, n).double().mean(0).tolist() for d, w in weights.items()}
    return pd.DataFrame.from_dict(rows, orient="index", columns=specialist_names(n, names))


def dominant_weight(weights: WeightsByDomain, names: Sequence[str] | None = None) -> dict[str, dict]:
    """Per domain: the specialist with the largest mean weight, that weight, and whether it is the own one."""
    mw = mean_weights(weights, names)
    out = {}
    for domain, row in mw.iterrows():
        j = int(np.argmax(row.values))
        own = DOMAINS.index(domain) if domain in DOMAINS else None
        out[domain] = {"specialist": mw.columns[j], "weight": float(row.iloc[j]), "is_own": j == own}
    return out


def weight_on(weights: WeightsByDomain, specialist: int) -> dict[str, float]:
    """Mean weight given to one specialist on each domain (e.g. a dominant one on the others' text)."""
    return {d: float(w[..., specialist].double().mean()) for d, w in weights.items()}


def collapse_signs(weights: WeightsByDomain, healthy_accuracy: Mapping[str, float] | None = None) -> dict:
    """The chapter's two diagnostics of a collapsing router (Break 2): per-domain routing accuracy (and,
    against ``healthy_accuracy``, how many points each domain dropped), and the expert with the most
    weight overall with its mean weight on the *other* domains' tokens."""
    acc = routing_accuracy(weights)
    dom = int(np.argmax(mean_weights(weights).values.mean(0)))
    elsewhere = float(np.mean([v for d, v in weight_on(weights, dom).items() if d != DOMAINS[dom]]))
    out = {"routing_accuracy": acc, "dominant_expert": dom, "dominant_weight_elsewhere": elsewhere}
    if healthy_accuracy is not None:
        out["routing_drop_pp"] = {d: (healthy_accuracy[d] - acc[d]) * 100 for d in acc}
        out["largest_routing_drop_pp"] = max(out["routing_drop_pp"].values())
    return out


def gate_histograms(weights: WeightsByDomain, bins: int = 20, names: Sequence[str] | None = None) -> dict:
    """Histogram of each specialist's per-token weight, per eval domain (equal bins on [0, 1]).

    Returns ``{"edges": [...], "counts": {domain: {specialist: [...]}}}`` (counts of tokens).
    """
    n = next(iter(weights.values())).shape[-1]
    labels = specialist_names(n, names)
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    counts = {}
    for domain, w in weights.items():
        flat = w.reshape(-1, n).double()
        counts[domain] = {labels[j]: torch.histc(flat[:, j], bins=bins, min=0.0, max=1.0).long().tolist()
                          for j in range(n)}
    return {"edges": edges.tolist(), "counts": counts}


def misrouting(weights: WeightsByDomain, specialist_nll: Mapping[str, torch.Tensor]) -> dict[str, dict]:
    """Which kind of wrong is the router? Per domain, over tokens whose argmax is not the own domain.

    ``specialist_nll[domain]`` is (N, n, T) token losses of each specialist on that domain's windows.
    ``chosen_is_window_best`` is the share of misrouted tokens whose chosen specialist has the lowest
    mean loss on that window (the two specialists both fit: the label was the wrong target), and
    ``excess_nats`` the mean extra loss of the chosen specialist over the own-domain one there.
    """
    out = {}
    for domain, w in weights.items():
        own = DOMAINS.index(domain)
        nll = specialist_nll[domain].double()  # (N, n, T)
        choice = w.argmax(-1)  # (n, T)
        wrong = choice != own
        best = nll.mean(-1).argmin(0)  # (n,) best specialist per window
        chosen = nll.gather(0, choice.unsqueeze(0)).squeeze(0)  # (n, T)
        share = float(wrong.double().mean())
        if wrong.any():
            best_hit = float((choice == best.unsqueeze(1))[wrong].double().mean())
            excess = float((chosen - nll[own])[wrong].mean())
        else:
            best_hit, excess = float("nan"), 0.0
        out[domain] = {"misrouted": share, "chosen_is_window_best": best_hit, "excess_nats": excess}
    return out


def oracle_agreement(weights: WeightsByDomain, specialist_nll: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Per domain: share of tokens whose argmax is the window's best specialist (lowest mean loss).

    Unlike routing accuracy this needs no domain label, so it stays fair when the own-domain
    specialist is not the best one on its own domain (e.g. a weaker base under it).
    """
    out = {}
    for domain, w in weights.items():
        best = specialist_nll[domain].double().mean(-1).argmin(0)  # (n,)
        out[domain] = float((w.argmax(-1) == best.unsqueeze(1)).double().mean())
    return out


def misrouting_margins(weights: WeightsByDomain) -> dict[str, dict]:
    """How far behind the chosen specialist is the own-domain one, on misrouted tokens?

    Per domain: ``margin`` (tensor) = weight on the chosen specialist − weight on the own one for
    every token whose argmax is not its domain; ``median_margin``; ``own_is_second`` = share of
    those tokens where the own specialist has the second-largest weight. Small margins with the own
    specialist second mean a router torn between two; large margins mean a confidently wrong domain.
    """
    out = {}
    for domain, w in weights.items():
        own = DOMAINS.index(domain)
        flat = w.reshape(-1, w.shape[-1]).double()
        wrong = flat.argmax(-1) != own
        chosen = flat.max(-1).values[wrong]
        margin = chosen - flat[wrong, own]
        second = flat[wrong].topk(min(2, flat.shape[-1]), dim=-1).indices[:, -1] == own
        out[domain] = {"margin": margin, "misrouted": float(wrong.double().mean()),
                       "median_margin": float(margin.median()) if margin.numel() else float("nan"),
                       "own_is_second": float(second.double().mean()) if margin.numel() else float("nan")}
    return out


def best_specialist_share(nll: dict) -> dict[str, float]:
    """Per domain, the share of held-out windows whose lowest-loss specialist is that domain's own.

    Where this is below 1, domain labels and performance targets disagree about the right expert.
    """
    out = {}
    for d in DOMAINS:
        per_window = torch.stack([nll[r][d].mean(-1) for r in SPECIALIST_ROWS])  # (N, n)
        out[d] = float((per_window.argmin(0) == DOMAINS.index(d)).float().mean())
    return out


@torch.no_grad()
def router_weights(trunk_model: GPT, k: int, routers: dict, x: torch.Tensor,
                   batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """Each router's weights on ``x`` (B, T) as (B, T, N); a per-window router's vector is repeated over T.

    ``batch_size`` runs the windows in the batches :func:`minigpt.scoring.score` used, which gives
    its weights bit for bit (another batch size may round differently in the last bit).
    """
    step = batch_size or x.shape[0]
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in routers}
    for i in range(0, x.shape[0], step):
        h = trunk_model.trunk(x[i:i + step], k)
        for name, router in routers.items():
            w = router(h)
            parts[name].append(w.unsqueeze(1).expand(-1, h.shape[1], -1) if w.dim() == 2 else w)
    return {name: torch.cat(ws) for name, ws in parts.items()}


@torch.no_grad()
def future_leak(trunk_model: GPT, k: int, routers: dict, x: torch.Tensor, x_alt: torch.Tensor, t: int) -> dict:
    """Do the weights used at positions < t depend on tokens at positions >= t?

    ``x`` and ``x_alt`` (B, T) agree on their first ``t`` tokens. Returns, for the trunk output and
    for each router, the largest absolute change at positions < t. A causal computation gives 0.
    """
    if not torch.equal(x[:, :t], x_alt[:, :t]):
        raise ValueError(f"x and x_alt must share their first t={t} tokens; they differ before position {t}")
    out = {"trunk output": float((trunk_model.trunk(x, k) - trunk_model.trunk(x_alt, k))[:, :t].abs().max())}
    a, b = router_weights(trunk_model, k, routers, x), router_weights(trunk_model, k, routers, x_alt)
    for name in routers:
        out[name] = float((a[name] - b[name])[:, :t].abs().max())
    return out
