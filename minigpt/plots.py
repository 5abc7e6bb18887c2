"""Figures the chapters and the CLI share."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .analysis.routing import mean_weights, specialist_names
from .scoring import HEADLINE, ORACLE, SPECIALIST_ROWS


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
    v = np.asarray(values, dtype=float)
    if window <= 1 or v.size < window:
        return np.arange(v.size), v
    kernel = np.ones(window) / window
    return np.arange(window - 1, v.size), np.convolve(v, kernel, mode="valid")


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
        xs, ys = _smooth(losses, w)
        ax.plot(x0 + xs, ys, color=color, lw=2, label=f"{label} (mean of {w} steps)" if w > 1 else label)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def plot_router_histories(histories: Mapping[str, Sequence[float] | None], title: str = "router training loss"):
    """One panel per router (``{label: per-step losses or None}``): the per-step training loss with a
    moving average, each on its own scale (cross-entropy to one-hot labels, to soft performance
    targets and the fused next-token loss have different floors). A router without a kept history
    (cached before histories were stored) gets a note in place of its curve."""
    fig, axes = plt.subplots(1, len(histories), figsize=(3.6 * len(histories) + 0.6, 3.0), squeeze=False)
    for i, (ax, (label, losses)) in enumerate(zip(axes[0], histories.items())):
        if losses:
            plot_loss_curves({label: losses}, ax=ax, title=label)
            ax.get_lines()[0].set_color(f"C{i}")
            ax.get_lines()[1].set_color(f"C{i}")
            ax.get_legend().remove()
            ax.set_ylabel("router training loss")
        else:
            ax.text(0.5, 0.5, "no training history kept:\ncached before histories were stored\n"
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


# -- figures for notebooks 4, 6-8 ------------------------------------------------------------------
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


VERDICT_COLORS = {"worse": "tab:red", "better": "tab:green", "no significant change": "0.6"}


OUTCOME_COLORS = {"held": "tab:red", "reversed": "tab:blue", "inconclusive": "0.5", "mixed": "tab:purple"}


def plot_matched(rows: Sequence[Mapping], title: str = "Different bases against their controls"):
    """Break 1's matched comparison, one panel per metric (units differ): the different set minus its
    matched control (circle) and minus the controls' mean (square), each with its 95 % paired interval,
    coloured by the prediction's outcome; the shaded side of zero is where the chapter's prediction points."""
    fig, axes = plt.subplots(len(rows), 1, figsize=(7.5, 0.9 * len(rows) + 0.6), squeeze=False)
    for ax, r in zip(axes[:, 0], rows):
        color = OUTCOME_COLORS.get(r["outcome"], "black")
        for y, key, marker in ((1, "vs_matched", "o"), (0, "vs_mean_of_controls", "s")):
            iv = r[key]
            ax.errorbar(iv["estimate"], y, xerr=[[iv["estimate"] - iv["low"]], [iv["high"] - iv["estimate"]]],
                        fmt=marker, color=color, capsize=3)
        span = max(abs(r[k][e]) for k in ("vs_matched", "vs_mean_of_controls") for e in ("low", "high")) * 1.3 or 1
        ax.set_xlim(-span, span)
        lo, hi = (0, span) if r["direction"] > 0 else (-span, 0)
        ax.axvspan(lo, hi, color="tab:red", alpha=0.07)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks([0, 1], ["vs mean of controls", "vs matched control"], fontsize=7)
        ax.set_ylim(-0.6, 1.6)
        ax.set_title(f"{r['metric']} ({r['unit']}): {r['outcome']}", fontsize=8, loc="left")
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(title + " (shaded: the side the chapter predicts)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_cka_blocks(representations, keys=None, vmin: float = 0.0):
    """One annotated linear-CKA heatmap per block of Break 1's ``representations``, mean paired cosine in the title."""
    import seaborn as sns

    keys = list(keys or representations)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.1 * len(keys), 2.9), squeeze=False)
    for ax, key in zip(axes[0], keys):
        blk = representations[key]
        m = pd.DataFrame(blk["cka"])
        m = m.loc[list(m.columns), list(m.columns)]
        sns.heatmap(m, annot=True, fmt=".2f", vmin=vmin, vmax=1, cmap="magma", cbar=False, ax=ax,
                    annot_kws={"fontsize": 8})
        ax.set_title(f"{key}\ncosine {blk['mean_paired_cosine']:+.2f}", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


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
        _grid_losses(axes[1, j], rep["per_k"][K], mixed[K], (min(every) - pad, max(every) + pad), j == 0)
        _grid_domain_bars(axes[2, j], axes[3, j], rep["per_k"][K], j == 0)
    # gains share one y axis so bar heights compare across K
    g_all = [v for K in every_k for v in rep["per_k"][K]["own_domain_gain_%"].values()]
    for ax in axes[2]:
        ax.set_ylim(min(0, min(g_all)) * 1.15, max(0, max(g_all)) * 1.15 or 1)
    fig.suptitle(f"Freeze depth K = {ks[0]}..{ks[-1]} · profile {rep['profile']}, seed {rep['seed']}", fontsize=10)
    fig.tight_layout()
    return fig


# -- routing diagnostics -------------------------------------------------------------------------
def _finish(fig, path: Path | str | None) -> None:
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)


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
        _finish(fig, path)
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
        _finish(fig, path)
    return ax


# -- figures moved out of notebooks 5-7 ------------------------------------------------------------
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


# Break 1 (notebook 6)
def _reliability_panel(ax, curves: Mapping[str, pd.DataFrame], title: str, min_count: int) -> None:
    counts = sum(b["count"].to_numpy() for b in curves.values())
    bins = next(iter(curves.values()))
    lim = float(min(1.0, bins["hi"][counts > 0].max()))  # zoom to the occupied bins (small models are unsure)
    hist = ax.twinx()  # the token counts behind the curves, on their own (hidden) scale
    hist.bar(0.5 * (bins["lo"] + bins["hi"]), counts, width=bins["hi"] - bins["lo"], color="0.6", alpha=0.2)
    hist.set_ylim(0, counts.max() * 3.2)
    hist.set_yticks([])
    ax.set_zorder(hist.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.plot([0, lim], [0, lim], color="black", ls="--", lw=1, label="perfect calibration")
    for i, (label, b) in enumerate(curves.items()):
        ok = b["count"] >= min_count
        ax.plot(b.loc[ok, "confidence"], b.loc[ok, "accuracy"], marker="o", ms=3.5, lw=1.5,
                color=DOMAIN_COLORS.get(label.split()[0], f"C{i}"), label=label)
    ax.set(xlim=(0, lim), ylim=(0, lim), xlabel="top-1 confidence (bin mean)",
           title=title + (f" (axes zoomed to 0–{lim:.2f})" if lim < 1 else ""))
    for a in (ax, hist):
        a.set_box_aspect(1)


def plot_reliability(panels: Mapping[str, Mapping[str, pd.DataFrame]], min_count: int = 20):
    """Reliability diagrams, one panel per ``{title: {label: bins}}`` (bins from
    :func:`minigpt.analysis.calibration.reliability_bins`): accuracy against mean confidence per bin
    (bins with at least ``min_count`` tokens), the diagonal of perfect calibration, and each bin's
    token count (all curves of the panel together) as a faint histogram. Below the diagonal =
    overconfident. Both axes stop at the last occupied bin, so the diagonal stays at 45 degrees."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels.items()):
        _reliability_panel(ax, curves, title, min_count)
    axes[0][0].set_ylabel("top-1 accuracy")
    axes[0][-1].legend(fontsize=7, loc="upper left")
    fig.text(0.5, 0.0, f"grey bars: tokens per confidence bin; points: bins with at least {min_count} tokens",
             ha="center", fontsize=7, color="0.4")
    fig.tight_layout()
    return fig


def plot_per_byte(losses: pd.DataFrame, ax=None, xlabel: str = "nats per byte (axis zoomed)"):
    """The tokenizer case's ``per_byte`` column as bars (first row on top); rows naming the
    mismatched specialist in red."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 0.4 * len(losses) + 0.6))
    per_byte = losses["per_byte"].iloc[::-1]
    ax.barh(per_byte.index, per_byte, color=["tab:red" if n.startswith("mismatched") else "0.6" for n in per_byte.index])
    ax.set_xlim(per_byte.min() * 0.95, per_byte.max() * 1.02)
    ax.set_xlabel(xlabel)
    ax.tick_params(axis="y", labelsize=7)
    return ax


# Break 2 (notebook 7)
STATUS_MARKERS = {"healthy": ("o", "tab:green"), "worse": ("s", "tab:olive"), "silent": ("X", "tab:red"),
                  "loud": ("^", "tab:orange")}


def _code_share(point: Mapping) -> float:
    return float(point["domain_mix"][0])


def _collapse_panel(ax, s: Mapping, title: str) -> None:
    """One expert set: each curve point's headline minus the healthy router's (with its interval)
    against the weight its dominant expert takes on other domains' windows; the band shaded."""
    band, h = s["band"], s["healthy_mixed"]
    ax.axhspan(band["low"] - h, band["high"] - h, color="tab:purple", alpha=0.15, label="band: router seeds, ±2 sd")
    for temp in sorted({p["temp"] for p in s["points"].values()}, reverse=True):
        pts = sorted((p for p in s["points"].values() if p["temp"] == temp), key=_code_share)
        x = [p["dominant_weight_elsewhere"] for p in pts]
        y = [p["vs_healthy_nats"]["estimate"] for p in pts]
        err = [[p["vs_healthy_nats"]["estimate"] - p["vs_healthy_nats"]["low"] for p in pts],
               [p["vs_healthy_nats"]["high"] - p["vs_healthy_nats"]["estimate"] for p in pts]]
        ax.errorbar(x, y, yerr=err, color="0.35", ls="-" if temp == max(q["temp"] for q in s["points"].values()) else "--",
                    lw=1, capsize=2, zorder=2, label=f"target temperature {temp:g}")
        for p in pts:
            marker, color = STATUS_MARKERS[p["status"]]
            ax.scatter(p["dominant_weight_elsewhere"], p["vs_healthy_nats"]["estimate"], marker=marker, color=color,
                       s=60, zorder=3, edgecolor="black", linewidth=0.5)
            ax.annotate(f"{_code_share(p):.0%}", (p["dominant_weight_elsewhere"], p["vs_healthy_nats"]["estimate"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=6)
    ax.axvline(0.5, color="black", ls=":", lw=0.8)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlim(0, 1)
    ax.set_xlabel("dominant expert's mean weight on other domains' text")
    ax.set_title(title, fontsize=9)


def plot_collapse_curve(rep: dict):
    """Break 2's collapse curve, one panel per expert set: the headline against routing as the router's
    training data tilts toward code (labels: code share). Marker = status (healthy, worse, silent,
    loud); the shaded band is what retraining the healthy router alone moves."""
    sets = rep["sets"]
    fig, axes = plt.subplots(1, len(sets), figsize=(5.6 * len(sets), 3.8), squeeze=False, sharey=False)
    for ax, (name, s) in zip(axes[0], sets.items()):
        _collapse_panel(ax, s, f"{name}: {s['experts'][0]} in the code slot")
    axes[0, 0].set_ylabel("headline minus healthy router (nats)")
    for st, (marker, color) in STATUS_MARKERS.items():
        axes[0, -1].scatter([], [], marker=marker, color=color, edgecolor="black", linewidth=0.5, label=st)
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def plot_collapse_routing(s: Mapping, temp: float):
    """One expert set at one target temperature: each domain's routing accuracy along the code share of
    the router's training data, and the dominant expert's weight elsewhere."""
    pts = sorted((p for p in s["points"].values() if p["temp"] == temp), key=_code_share)
    x = [_code_share(p) for p in pts]
    fig, ax = plt.subplots(figsize=(6.2, 3.0))
    for d in pts[0]["routing_accuracy"]:
        ax.plot(x, [p["routing_accuracy"][d] for p in pts], marker="o", color=DOMAIN_COLORS.get(d), label=f"{d} routing")
    ax.plot(x, [p["dominant_weight_elsewhere"] for p in pts], marker="s", color="black", ls="--",
            label="dominant expert's weight elsewhere")
    ax.set_ylim(0, 1.03)
    ax.set_xlabel("code share of the router's training windows")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def _annotated_heatmap(ax, frame: pd.DataFrame, fmt: str, cmap: str, vmin=None, vmax=None):
    """``frame`` as an image with each value written in its cell (format spec ``fmt``)."""
    vals = frame.to_numpy(dtype=float)
    im = ax.imshow(vals, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    lo, hi = im.get_clim()
    for i in range(vals.shape[0]):
        for j in range(vals.shape[1]):
            dark = (vals[i, j] - lo) / ((hi - lo) or 1) > 0.6 if np.isfinite(vals[i, j]) else False
            ax.text(j, i, format(vals[i, j], fmt), ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    ax.set_xticks(range(vals.shape[1]), list(frame.columns), fontsize=8)
    ax.set_yticks(range(vals.shape[0]), list(frame.index), fontsize=8)
    return im


def plot_mean_weight_heatmaps(weights: Mapping[str, Mapping[str, torch.Tensor]]):
    """One heatmap per router (``{router: {domain: (n, T, N) weights}}``): mean weight each
    specialist (columns) gets on each domain's text (rows)."""
    fig, axes = plt.subplots(1, len(weights), figsize=(3.4 * len(weights), 2.8), squeeze=False)
    for j, (ax, (name, w)) in enumerate(zip(axes[0], weights.items())):
        mw = mean_weights(w).rename(columns=lambda c: c.split()[0])
        _annotated_heatmap(ax, mw, ".2f", "Blues", 0, 1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("weight on")
        if j:
            ax.set_yticks([])
    axes[0, 0].set_ylabel("text")
    fig.tight_layout()
    return fig


# -- generation (notebook 4) -------------------------------------------------------------------------
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


# the per-token router with document memory (notebook 5)
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
