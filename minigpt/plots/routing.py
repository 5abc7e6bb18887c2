"""Figures of routing: confusion, gate weights, routing on hybrid text and on generated text."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ..analysis.routing import mean_weights, specialist_names
from .style import DOMAIN_COLORS, annotated_heatmap, finish


def plot_hybrid_routing(weights, labels, names=("code", "medical", "legal"), title: str | None = None):
    """One per-token routing heatmap per router for one window, true domain switches marked.

    ``weights`` = {router: (T, N)}, ``labels`` (T,) = true domain index of each target token.
    Dashed lines sit between the last token of one segment and the first of the next.
    """
    fig, axes = plt.subplots(len(weights), 1, figsize=(9, 1.9 * len(weights) + 0.4), sharex=True, squeeze=False)
    switches = [t for t in range(1, len(labels)) if int(labels[t]) != int(labels[t - 1])]
    for ax, (name, w) in zip(axes[:, 0], weights.items()):
        plot_token_routing(w, labels, names=[f"{n} specialist" for n in names], ax=ax, title=f"{name} router")
        for t in switches:
            ax.axvline(t - 0.5, color="red", ls="--", lw=1.2)
        if ax is not axes[-1, 0]:
            ax.set_xlabel("")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_gate_grid(hists, names=None):
    """Gate-weight histograms for several routers: rows = routers, columns = eval domains.

    ``hists`` = {router name: :func:`minigpt.analysis.routing.gate_histograms` result}.
    """
    rows = list(hists)
    domains = list(next(iter(hists.values()))["counts"])
    fig, axes = plt.subplots(len(rows), len(domains), figsize=(3.3 * len(domains), 1.9 * len(rows) + 0.4),
                             sharex=True, sharey=True, squeeze=False)
    for i, row in enumerate(rows):
        edges = np.asarray(hists[row]["edges"])
        for j, domain in enumerate(domains):
            ax = axes[i, j]
            for name, counts in hists[row]["counts"][domain].items():
                c = np.asarray(counts, dtype=float)
                ax.stairs(c / max(c.sum(), 1), edges, color=DOMAIN_COLORS.get(name.split()[0]), lw=1.5,
                          label=name.replace(" specialist", ""))
            if i == 0:
                ax.set_title(f"{domain} text")
            if j == 0:
                ax.set_ylabel(f"{row}\nshare of tokens", fontsize=8)
            if i == len(rows) - 1:
                ax.set_xlabel("routing weight")
    axes[0, -1].legend(fontsize=7, title="weight on", title_fontsize=7)
    fig.tight_layout()
    return fig


def plot_confusion(cm: pd.DataFrame, ax=None, path: Path | str | None = None, title: str = "Where each domain is routed"):
    """Heatmap of a row-normalised confusion matrix (diagonal = routing accuracy)."""
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
        finish(fig, path)
    return ax


def plot_token_routing(weights: torch.Tensor, labels: torch.Tensor | None = None, names: Sequence[str] | None = None,
                       ax=None, path: Path | str | None = None, title: str = "Per-token routing weights"):
    """Heatmap of one window's (T, N) weights; ``labels`` (T,) draws the true domain of each token."""
    w = weights.detach().double().cpu().numpy()
    if w.ndim == 1:  # a per-sequence router: the same weights at every position
        w = w[None, :]
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 2.4))
    ax.imshow(w.T, aspect="auto", vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(w.shape[1]), [n.replace(" specialist", "") for n in specialist_names(w.shape[1], names)])
    if labels is not None:  # true domain as white dots on the row of its specialist
        lab = labels.detach().cpu().numpy()
        ax.scatter(np.arange(len(lab)), lab, s=4, c="white", marker="s", label="true domain")
        ax.legend(loc="upper right", fontsize=7)
    ax.set_xlabel("position in window")
    ax.set_title(title)
    if fig is not None:
        finish(fig, path)
    return ax


def plot_mean_weight_heatmaps(weights: Mapping[str, Mapping[str, torch.Tensor]]):
    """One heatmap per router (``{router: {domain: (n, T, N) weights}}``): mean weight each
    specialist (columns) gets on each domain's text (rows)."""
    fig, axes = plt.subplots(1, len(weights), figsize=(3.4 * len(weights), 2.8), squeeze=False)
    for j, (ax, (name, w)) in enumerate(zip(axes[0], weights.items())):
        mw = mean_weights(w).rename(columns=lambda c: c.split()[0])
        annotated_heatmap(ax, mw, ".2f", cmap="Blues", vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("weight on")
        if j:
            ax.set_yticks([])
    axes[0, 0].set_ylabel("text")
    fig.tight_layout()
    return fig


def _weight_color(w: Sequence[float], names: Sequence[str]) -> tuple[float, float, float]:
    """The domain colours of :data:`DOMAIN_COLORS` mixed by ``w``, lightened so black text stays readable."""
    rgb = sum(float(x) * np.array(mcolors.to_rgb(DOMAIN_COLORS.get(n, "0.5"))) for x, n in zip(w, names))
    return tuple(0.75 * rgb + 0.25)


def _visible(piece: str) -> str:
    return piece.replace("\n", "↵").replace("\t", "⇥").replace("\r", "")


def _layout(rows, width: int) -> list[tuple[int, int, str, object]]:
    """(line, column, text, weights or None for prompt text / "title") for every piece, wrapped at ``width``."""
    out, line = [], 0
    for title, prompt, generated, weights in rows:
        out.append((line, 0, title, "title"))
        line, col = line + 1, 0
        for text, w in [(p, None) for p in prompt] + list(zip(generated, weights)):
            text = _visible(text)[:width]
            if col + len(text) > width:
                line, col = line + 1, 0
            out.append((line, col, text, w))
            col += len(text)
        line += 2
    return out


def plot_routed_text(rows, names: Sequence[str], width: int = 96, fig_width: float = 11.0):
    """Generated text coloured by the router: ``rows`` = [(title, prompt pieces, generated pieces,
    weights (new, N))]. Prompt tokens are grey; each generated token's background mixes the domain
    colours by the weights that chose it (pure blue = all code, red = medical, green = legal), with
    a thin white seam between tokens. Newlines show as ↵, tabs as ⇥. A monospace layout: one
    character per unit of the x axis."""
    char_in = fig_width / width
    fontsize = char_in * 72 / 0.61  # a monospace advance is ~0.6 em
    items = _layout(rows, width)
    n_lines = max(i[0] for i in items) + 2
    fig = plt.figure(figsize=(fig_width, n_lines * char_in * 2.0 + 0.3))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set(xlim=(0, width), ylim=(n_lines, -1.2))
    ax.axis("off")
    for line, col, text, w in items:
        if isinstance(w, str):
            ax.text(col, line + 0.5, text, va="center", fontsize=fontsize * 0.9, weight="bold")
            continue
        if w is not None:
            # a hair narrower than the token, so a white seam marks where each token ends
            ax.add_patch(plt.Rectangle((col, line + 0.08), len(text) - 0.12, 0.84, color=_weight_color(w, names), lw=0))
        ax.text(col, line + 0.5, text, va="center", fontsize=fontsize, family="monospace",
                color="0.55" if w is None else "black")
    for i, n in enumerate(names):
        x = i * width / (len(names) + 1.5)
        ax.add_patch(plt.Rectangle((x, -1.0), 2, 0.8, color=_weight_color(np.eye(len(names))[i], names), lw=0))
        ax.text(x + 2.5, -0.6, f"all weight on {n}", va="center", fontsize=fontsize * 0.85)
    ax.text(len(names) * width / (len(names) + 1.5), -0.6, "grey: the prompt", va="center",
            fontsize=fontsize * 0.85, color="0.55")
    return fig


def plot_retrained(rows: Mapping[str, Mapping], panels: Sequence[str] = ("routing", "mixed"), title: str | None = None):
    """Routers side by side, as a slider redraws them: per-domain routing accuracy (``"routing"``), the
    dominant expert's mean weight on the other domains' text (``"elsewhere"``, with the collapse line at
    0.5) and the fused mixed loss (``"mixed"``, axis zoomed). ``rows`` = {label: {"routing_accuracy":
    {domain: share}, "dominant_weight_elsewhere": w, "mixed": loss}}; the first label is the reference
    (grey), the others purple shades."""
    labels = list(rows)
    colors = ["0.55", *plt.cm.Purples(np.linspace(0.85, 0.5, max(len(labels) - 1, 1)))][:len(labels)]
    widths = {"routing": 2.2, "elsewhere": 1.0, "mixed": 1.2}
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels) + 1, 3.4), squeeze=False,
                             gridspec_kw={"width_ratios": [widths[p] for p in panels]})
    for ax, panel in zip(axes[0], panels):
        if panel == "routing":
            acc = pd.DataFrame({lab: rows[lab]["routing_accuracy"] for lab in labels})
            acc.plot.bar(ax=ax, rot=0, color=colors, legend=True)
            ax.axhline(1 / len(acc), color="black", ls=":", lw=1)
            ax.set_ylim(0, 1.05)
            ax.set_ylabel("routing accuracy (dotted: chance)", fontsize=8)
            ax.legend(fontsize=7)
        else:
            key = "dominant_weight_elsewhere" if panel == "elsewhere" else "mixed"
            vals = [rows[lab][key] for lab in labels]
            ax.bar(range(len(vals)), vals, color=colors)
            ax.set_xticks(range(len(vals)), labels, rotation=20, ha="right", fontsize=7)
            if panel == "elsewhere":
                ax.axhline(0.5, color="tab:red", ls="--", lw=1)
                ax.set_ylim(0, 1.05)
                ax.set_ylabel("dominant expert's weight\non the other domains' text", fontsize=8)
            else:
                lo, hi = min(vals), max(vals)
                pad = (hi - lo) * 0.6 + 1e-3
                ax.set_ylim(lo - pad, hi + pad)
                ax.set_ylabel("fused mixed loss (axis zoomed)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.92 if title and "\n" in title else 0.96))
    return fig


def plot_token_losses(token_nll: torch.Tensor, labels: torch.Tensor, names=("code", "medical", "legal"),
                      smooth: int = 5, title: str | None = None):
    """Each specialist's token loss along one window (a ``smooth``-token moving average), true domain
    switches marked. ``token_nll`` (N, T), ``labels`` (T,) = true domain index of each target token."""
    fig, ax = plt.subplots(figsize=(9, 2.4))
    for j, d in enumerate(names):
        line = pd.Series(token_nll[j].numpy()).rolling(smooth, center=True, min_periods=1).mean()
        ax.plot(line, color=DOMAIN_COLORS.get(d, f"C{j}"), label=f"{d} specialist")
    for t in range(1, len(labels)):
        if int(labels[t]) != int(labels[t - 1]):
            ax.axvline(t - 0.5, color="red", ls="--", lw=1.2)
    ax.set(xlabel="position in window", ylabel=f"token loss ({smooth}-token average)")
    ax.legend(fontsize=8, ncol=len(names))
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
