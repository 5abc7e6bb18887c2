"""Calibration of a next-token distribution: is a model as sure as it is right?

Expected calibration error of the top-1 prediction, mean max-probability, top-1 accuracy and the
logit scale (std of the logits over the vocabulary), from the per-token statistics that
:func:`minigpt.scoring.score` keeps when asked (``calibration=True``), and the points of a
reliability diagram (:func:`reliability_bins`).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import torch

from ..scoring import calibration_stats


def _bin_index(conf: torch.Tensor, n_bins: int) -> torch.Tensor:
    """The equal-width bin (lo, hi] of each confidence, 0..n_bins-1 (a confidence of 0 joins the first)."""
    return (conf * n_bins).ceil().long().clamp(1, n_bins) - 1


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = 15) -> float:
    """ECE = sum over equal-width confidence bins (lo, hi] of (bin share) x |accuracy - mean confidence|."""
    conf = confidence.double().flatten()
    corr = correct.double().flatten()
    if conf.numel() == 0:
        raise ValueError("no predictions to calibrate; pass at least one token")
    idx = _bin_index(conf, n_bins)
    sum_conf = conf.new_zeros(n_bins).index_add_(0, idx, conf)
    sum_corr = conf.new_zeros(n_bins).index_add_(0, idx, corr)
    return float((sum_conf - sum_corr).abs().sum() / conf.numel())  # |B|/n * |acc - conf| = |Σconf - Σcorr|/n


def calibration_from_stats(stats: Mapping[str, torch.Tensor], n_bins: int = 15) -> dict[str, float]:
    return {"ece": expected_calibration_error(stats["confidence"], stats["correct"], n_bins),
            "mean_max_prob": float(stats["confidence"].double().mean()),
            "accuracy": float(stats["correct"].double().mean()),
            "logit_scale": float(stats["logit_std"].double().mean()),
            "n_tokens": int(stats["confidence"].numel())}


def calibration(logits: torch.Tensor, targets: torch.Tensor, n_bins: int = 15) -> dict[str, float]:
    """ECE (top-1, ``n_bins`` bins), mean max-probability, top-1 accuracy and logit scale."""
    return calibration_from_stats(calibration_stats(logits, targets), n_bins)


def merge_stats(per_domain: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One row's statistics ``{domain: stats}`` (as :class:`minigpt.scoring.Scores` keeps them) over all domains."""
    parts = list(per_domain.values())
    return {key: torch.cat([s[key].flatten() for s in parts]) for key in parts[0]}


def reliability_bins(stats: Mapping, n_bins: int = 15) -> pd.DataFrame:
    """The points of a reliability diagram: per equal-width confidence bin (lo, hi], the mean top-1
    confidence, the top-1 accuracy and the number of tokens (NaN for an empty bin).

    ``stats`` is one row's statistics, either flat (``confidence``, ``correct``) or per domain
    (merged with :func:`merge_stats`). The bins are those of :func:`expected_calibration_error`,
    so ECE = sum over bins of count / total x |accuracy - confidence|.
    """
    if "confidence" not in stats:
        stats = merge_stats(stats)
    conf, corr = stats["confidence"].double().flatten(), stats["correct"].double().flatten()
    if conf.numel() == 0:
        raise ValueError("no predictions to bin; pass at least one token")
    idx = _bin_index(conf, n_bins)
    count = torch.bincount(idx, minlength=n_bins).double()
    sums = [conf.new_zeros(n_bins).index_add_(0, idx, v) for v in (conf, corr)]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf, acc = ((s / count).numpy() for s in sums)
    edges = np.linspace(0, 1, n_bins + 1)
    return pd.DataFrame({"lo": edges[:-1], "hi": edges[1:], "confidence": mean_conf, "accuracy": acc,
                         "count": count.long().numpy()}).rename_axis("bin")
