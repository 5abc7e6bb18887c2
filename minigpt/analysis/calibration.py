"""Calibration of a next-token distribution: is a model as sure as it is right?

Expected calibration error of the top-1 prediction, mean max-probability, top-1 accuracy and the
logit scale (std of the logits over the vocabulary), from the per-token statistics that
:func:`minigpt.scoring.score` keeps when asked (``calibration=True``).
"""
from __future__ import annotations

from typing import Mapping

import torch

from ..scoring import calibration_stats


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = 15) -> float:
    """ECE = sum over equal-width confidence bins (lo, hi] of (bin share) x |accuracy - mean confidence|."""
    conf = confidence.double().flatten()
    corr = correct.double().flatten()
    if conf.numel() == 0:
        raise ValueError("no predictions to calibrate; pass at least one token")
    idx = (conf * n_bins).ceil().long().clamp(1, n_bins) - 1
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
