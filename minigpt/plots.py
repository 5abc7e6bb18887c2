"""Figures the chapters and the CLI share."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd


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


# -- figures for the chapter notebooks -------------------------------------------------------------
DOMAIN_COLORS = {"code": "tab:blue", "medical": "tab:red", "legal": "tab:green"}
FROZEN_COLOR = "0.82"


def _smooth(values, window: int):
    import numpy as np

    v = np.asarray(values, dtype=float)
    if window <= 1 or v.size < window:
        return np.arange(v.size), v
    kernel = np.ones(window) / window
    return np.arange(window - 1, v.size), np.convolve(v, kernel, mode="valid")


def plot_loss_curves(curves, ax=None, smooth: int | None = None, offsets=None, title: str = "training loss"):
    """Per-step training losses (faint) with a moving average on top; ``curves`` = {label: losses}.

    ``offsets`` = {label: first step} places a curve later on the x axis (a specialist after its base).
    """
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.4))
    for i, (label, losses) in enumerate(curves.items()):
        color = DOMAIN_COLORS.get(label.split()[0], f"C{i}" if label.split()[0] != "base" else "0.3")
        x0 = (offsets or {}).get(label, 0)
        w = smooth or max(1, len(losses) // 15)
        ax.plot(x0 + np.arange(len(losses)), losses, color=color, alpha=0.25, lw=0.8)
        xs, ys = _smooth(losses, w)
        ax.plot(x0 + xs, ys, color=color, lw=2, label=f"{label} (mean of {w} steps)" if w > 1 else label)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def plot_trunk_crown(n_layer: int, k: int, domains=("code", "medical", "legal"), ax=None, counts=None,
                     compact: bool = False):
    """Block diagram of one shared frozen trunk (embeddings + blocks < K) and a crown per domain.

    Frozen parts are grey and hatched; the tied head is drawn frozen and shared because it is the
    embedding matrix. ``counts`` (from ``minigpt.notebook.param_counts``) goes into the title.
    ``compact`` shortens the labels for small multiples.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5.6, 0.62 * (n_layer + 3) + 0.9))
    ncol, w, gap, h = len(domains), 1.0, 0.15, 0.8
    full = ncol * w + (ncol - 1) * gap
    fs = 7 if compact else 8

    def box(x, y, width, label, frozen, color=None):
        ax.add_patch(plt.Rectangle((x, y), width, h, facecolor=FROZEN_COLOR if frozen else color,
                                   alpha=1.0 if frozen else 0.35, edgecolor="0.25",
                                   hatch="//" if frozen else None, lw=1))
        ax.text(x + width / 2, y + h / 2, label, ha="center", va="center", fontsize=fs,
                bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=1) if frozen else None)

    shared_note = "" if compact else "  · frozen, shared"
    rows = [("embeddings" if compact else "embeddings (wte + wpe)", True)] \
        + [(f"block {i}", i < k) for i in range(n_layer)] \
        + [("ln_f", False), ("head = wteᵀ" if compact else "head = wteᵀ (tied to the embeddings)", True)]
    for r, (label, shared) in enumerate(rows):
        y = r * (h + 0.2)
        if shared:
            box(0, y, full, label + ("" if r in (0, len(rows) - 1) and compact or r == len(rows) - 1
                                     else shared_note), True)
        else:
            for c, d in enumerate(domains):
                text = (label.replace("block ", "b") if compact else f"{label}\n{d}")
                box(c * (w + gap), y, w, text, False, DOMAIN_COLORS.get(d, f"C{c}"))
    y_cut = (k + 1) * (h + 0.2) - 0.1  # between the last trunk row and the first crown row
    ax.plot([-0.05, full + 0.05], [y_cut, y_cut], color="black", ls="--", lw=1)
    if compact:
        note = "router"
    else:
        note = (f"router reads the trunk output h\n(after block {k - 1})" if k else
                "router reads the embeddings\n(K=0: no frozen block)")
    ax.annotate(note, xy=(full + 0.05, y_cut), xytext=(full + 0.3, y_cut), va="center", fontsize=fs,
                arrowprops=dict(arrowstyle="<-", lw=1))
    ax.set_xlim(-0.1, full + (1.0 if compact else 2.1))
    ax.set_ylim(-0.2, len(rows) * (h + 0.2))
    ax.axis("off")
    title = f"K = {k}" if compact else f"K = {k}: trunk = embeddings + {k} of {n_layer} blocks"
    if counts:
        share = counts["crown (trained)"] / counts["total"]
        pct = f"{share:.1%}" if share < 0.01 else f"{share:.0%}"
        title += (f"\n{pct} trained per crown" if compact else
                  f"\n{counts['trunk (frozen)']:,} frozen · {counts['crown (trained)']:,} trained per crown ({pct})")
    ax.set_title(title, fontsize=9)
    return ax


def plot_delta_vs_base(matrix: pd.DataFrame, ax=None):
    """Grouped bars: base loss minus each specialist's loss per eval domain (> 0: better than base)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 3.2))
    specs = [r for r in matrix.index if r != "base"]
    delta = (matrix.loc["base"] - matrix.loc[specs]).T  # rows = eval domain, cols = specialist
    delta.plot.bar(ax=ax, color=[DOMAIN_COLORS.get(s.split()[0], None) for s in specs], rot=0, width=0.75)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("evaluation domain")
    ax.set_ylabel("base − specialist (nats/token)")
    ax.set_title("Gain over the base (above 0) and loss against it (below 0)")
    ax.legend(fontsize=8)
    return ax


def plot_targets(losses, targets, window_labels, names=("code", "medical", "legal"), temp=None, ax=None):
    """Per window: each specialist's loss (text) and the soft target softmax(-loss/temp) (bars)."""
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(7.0, 3.0))
    losses, targets = np.asarray(losses), np.asarray(targets)
    n_win, n = targets.shape
    width = 0.8 / n
    for j, name in enumerate(names):
        xs = np.arange(n_win) + (j - (n - 1) / 2) * width
        ax.bar(xs, targets[:, j], width, color=DOMAIN_COLORS.get(name, f"C{j}"), alpha=0.8, label=name)
        for x, t, l in zip(xs, targets[:, j], losses[:, j]):
            ax.text(x, t + 0.02, f"{l:.2f}", ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(np.arange(n_win), window_labels, fontsize=8)
    ax.set_ylim(0, 1.45)  # room above the bars for the loss labels and the legend
    ax.set_ylabel("target weight")
    ax.set_title(("performance targets" + (f" at temp = {temp:g}" if temp is not None else ""))
                 + " (numbers: specialist loss)", fontsize=9)
    ax.legend(fontsize=8, ncol=n, loc="upper right")
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
