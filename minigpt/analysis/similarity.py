"""Representation similarity: do two models hold the same information, in the same coordinates?

:func:`linear_cka` compares two sets of activations of the same inputs (Kornblith et al., 2019):
1 for identical representations, unchanged by rotations and by a global scale, near 0 for
unrelated ones. It tells whether two models hold the same information up to a rotation; it does
not tell whether their coordinates line up, which is what averaging weights or mixing hidden
states needs: :func:`paired_cosine` does.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import torch

from ..evaluate import table_json


def linear_cka(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Linear CKA between (n, d1) and (n, d2) activations of the same n inputs.

    ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with column-centred X, Y (float64).
    """
    x = torch.as_tensor(x).detach().double().reshape(-1, torch.as_tensor(x).shape[-1])
    y = torch.as_tensor(y).detach().double().reshape(-1, torch.as_tensor(y).shape[-1])
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs activations of the same inputs: got {x.shape[0]} and {y.shape[0]} rows")
    if x.shape[0] < 2:
        raise ValueError("CKA needs at least 2 inputs")
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    denom = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    if denom == 0:
        raise ValueError("CKA is undefined for a constant representation (zero variance)")
    return float(torch.linalg.matrix_norm(y.T @ x) ** 2 / denom)


def paired_cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cosine between row i of x and row i of y: do the raw coordinates agree, token by token?

    Unlike CKA this is not invariant to rotations: two models that hold the same information in
    rotated coordinates score high CKA but a paired cosine near 0.
    """
    x, y = torch.as_tensor(x).double(), torch.as_tensor(y).double()
    if x.shape != y.shape:
        raise ValueError(f"paired cosine needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    return float(torch.nn.functional.cosine_similarity(x, y, dim=-1).mean())


def cka_matrix(acts: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """Pairwise linear CKA between named (n, d) activations of the same inputs."""
    names = list(acts)
    m = pd.DataFrame(1.0, index=names, columns=names)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            m.loc[a, b] = m.loc[b, a] = linear_cka(acts[a], acts[b])
    return m


def mean_off_diagonal(m: pd.DataFrame) -> float:
    v = m.values
    mask = ~np.eye(len(v), dtype=bool)
    return float(v[mask].mean()) if mask.any() else float("nan")


def cka_block(acts: Mapping[str, torch.Tensor]) -> dict:
    """Pairwise CKA and paired cosine of named activations (any shape ending in the channel dim)."""
    flat = {k: v.reshape(-1, v.shape[-1]) for k, v in acts.items()}
    m = cka_matrix(flat)
    names = list(flat)
    cos = {f"{a} | {b}": paired_cosine(flat[a], flat[b]) for i, a in enumerate(names) for b in names[i + 1:]}
    return {"cka": table_json(m), "mean_cka": mean_off_diagonal(m), "paired_cosine": cos,
            "mean_paired_cosine": float(np.mean(list(cos.values()))) if cos else float("nan")}

