"""Representation similarity and the divergence -> fusion-gain relation.

* :func:`linear_cka` compares two sets of activations of the same inputs (Kornblith et al., 2019):
  1 for identical representations, unchanged by rotations and by a global scale, near 0 for
  unrelated ones. It tells whether two models hold the same information up to a rotation; it does
  not tell whether their coordinates line up, which is what averaging weights or mixing hidden
  states needs.
* :func:`divergence` is KALAVAI's specialist divergence: how much each specialist improved on its
  own domain over the base, in %, averaged over domains. KALAVAI reports that the fused model's
  gain over the best specialist grows with it, roughly gain = 0.82 * divergence - 2.72 (both in %);
  :func:`fit_gain_vs_divergence` fits our own points and puts that line next to them.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .data import DOMAINS
from .evaluate import HEADLINE

KALAVAI_SLOPE, KALAVAI_INTERCEPT = 0.82, -2.72


def linear_cka(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Linear CKA between (n, d1) and (n, d2) activations of the same n inputs.

    ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with column-centred X, Y (float64).
    """
    x = torch.as_tensor(x).detach().double().reshape(-1, torch.as_tensor(x).shape[-1])
    y = torch.as_tensor(y).detach().double().reshape(-1, torch.as_tensor(y).shape[-1])
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs activations of the same inputs: got {x.shape[0]} and {y.shape[0]} rows")
    if x.shape[0] < 2:
        raise ValueError("CKA needs at least 2 inputs")
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    denom = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    if denom == 0:
        raise ValueError("CKA is undefined for a constant representation (zero variance)")
    return float(torch.linalg.matrix_norm(y.T @ x) ** 2 / denom)


def paired_cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cosine between row i of x and row i of y: do the raw coordinates agree, token by token?

    Unlike CKA this is not invariant to rotations: two models that hold the same information in
    rotated coordinates score high CKA but a paired cosine near 0.
    """
    x, y = torch.as_tensor(x).double(), torch.as_tensor(y).double()
    if x.shape != y.shape:
        raise ValueError(f"paired cosine needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    return float(torch.nn.functional.cosine_similarity(x, y, dim=-1).mean())


def cka_matrix(acts: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """Pairwise linear CKA between named (n, d) activations of the same inputs."""
    names = list(acts)
    m = pd.DataFrame(1.0, index=names, columns=names)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            m.loc[a, b] = m.loc[b, a] = linear_cka(acts[a], acts[b])
    return m


def mean_off_diagonal(m: pd.DataFrame) -> float:
    v = m.values
    mask = ~np.eye(len(v), dtype=bool)
    return float(v[mask].mean()) if mask.any() else float("nan")


def _loss(table, row: str, domain: str) -> float:
    return float(table.loc[row, domain] if isinstance(table, pd.DataFrame) else table[row][domain])


def own_domain_gains(table: pd.DataFrame | Mapping, domains: Sequence[str] = DOMAINS) -> dict[str, float]:
    """Per domain: (base - own specialist) / base * 100 on that domain's held-out loss."""
    return {d: (_loss(table, "base", d) - _loss(table, f"{d} specialist", d)) / _loss(table, "base", d) * 100
            for d in domains}


def divergence(table: pd.DataFrame | Mapping, domains: Sequence[str] = DOMAINS) -> float:
    """KALAVAI divergence (%): mean over domains of each specialist's own-domain gain over the base."""
    return float(np.mean(list(own_domain_gains(table, domains).values())))


def fusion_gain(table: pd.DataFrame, fused: str = HEADLINE) -> float:
    """Gain (%) of a fused row over the best specialist on mixed data (positive = fusion is better)."""
    specs = [f"{d} specialist" for d in DOMAINS if f"{d} specialist" in table.index]
    best = float(table.loc[specs, "mixed"].min())
    return (best - float(table.loc[fused, "mixed"])) / best * 100


def kalavai_line(div: float | np.ndarray) -> float | np.ndarray:
    """KALAVAI's reported gain (%) at a divergence (%)."""
    out = KALAVAI_SLOPE * np.asarray(div, dtype=float) + KALAVAI_INTERCEPT
    return float(out) if out.ndim == 0 else out


def fit_gain_vs_divergence(points: Sequence) -> dict:
    """Least-squares line gain = a * divergence + b over ``points`` and KALAVAI's line for comparison.

    ``points``: (divergence, gain) pairs or dicts with those keys, both in %. With fewer than two
    distinct divergences there is no line to fit and slope/intercept are None.
    """
    pairs = [(p["divergence"], p["gain"]) if isinstance(p, Mapping) else tuple(p) for p in points]
    d = np.array([p[0] for p in pairs], dtype=float)
    g = np.array([p[1] for p in pairs], dtype=float)
    out = {"n": len(pairs), "divergence": d.tolist(), "gain": g.tolist(),
           "kalavai": {"slope": KALAVAI_SLOPE, "intercept": KALAVAI_INTERCEPT,
                       "predicted_gain": kalavai_line(d).tolist()},
           "slope": None, "intercept": None, "r2": None}
    if len(pairs):
        out["kalavai"]["mean_residual"] = float(np.mean(g - kalavai_line(d)))
    if len(np.unique(d)) >= 2:
        slope, intercept = np.polyfit(d, g, 1)
        pred = slope * d + intercept
        ss_tot = float(((g - g.mean()) ** 2).sum())
        out.update(slope=float(slope), intercept=float(intercept),
                   r2=float(1 - ((g - pred) ** 2).sum() / ss_tot) if ss_tot > 0 else None)
    return out


def seed_summary(reports: Sequence[Mapping], router: str = "per-token") -> pd.DataFrame:
    """The headline numbers of several ``table.json`` reports, one row per seed plus mean and std.

    Columns: the headline fusion's gain over the best specialist on mixed data (%), its oracle gap
    (nats), the ``router``'s routing accuracy per domain (%) and the lowest of those. Reports that
    carry a ``routing_ceiling`` (``Experiment.routing_ceiling``) add that router's oracle gap and
    lowest routing accuracy: an optimistic reference for a router of this form on these features.
    The std row is the sample standard deviation (ddof=1), so it needs at least two seeds; with
    one it is NaN.
    """
    if not reports:
        raise ValueError("no results to summarise; run `python -m minigpt run --seed N` for some seeds first")
    seeds = [r["seed"] for r in reports]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds} repeat; give each seed once")
    rows = {}
    for rep in reports:
        table = pd.DataFrame.from_dict(rep["table"], orient="index")
        acc = {d: 100 * rep["routing_accuracy"][router][d] for d in DOMAINS}
        rows[f"seed {rep['seed']}"] = {"gain vs best specialist %": fusion_gain(table, rep.get("headline", HEADLINE)),
                                       "oracle gap nats": rep["oracle_gap_nats"],
                                       **{f"routing {d} %": a for d, a in acc.items()},
                                       "routing min %": min(acc.values())}
        if "routing_ceiling" in rep:
            ceiling = rep["routing_ceiling"]
            rows[f"seed {rep['seed']}"].update({
                "ceiling gap nats": ceiling["oracle_gap_nats"],
                "ceiling routing min %": 100 * min(ceiling["routing_accuracy"][d] for d in DOMAINS)})
    out = pd.DataFrame.from_dict(rows, orient="index")
    stats = pd.DataFrame({"mean": out.mean(), "std": out.std(ddof=1)}).T
    return pd.concat([out, stats])
