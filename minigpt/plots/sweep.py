"""Figures of the freeze-depth sweep."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..scoring import HEADLINE, ORACLE, SPECIALIST_ROWS
from .style import DOMAIN_COLORS
from .training import plot_trunk_crown


def plot_freeze_sweep(frame: pd.DataFrame, k_profile: int | None = None, mark: int | None = None):
    """Small multiples of the freeze-depth sweep (one row per K, as :func:`minigpt.studies.freeze_sweep.sweep_frame`).
    A ``none`` row (nothing frozen, ``sweep_frame(rep, with_none=True)``) is drawn left of K = 0, apart from the line."""
    panels = [("mixed loss (nats)", ["best specialist mixed", "fused mixed", "oracle mixed"]),
              ("gain, %", ["divergence %", "fused vs best specialist %"]),
              ("oracle gap (nats)", ["oracle gap"]),
              ("routing accuracy", ["routing accuracy"]),
              ("crown similarity", ["crown CKA", "crown cosine"]),
              ("trainable parameters", ["trainable params"])]
    fig, axes = plt.subplots(2, 3, figsize=(11, 5.2), sharex=True)
    none = frame.index == "none"
    k_frame = frame[~none]
    ks = k_frame.index.astype(int)
    for ax, (label, cols) in zip(axes.flat, panels):
        for i, c in enumerate(cols):
            ax.plot(ks, k_frame[c], marker="o", color=f"C{i}", label=c)
            if none.any():  # nothing frozen: its own point at x = K0 - 1, not joined to the K line
                ax.plot([ks.min() - 1], frame.loc[none, c].values, marker="D", color=f"C{i}", ls="none")
        if k_profile is not None:
            ax.axvline(k_profile, color="0.6", ls=":", lw=1)
        if mark is not None:
            ax.axvline(mark, color="tab:purple", ls="--", lw=1)
        ax.set_title(label, fontsize=9)
        if len(cols) > 1:
            ax.legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("freeze depth K (blocks in the shared trunk)")
        ax.set_xticks([ks.min() - 1] * bool(none.any()) + list(ks),
                      ["none"] * bool(none.any()) + [str(k) for k in ks])
    fig.tight_layout()
    return fig


_GRID_ROWS = ["base", "best specialist", "weight average", "uniform mix", HEADLINE, ORACLE]


def _grid_mixed(rep: dict) -> dict[str, dict[str, float]]:
    """Mixed loss of the grid's rows at every K, with the best specialist as one row."""
    mixed = {K: dict(rep["per_k"][K]["mixed"]) for K in rep["per_k"]}
    for m in mixed.values():
        m["best specialist"] = min(m[s] for s in SPECIALIST_ROWS)
    return mixed


def _grid_losses(ax, r: dict, mixed: dict, limits: tuple[float, float], first: bool) -> None:
    """One K's mixed-loss bars on the axis shared by every K (differences are small next to the loss)."""
    short = {HEADLINE: "fused (router)", ORACLE: "oracle"}
    present = [q for q in _GRID_ROWS if q in mixed]
    vals = [mixed[q] for q in present]
    colors = ["0.45" if q == "base" else "tab:purple" if q == HEADLINE else "tab:olive" if q == ORACLE
              else "0.75" for q in present]
    ax.barh(range(len(present)), vals, color=colors)
    ax.set_xlim(*limits)
    ax.invert_yaxis()
    for y, v in enumerate(vals):
        ax.text(v, y, f" {v:.3f}", va="center", fontsize=6.5)
    ax.set_yticks(range(len(present)), [short.get(q, q) for q in present] if first else [], fontsize=7.5)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title(f"fused vs best specialist {r['fused_gain_vs_best_specialist_%']:+.2f}%\n"
                 f"oracle gap {r['oracle_gap']:.3f} nats", fontsize=8)
    if first:
        ax.set_ylabel("mixed loss\n(nats/token)", fontsize=8)


def _grid_domain_bars(ax_gain, ax_acc, r: dict, first: bool) -> None:
    """One K's own-domain gains over the base and per-domain routing accuracy (dotted: chance)."""
    domains = list(r["own_domain_gain_%"])
    colors = [DOMAIN_COLORS.get(d, f"C{i}") for i, d in enumerate(domains)]
    ax_gain.bar(domains, [r["own_domain_gain_%"][d] for d in domains], color=colors)
    ax_gain.axhline(0, color="black", lw=0.8)
    ax_gain.set_title(f"divergence {r['divergence_%']:.2f}%", fontsize=8)
    ax_acc.bar(domains, [r["routing_accuracy"].get(d, np.nan) for d in domains], color=colors)
    ax_acc.axhline(1 / len(domains), color="black", ls=":", lw=1)
    ax_acc.set_ylim(0, 1)
    for ax in (ax_gain, ax_acc):
        ax.tick_params(labelsize=7)
    if first:
        ax_gain.set_ylabel("own-domain gain\nover base, %", fontsize=8)
        ax_acc.set_ylabel("routing accuracy\n(dotted: chance)", fontsize=8)


def plot_freeze_grid(rep: dict, n_layer: int, counts_by_k=None, k_profile: int | None = None, ks=None):
    """What the freeze-depth slider shows, for every K at once (the built book has no kernel).

    Columns = K from :func:`minigpt.studies.freeze_sweep.freeze_sweep`'s report ``rep``. Rows: the
    trunk/crown cut; mixed held-out loss of the key rows on one shared axis, so bar lengths compare
    across K; each specialist's own-domain gain over the base; per-domain routing accuracy.
    ``counts_by_k`` = {K: :func:`minigpt.analysis.crowns.param_counts`} labels the diagrams. ``ks``
    draws only those depths (several images for a deep model) with the axes still scaled to every K.
    The sweep's ``none`` point (nothing frozen) has no trunk/crown cut to draw and is left out.
    """
    every_k = sorted((K for K in rep["per_k"] if K.isdigit()), key=int)  # the grid draws K points, not "none"
    ks = every_k if ks is None else [str(K) for K in ks]
    fig, axes = plt.subplots(4, len(ks), figsize=(2.7 * len(ks) + 0.6, 0.45 * (n_layer + 3) + 6.4),
                             squeeze=False, gridspec_kw={"height_ratios": [0.3 * (n_layer + 3), 2.2, 1.6, 1.6]})
    mixed = _grid_mixed(rep)
    every = [mixed[K][r] for K in every_k for r in _GRID_ROWS if r in mixed[K]]
    pad = (max(every) - min(every)) * 0.12 or 0.01
    for j, K in enumerate(ks):
        counts = (counts_by_k or {}).get(int(K)) or (counts_by_k or {}).get(K)
        plot_trunk_crown(n_layer, int(K), tuple(DOMAIN_COLORS), ax=axes[0, j], counts=counts, compact=True)
        if k_profile is not None and int(K) == k_profile:
            axes[0, j].set_title(axes[0, j].get_title() + "\n(the profile's K)", fontsize=9)
        _grid_losses(axes[1, j], rep["per_k"][K], mixed[K], limits=(min(every) - pad, max(every) + pad), first=j == 0)
        _grid_domain_bars(axes[2, j], axes[3, j], rep["per_k"][K], j == 0)
    # gains share one y axis so bar heights compare across K
    g_all = [v for K in every_k for v in rep["per_k"][K]["own_domain_gain_%"].values()]
    for ax in axes[2]:
        ax.set_ylim(min(0, min(g_all)) * 1.15, max(0, max(g_all)) * 1.15 or 1)
    fig.suptitle(f"Freeze depth K = {ks[0]}..{ks[-1]} · profile {rep['profile']}, seed {rep['seed']}", fontsize=10)
    fig.tight_layout()
    return fig
