"""Figures of Break 1: the matched comparison, CKA between models, reliability diagrams, per-byte losses."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd

from .style import DOMAIN_COLORS, OUTCOME_COLORS


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
