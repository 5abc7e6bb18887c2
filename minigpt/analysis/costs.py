"""What each row of the chapter's table costs: parameters, inference compute, and the data it needed.

Fusion is not free. Serving it runs the trunk once and every crown, so its compute per token is
``K·block + N·(L − K)·block + head`` against ``L·block + head`` for one model (the router, one
``C × N`` matrix, is negligible; logit fusion needs one head because the head is tied to the frozen
embedding, see ``minigpt.stacked``). What it buys is on the data side: no domain's text ever leaves
its specialist's trainer, and the specialists train independently. The monolithic baseline spends
the same training compute but needs every domain's text in one place.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from ..config import DOMAINS, GPTConfig
from ..model import GPT
from ..rows import Row

DATA = {
    "base": "pretrain text (all domains pooled)",
    "specialist": "base + its own domain's text",
    "monolithic": "base + every domain's text pooled in one place",
    "separate": "base + each domain's text, kept apart",
    "routed": "base + each domain's text, kept apart + a small mixed router set",
    "oracle": "the targets themselves (a reference, not a model)",
}


def forward_flops(cfg: GPTConfig) -> tuple[float, float]:
    """Forward FLOPs per token of one block and of the head at full context (2 per multiply-add)."""
    C, T = cfg.n_embd, cfg.block_size
    block = 2 * 12 * C * C + 2 * 2 * C * (T + 1) / 2  # qkv, proj, two MLP matmuls; q·k and att·v (causal)
    return block, 2 * C * cfg.vocab_size


def fused_flops_ratio(cfg: GPTConfig, k: int, n: int, heads: int = 1) -> float:
    """Inference compute of trunk-once fusion of ``n`` crowns relative to one model (per token)."""
    block, head = forward_flops(cfg)
    L = cfg.n_layer
    return (k * block + n * (L - k) * block + heads * head) / (L * block + head)


# the chapter's whole-model rows, by the name the chapter gives them: what their training needed
MODEL_DATA = {"base": "base", "monolithic": "monolithic", "weight average": "separate"}


def _data_kind(row: Row) -> str:
    if row.kind in ("fused", "dispatch"):
        return "routed"
    if row.kind == "uniform":
        return "separate"
    if row.kind in ("oracle", "specialist"):
        return row.kind
    return MODEL_DATA.get(row.name, "other")


def row_costs(rows: Sequence[Row], model: GPT, k: int, n_router_params: int = 0) -> pd.DataFrame:
    """Rows -> total parameters served, parameters trained after the base, inference compute
    relative to one model (formula of :func:`fused_flops_ratio`), and the data each row needed."""
    n, cfg = len(DOMAINS), model.config
    total, crown = model.num_params(), sum(p.numel() for p in model.crown_parameters(k).values())
    all_crowns = total + (n - 1) * crown  # one trunk (and tied head), N crowns
    out = {}
    for row in rows:
        if row.kind in ("fused", "dispatch", "uniform"):
            single = row.kind == "dispatch"  # one crown runs, after the whole window is read
            heads = n if row.rule == "probs" else 1
            router = n_router_params if row.kind != "uniform" else 0
            cost = {"total params": (total if single else all_crowns) + router, "trained params": n * crown + router,
                    "inference vs one model": 1.0 if single else fused_flops_ratio(cfg, k, n, heads)}
        elif row.kind == "oracle":
            cost = {"total params": all_crowns, "trained params": n * crown,
                    "inference vs one model": fused_flops_ratio(cfg, k, n, n)}
        else:
            cost = {"total params": total, "trained params": {"base": total, "weight average": n * crown}.get(row.name, crown),
                    "inference vs one model": 1.0}
        out[row.name] = {**cost, "data needed": DATA.get(_data_kind(row), "")}
    return pd.DataFrame(out).T.rename_axis("row")
