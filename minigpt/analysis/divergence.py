"""Specialist divergence and the divergence -> fusion-gain relation.

:func:`divergence` is KALAVAI's specialist divergence: how much each specialist improved on its own
domain over the base, in %, averaged over domains. KALAVAI reports that the fused model's gain over
the best specialist grows with it, roughly gain = 0.82 * divergence - 2.72 (both in %);
:func:`fit_gain_vs_divergence` fits our own points and puts that line next to them.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..config import DOMAINS
from ..scoring import HEADLINE

KALAVAI_SLOPE, KALAVAI_INTERCEPT = 0.82, -2.72


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
