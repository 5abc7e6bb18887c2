"""The figures' shared style: domain colours, outcome colours and markers, small drawing helpers."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


DOMAIN_COLORS = {"code": "tab:blue", "medical": "tab:red", "legal": "tab:green"}


FROZEN_COLOR = "0.82"


OUTCOME_COLORS = {"held": "tab:red", "reversed": "tab:blue", "inconclusive": "0.5", "mixed": "tab:purple"}


STATUS_MARKERS = {"healthy": ("o", "tab:green"), "worse": ("s", "tab:olive"), "silent": ("X", "tab:red"),
                  "loud": ("^", "tab:orange")}


def moving_average(values, window: int):
    v = np.asarray(values, dtype=float)
    if window <= 1 or v.size < window:
        return np.arange(v.size), v
    kernel = np.ones(window) / window
    return np.arange(window - 1, v.size), np.convolve(v, kernel, mode="valid")


def finish(fig, path: Path | str | None) -> None:
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)


def annotated_heatmap(ax, frame: pd.DataFrame, fmt: str, cmap: str, vmin=None, vmax=None):
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
