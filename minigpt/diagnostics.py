"""Routing and calibration diagnostics (DESIGN.md §6): what the headline mixed loss does not show.

Routing weights come as ``{domain: (n, T, N)}`` (the shape :func:`minigpt.evaluate.collect`
returns): for each eval domain, the weight every token gave each of the N specialists.

* routing accuracy, confusion matrix (eval domain x argmax specialist, rows sum to 1), mean
  weights, the dominant specialist per domain, gate-weight histograms;
* calibration of a specialist's next-token distribution: expected calibration error of its top-1
  prediction, mean max-probability, accuracy and logit scale (std of the logits over the vocab);
* misrouting: when the argmax is not the window's domain, was the chosen specialist still the
  best one for that window (two specialists both fit) or a worse one (a wrong domain)?
* the routing ceiling: a router of the same form fitted on the evaluation windows themselves, an
  optimistic reference for what reading these trunk features allows;
* matplotlib helpers for the confusion matrix, the histograms and a per-token routing heatmap.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import DOMAINS
from .evaluate import routing_accuracy  # noqa: F401  (re-exported: one definition of accuracy)

WeightsByDomain = Mapping[str, torch.Tensor]


def _names(n: int, names: Sequence[str] | None) -> list[str]:
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
    return pd.DataFrame.from_dict(rows, orient="index", columns=_names(n, names))


def mean_weights(weights: WeightsByDomain, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows: eval domain; columns: specialist; entry: mean routing weight over that domain's tokens."""
    n = next(iter(weights.values())).shape[-1]
    rows = {d: w.reshape(-1, n).double().mean(0).tolist() for d, w in weights.items()}
    return pd.DataFrame.from_dict(rows, orient="index", columns=_names(n, names))


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


def gate_histograms(weights: WeightsByDomain, bins: int = 20, names: Sequence[str] | None = None) -> dict:
    """Histogram of each specialist's per-token weight, per eval domain (equal bins on [0, 1]).

    Returns ``{"edges": [...], "counts": {domain: {specialist: [...]}}}`` (counts of tokens).
    """
    n = next(iter(weights.values())).shape[-1]
    labels = _names(n, names)
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    counts = {}
    for domain, w in weights.items():
        flat = w.reshape(-1, n).double()
        counts[domain] = {labels[j]: torch.histc(flat[:, j], bins=bins, min=0.0, max=1.0).long().tolist()
                          for j in range(n)}
    return {"edges": edges.tolist(), "counts": counts}


# -- calibration -------------------------------------------------------------------------------
def calibration_stats(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-token top-1 confidence, correctness and logit scale from (..., V) logits and (...) targets."""
    logits = logits.float()
    probs = F.softmax(logits, dim=-1)
    conf, pred = probs.max(dim=-1)
    return {"confidence": conf.flatten(), "correct": (pred == targets).flatten().float(),
            "logit_std": logits.std(dim=-1, unbiased=False).flatten()}


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = 15) -> float:
    """ECE = sum over equal-width confidence bins (lo, hi] of (bin share) x |accuracy - mean confidence|."""
    conf = confidence.double().flatten()
    corr = correct.double().flatten()
    if conf.numel() == 0:
        raise ValueError("no predictions to calibrate; pass at least one token")
    idx = (conf * n_bins).ceil().long().clamp(1, n_bins) - 1
    sum_conf = conf.new_zeros(n_bins).index_add_(0, idx, conf)
    sum_corr = conf.new_zeros(n_bins).index_add_(0, idx, corr)
    return float((sum_conf - sum_corr).abs().sum() / conf.numel())  # |B|/n * |acc - conf| = |Σconf - Σcorr|/n


def calibration_from_stats(stats: Mapping[str, torch.Tensor], n_bins: int = 15) -> dict[str, float]:
    return {"ece": expected_calibration_error(stats["confidence"], stats["correct"], n_bins),
            "mean_max_prob": float(stats["confidence"].double().mean()),
            "accuracy": float(stats["correct"].double().mean()),
            "logit_scale": float(stats["logit_std"].double().mean()),
            "n_tokens": int(stats["confidence"].numel())}


def calibration(logits: torch.Tensor, targets: torch.Tensor, n_bins: int = 15) -> dict[str, float]:
    """ECE (top-1, ``n_bins`` bins), mean max-probability, top-1 accuracy and logit scale."""
    return calibration_from_stats(calibration_stats(logits, targets), n_bins)


def merge_stats(parts: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


@torch.no_grad()
def model_calibration(models: Mapping[str, torch.nn.Module], eval_sets: Mapping[str, tuple],
                      batch_size: int = 16, n_bins: int = 15) -> dict[str, dict[str, dict]]:
    """``{model: {domain | "all": calibration}}`` for full models on every eval domain."""
    out = {}
    for name, model in models.items():
        per = {}
        for domain, (x_all, y_all) in eval_sets.items():
            per[domain] = merge_stats([calibration_stats(model(x_all[i:i + batch_size])[0], y_all[i:i + batch_size])
                                       for i in range(0, x_all.shape[0], batch_size)])
        out[name] = {d: calibration_from_stats(s, n_bins) for d, s in per.items()}
        out[name]["all"] = calibration_from_stats(merge_stats(list(per.values())), n_bins)
    return out


# -- misrouting --------------------------------------------------------------------------------
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


# -- the routing ceiling -----------------------------------------------------------------------
def fit_to_eval_labels(router: torch.nn.Module, states: Mapping[str, torch.Tensor], steps: int = 300,
                       lr: float = 1e-2) -> torch.nn.Module:
    """Fit ``router`` in place on trunk states ``{domain: (n, T, C)}``, every window's own domain as target.

    Full batch, Adam, cross-entropy (``router.router_loss``) against one-hot labels at every
    position. Given the *evaluation* windows, this router has seen the test and its answers, so it
    is an optimistic reference for any router of the same form reading the same features. (Not a
    strict bound: cross-entropy is not accuracy, and on a weak trunk a trained router can beat it
    on one domain.) A trained router close to it has little left to gain from more router steps
    or other targets; closing the rest needs trunk features that separate the domains better.
    """
    from .router import router_loss  # the router's own loss; router imports nothing from here

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not states:
        raise ValueError("no trunk states to fit on; pass {domain: (n, T, C) tensor} for at least one domain")
    unknown = [d for d in states if d not in DOMAINS]
    if unknown:
        raise ValueError(f"unknown domains {unknown}; states must be keyed by {', '.join(DOMAINS)}")
    x = torch.cat([states[d] for d in states])  # (n_all, T, C)
    labels = torch.cat([torch.full((s.shape[0],), DOMAINS.index(d)) for d, s in states.items()])
    opt = torch.optim.Adam(router.parameters(), lr=lr)
    router.train()
    for _ in tqdm(range(steps), desc="router fitted on eval", leave=False, mininterval=1.0):
        w = router(x)  # (n_all, N) or (n_all, T, N)
        loss = router_loss(w, F.one_hot(labels, w.shape[-1]).to(w.dtype))  # the window's label at every position
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return router.eval()


# -- plots -------------------------------------------------------------------------------------
def _finish(fig, path: Path | str | None) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)


def plot_confusion(cm: pd.DataFrame, ax=None, path: Path | str | None = None, title: str = "Where each domain is routed"):
    """Heatmap of a row-normalised confusion matrix (diagonal = routing accuracy)."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.6, 3.4))
    im = ax.imshow(cm.values, vmin=0, vmax=1, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            v = cm.values[i, j]
            ax.text(j, i, f"{v:.0%}", ha="center", va="center", color="white" if v > 0.6 else "black")
    ax.set_xticks(range(cm.shape[1]), [c.replace(" specialist", "") for c in cm.columns])
    ax.set_yticks(range(cm.shape[0]), cm.index)
    ax.set_xlabel("argmax specialist")
    ax.set_ylabel("eval domain")
    ax.set_title(title)
    if fig is not None:
        fig.colorbar(im, ax=ax, label="share of tokens")
        _finish(fig, path)
    return ax


def plot_gate_histograms(hist: dict, path: Path | str | None = None, title: str = "Gate weights per domain"):
    """One panel per eval domain, one step histogram per specialist (from :func:`gate_histograms`)."""
    import matplotlib.pyplot as plt

    domains = list(hist["counts"])
    fig, axes = plt.subplots(1, len(domains), figsize=(3.4 * len(domains), 2.8), sharey=True, squeeze=False)
    edges = np.asarray(hist["edges"])
    for ax, domain in zip(axes[0], domains):
        for name, counts in hist["counts"][domain].items():
            c = np.asarray(counts, dtype=float)
            ax.stairs(c / max(c.sum(), 1), edges, label=name.replace(" specialist", ""))
        ax.set_title(f"{domain} text")
        ax.set_xlabel("routing weight")
    axes[0][0].set_ylabel("share of tokens")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title)
    _finish(fig, path)
    return fig


def plot_token_routing(weights: torch.Tensor, labels: torch.Tensor | None = None, names: Sequence[str] | None = None,
                       ax=None, path: Path | str | None = None, title: str = "Per-token routing weights"):
    """Heatmap of one window's (T, N) weights; ``labels`` (T,) draws the true domain of each token."""
    import matplotlib.pyplot as plt

    w = weights.detach().double().cpu().numpy()
    if w.ndim == 1:  # a per-sequence router: the same weights at every position
        w = w[None, :]
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 2.4))
    ax.imshow(w.T, aspect="auto", vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(w.shape[1]), [n.replace(" specialist", "") for n in _names(w.shape[1], names)])
    if labels is not None:  # true domain as white dots on the row of its specialist
        lab = labels.detach().cpu().numpy()
        ax.scatter(np.arange(len(lab)), lab, s=4, c="white", marker="s", label="true domain")
        ax.legend(loc="upper right", fontsize=7)
    ax.set_xlabel("position in window")
    ax.set_title(title)
    if fig is not None:
        _finish(fig, path)
    return ax


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
