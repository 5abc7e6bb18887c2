"""Figures of the chapter's table: cross-domain losses, mixed losses, intervals, the oracle gap."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..scoring import HEADLINE, ORACLE, SPECIALIST_ROWS
from .style import DOMAIN_COLORS


def plot_cross_domain(matrix: pd.DataFrame, path: Path | None = None, ax=None):
    """Heatmap of mean held-out loss, rows = models, columns = eval domains; lowest per column boxed."""
    import seaborn as sns

    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(5.2, 3.4))
    sns.heatmap(matrix, annot=True, fmt=".3f", cmap="RdYlGn_r", cbar_kws={"label": "loss (nats/token)"}, ax=ax)
    for j, col in enumerate(matrix.columns):
        i = list(matrix.index).index(matrix[col].idxmin())
        ax.add_patch(plt.Rectangle((j, i), 1, 1, fill=False, edgecolor="black", lw=2))
    ax.set_xlabel("evaluation domain")
    ax.set_ylabel("")
    ax.set_title("Who is best where (boxed: lowest loss per domain)")
    if own:
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
            plt.close(fig)
    return ax


def plot_mixed_losses(table: pd.DataFrame, highlight=(), ax=None, column: str = "mixed"):
    """Horizontal bars of one column of the evaluation table, best at the top; base as a dashed line."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 0.32 * len(table) + 1.0))
    s = table[column].sort_values(ascending=False)
    colors = []
    for row in s.index:
        if row in highlight:
            colors.append("tab:purple" if "oracle" not in row else "tab:olive")
        else:
            colors.append(DOMAIN_COLORS.get(row.split()[0], "0.6"))
    ax.barh(s.index, s.values, color=colors)
    lo, hi = s.min(), s.max()
    pad = (hi - lo) * 0.15 or 0.01
    ax.set_xlim(lo - pad, hi + pad)  # differences are small next to the loss itself: zoom in
    if "base" in table.index:
        ax.axvline(table.loc["base", column], color="black", ls="--", lw=1, label="base")
        ax.legend(fontsize=8, loc="lower right")
    for y, v in enumerate(s.values):
        ax.text(v, y, f" {v:.3f}", va="center", fontsize=7)
    ax.set_xlabel(f"{column} held-out loss (nats/token, lower is better; axis zoomed)")
    ax.tick_params(axis="y", labelsize=8)
    return ax


_BAND_LINES = {HEADLINE: ("tab:purple", "-"), "base": ("black", "--"), "weight average": ("0.5", ":"),
               "uniform mix": ("0.5", "-."), "monolithic": ("tab:brown", "--")}


def plot_oracle_band(mixed: pd.Series, lines=None, ax=None):
    """The oracle gap on one axis: a band from the oracle to the best single specialist (the room
    routing could win) and a vertical line per row of ``mixed`` (one column of the table), the
    headline's distance to the oracle marked with an arrow."""
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 1.9))
    lines = _BAND_LINES if lines is None else lines
    best_spec = float(mixed[list(SPECIALIST_ROWS)].min())
    ax.axvspan(mixed[ORACLE], best_spec, color="tab:olive", alpha=0.25, label="oracle … best specialist")
    for row, (color, style) in lines.items():
        if row in mixed.index:
            ax.axvline(mixed[row], color=color, ls=style, lw=2, label=f"{row} ({mixed[row]:.3f})")
    gap = mixed[HEADLINE] - mixed[ORACLE]
    ax.annotate("", xy=(mixed[ORACLE], 0.8), xytext=(mixed[HEADLINE], 0.8),
                arrowprops=dict(arrowstyle="<->", color="tab:purple"))
    ax.text((mixed[ORACLE] + mixed[HEADLINE]) / 2, 0.86, f"gap {gap:+.3f}", ha="center", fontsize=8,
            color="tab:purple")
    values = [mixed[r] for r in lines if r in mixed.index] + [mixed[ORACLE], best_spec]
    pad = 0.08 * (max(values) - min(values)) + 1e-4
    ax.set_xlim(min(values) - pad, max(values) + pad)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_xlabel("mixed held-out loss (nats/token, lower is better)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return ax


def _bucket_bounds(label: str) -> tuple[int, int]:
    lo, hi = label.split("-")
    return int(lo), int(hi)


def plot_gap_by_position(per_position: Sequence[float], buckets: Mapping[str, float] | None = None, ax=None,
                         label: str = "fused soft (per-token router) − oracle (per sequence)"):
    """The oracle gap at every token position (nats; + = the row loses to the oracle there), with the
    buckets of :func:`minigpt.evaluate.gap_by_position` (``{"lo-hi": mean gap}``) as shaded spans
    and their mean as a horizontal segment."""
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.0))
    gap = np.asarray(per_position, dtype=float)
    ax.plot(np.arange(gap.size), gap, color="tab:purple", lw=1.2, marker="o", ms=2.5, label=label)
    ax.axhline(0, color="black", lw=0.8)
    for i, (name, mean) in enumerate((buckets or {}).items()):
        lo, hi = _bucket_bounds(name)
        ax.axvspan(lo - 0.5, hi + 0.5, color="0.5" if i % 2 else "tab:olive", alpha=0.12, lw=0)
        ax.hlines(mean, lo - 0.5, hi + 0.5, color="black", lw=2, label="bucket mean" if i == 0 else None)
        ax.annotate(f"positions {name}\n{mean:+.3f}", (0.5 * (lo + hi), mean), xytext=(0, 8),
                    textcoords="offset points", ha="center", fontsize=7)
    ax.set_xlim(-0.5, gap.size - 0.5)
    ax.set_xlabel("position of the predicted token in the window")
    ax.set_ylabel("gap to the oracle (nats)")
    ax.set_title("Where in the window the oracle gap comes from (mean over windows and domains)", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    return ax


def plot_gap_curves(curves: Mapping[str, Sequence[float]], buckets: Mapping[str, Mapping[str, float]] | None = None,
                    ax=None, colors: Sequence[str] = ("tab:purple", "tab:orange", "tab:green")):
    """Several rows' oracle gap at every token position (nats; + = the row loses to the oracle there)
    in one figure, e.g. the per-token router started cold and with document memory; ``buckets[name]``
    (:func:`minigpt.evaluate.gap_by_position`) adds each row's bucket means as segments in its colour."""
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.2))
    for (name, gap), color in zip(curves.items(), colors):
        gap = np.asarray(gap, dtype=float)
        ax.plot(np.arange(gap.size), gap, color=color, lw=1.2, marker="o", ms=2, label=name)
        for b, mean in (buckets or {}).get(name, {}).items():
            lo, hi = _bucket_bounds(b)
            ax.hlines(mean, lo - 0.5, hi + 0.5, color=color, lw=2.5, alpha=0.6)
    for i, b in enumerate(next(iter((buckets or {}).values()), {})):
        lo, hi = _bucket_bounds(b)
        ax.axvspan(lo - 0.5, hi + 0.5, color="0.5" if i % 2 else "tab:olive", alpha=0.08, lw=0)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlim(-0.5, max(len(g) for g in curves.values()) - 0.5)
    ax.set_xlabel("position of the predicted token in the window")
    ax.set_ylabel("gap to the oracle (nats)")
    ax.set_title("Oracle gap by position (thick segments: bucket means)", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    return ax


def plot_intervals(intervals: Sequence[Mapping], title: str | None = None):
    """The headline against each reference with its 95 % paired interval: Δ% comparisons on the
    left (right of zero = the fused model is better), the oracle gap in nats on the right."""
    pct = [iv for iv in intervals if iv["unit"] == "%"]
    nats = [iv for iv in intervals if iv["unit"] == "nats"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.5 * max(len(pct), 2) + 1.2),
                             gridspec_kw={"width_ratios": [3, 1.3]})
    for ax, group, label in ((axes[0], pct, "Δ% of mixed loss (> 0: fused is better)"),
                             (axes[1], nats, "nats behind the oracle")):
        y = np.arange(len(group))[::-1]
        est = np.array([iv["estimate"] for iv in group])
        err = np.array([[iv["estimate"] - iv["low"], iv["high"] - iv["estimate"]] for iv in group]).T
        ax.errorbar(est, y, xerr=err if len(group) else None, fmt="o", color="tab:purple", capsize=4)
        ax.axvline(0, color="black", lw=0.8, ls=":")
        ax.set_yticks(y, [iv["comparison"] for iv in group])
        ax.set_xlabel(label)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
