"""Figures of training: loss curves (base seeds, specialists, routers), the trunk/crown cut, targets."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import DOMAIN_COLORS, FROZEN_COLOR, moving_average


def plot_loss_curves(curves, ax=None, smooth: int | None = None, offsets=None, title: str = "training loss"):
    """Per-step training losses (faint) with a moving average on top; ``curves`` = {label: losses}.

    ``offsets`` = {label: first step} places a curve later on the x axis (a specialist after its base).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.4))
    for i, (label, losses) in enumerate(curves.items()):
        color = DOMAIN_COLORS.get(label.split()[0], f"C{i}" if label.split()[0] != "base" else "0.3")
        x0 = (offsets or {}).get(label, 0)
        w = smooth or max(1, len(losses) // 15)
        ax.plot(x0 + np.arange(len(losses)), losses, color=color, alpha=0.25, lw=0.8)
        xs, ys = moving_average(losses, w)
        ax.plot(x0 + xs, ys, color=color, lw=2, label=f"{label} (mean of {w} steps)" if w > 1 else label)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def plot_seed_curves(rep: Mapping, warmups: Sequence[int]):
    """The base's training loss for every seed (means of ``curve_every`` steps), one panel per warmup of
    ``warmups`` from a ``base_schedule.json``: whether the seeds of one configuration end at one loss."""
    by = {c["warmup"]: c for c in rep["candidates"]}
    fig, axes = plt.subplots(1, len(warmups), figsize=(5.2 * len(warmups), 3.2), sharey=True, squeeze=False)
    for ax, w in zip(axes[0], warmups):
        c = by[w]
        for i, (seed, r) in enumerate(c["seeds"].items()):
            steps = np.arange(len(r["curve"])) * rep["curve_every"]
            ax.plot(steps, r["curve"], lw=1.2, color=f"C{i}", label=f"seed {seed}: dev {r['dev_mixed']:.3f}")
        ax.set_title(f"warmup {w} steps: dev {c['dev_mean']:.3f} ± {c['dev_sd']:.3f}", fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        last = min(min(r["curve"][-10:]) for r in c["seeds"].values())
        ax.set_ylim(last - 0.2, last + 1.6)
    axes[0, 0].set_ylabel("training loss (nats/token)")
    fig.tight_layout()
    return fig


def plot_router_histories(histories: Mapping[str, Sequence[float] | None], title: str = "router training loss"):
    """One panel per router (``{label: per-step losses or None}``): the per-step training loss with a
    moving average, each on its own scale (cross-entropy to one-hot labels, to soft performance
    targets and the fused next-token loss have different floors). A router whose cache entry holds no
    history gets a note in place of its curve."""
    fig, axes = plt.subplots(1, len(histories), figsize=(3.6 * len(histories) + 0.6, 3.0), squeeze=False)
    for i, (ax, (label, losses)) in enumerate(zip(axes[0], histories.items())):
        if losses:
            plot_loss_curves({label: losses}, ax=ax, title=label)
            ax.get_lines()[0].set_color(f"C{i}")
            ax.get_lines()[1].set_color(f"C{i}")
            ax.get_legend().remove()
            ax.set_ylabel("router training loss")
        else:
            ax.text(0.5, 0.5, "no training history in its cache entry\n"
                    "(delete its cache entry to retrain it)", ha="center", va="center", fontsize=8,
                    transform=ax.transAxes, color="0.35")
            ax.set(title=label, xticks=[], yticks=[])
        if i:
            ax.set_ylabel("")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_trunk_crown(n_layer: int, k: int, domains=("code", "medical", "legal"), ax=None, counts=None,
                     compact: bool = False):
    """Block diagram of one shared frozen trunk (embeddings + blocks < K) and a crown per domain.

    Frozen parts are grey and hatched; the tied head is drawn frozen and shared because it is the
    embedding matrix. ``counts`` (from ``minigpt.analysis.crowns.param_counts``) goes into the title.
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
            box(0, y, full, label=label + ("" if r in (0, len(rows) - 1) and compact or r == len(rows) - 1
                                     else shared_note), frozen=True)
        else:
            for c, d in enumerate(domains):
                text = (label.replace("block ", "b") if compact else f"{label}\n{d}")
                box(c * (w + gap), y, w, label=text, frozen=False, color=DOMAIN_COLORS.get(d, f"C{c}"))
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
