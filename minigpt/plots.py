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
