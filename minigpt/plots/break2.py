"""Figures of Break 2: the collapse curve and routing along it."""
from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt

from .style import DOMAIN_COLORS, STATUS_MARKERS


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
