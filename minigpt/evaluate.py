"""The evaluation harness (Chapter 32, Steps 6-8): every model scored on the same held-out windows.

Protocol (DESIGN.md §6): fixed non-overlapping held-out windows per domain, one batch size for
every model, mean token loss per domain, "mixed" = equal-weight mean of the domain losses.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import DOMAINS
from .fusion import fuse_logits, fuse_probs, hard_weights, uniform_weights
from .model import GPT, token_nll_from_logprobs

SPECIALIST_ROWS = tuple(f"{d} specialist" for d in DOMAINS)
HEADLINE = "fused soft (per-token router)"
ORACLE = "oracle (per sequence)"


def _nll(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return token_nll_from_logprobs(F.log_softmax(logits.float(), dim=-1), y)


@torch.no_grad()
def collect(eval_sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]], base: GPT,
            specialists: Sequence[GPT], k: int, routers: Mapping[str, nn.Module],
            extra_models: Mapping[str, GPT] | None = None, batch_size: int = 16):
    """Score every row on every domain's held-out windows.

    Returns ``nll[row][domain]`` -> (n, T) token losses and ``weights[router][domain]`` ->
    (n, T, N) routing weights (a per-sequence router's weights repeated over T).
    """
    rows: dict[str, dict[str, list[torch.Tensor]]] = {}
    weights: dict[str, dict[str, list[torch.Tensor]]] = {r: {} for r in routers}

    def add(row: str, domain: str, value: torch.Tensor) -> None:
        rows.setdefault(row, {}).setdefault(domain, []).append(value)

    n = len(specialists)
    for domain, (x_all, y_all) in eval_sets.items():
        for i in range(0, x_all.shape[0], batch_size):
            x, y = x_all[i:i + batch_size], y_all[i:i + batch_size]
            add("base", domain, _nll(base(x)[0], y))
            for name, model in (extra_models or {}).items():
                add(name, domain, _nll(model(x)[0], y))
            h = specialists[0].trunk(x, k)  # shared trunk: computed once
            logits = torch.stack([m.crown(h, k) for m in specialists])  # (N, B, T, V)
            spec = torch.stack([_nll(l, y) for l in logits])  # (N, B, T)
            for j, name in enumerate(SPECIALIST_ROWS[:n]):
                add(name, domain, spec[j])
            add("uniform mix", domain, _nll(fuse_logits(uniform_weights(x.shape[0], n), logits), y))
            for rname, router in routers.items():
                w = router(h)
                add(f"fused soft ({rname} router)", domain, _nll(fuse_logits(w, logits), y))
                if w.dim() == 3:
                    add(f"fused hard ({rname} router)", domain, _nll(fuse_logits(hard_weights(w), logits), y))
                    add(f"fused probs ({rname} router)", domain,
                        token_nll_from_logprobs(fuse_probs(w, logits), y))
                else:  # one specialist per sequence, the others never run
                    add(f"single dispatch ({rname} router)", domain,
                        _nll(fuse_logits(hard_weights(w), logits), y))
                    w = w.unsqueeze(1).expand(-1, x.shape[1], -1)
                weights[rname].setdefault(domain, []).append(w)
            best = spec.mean(-1).argmin(0)  # (B,): best specialist per window, chosen with hindsight
            add(ORACLE, domain, spec.gather(0, best.view(1, -1, 1).expand(1, *spec.shape[1:]))[0])
            add("oracle (per token)", domain, spec.min(0).values)
    cat = lambda d: {k2: torch.cat(v) for k2, v in d.items()}  # noqa: E731
    return {r: cat(d) for r, d in rows.items()}, {r: cat(d) for r, d in weights.items()}


def loss_table(nll: Mapping[str, Mapping[str, torch.Tensor]]) -> pd.DataFrame:
    """Rows x (domains, mixed, Δ% vs best specialist, Δ% vs base). Positive Δ% = better."""
    table = pd.DataFrame({row: {d: float(v.mean()) for d, v in per.items()} for row, per in nll.items()}).T
    table = table[[d for d in DOMAINS if d in table.columns]]
    table["mixed"] = table.mean(axis=1)
    specs = [r for r in SPECIALIST_ROWS if r in table.index]
    best = table.loc[specs, "mixed"].min()
    table["Δ% vs best specialist"] = (best - table["mixed"]) / best * 100
    table["Δ% vs base"] = (table.loc["base", "mixed"] - table["mixed"]) / table.loc["base", "mixed"] * 100
    return table


def routing_accuracy(weights: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Share of tokens whose argmax specialist is the window's own domain, per domain."""
    return {d: float((w.argmax(-1) == DOMAINS.index(d)).float().mean()) for d, w in weights.items()}


def cross_domain_matrix(nll: Mapping[str, Mapping[str, torch.Tensor]]) -> pd.DataFrame:
    """(base + specialists) x eval domains mean loss: the diagonal should be the column minimum."""
    rows = ["base"] + [r for r in SPECIALIST_ROWS if r in nll]
    return pd.DataFrame({r: {d: float(nll[r][d].mean()) for d in DOMAINS} for r in rows}).T


def litmus(table: pd.DataFrame, fused: str = HEADLINE, oracle: str = ORACLE,
           gap_tolerance: float = 0.05, captured_min: float = 0.75) -> list[dict]:
    """The chapter's Step 8 checklist, each condition evaluated on the measured table."""
    specs = [r for r in SPECIALIST_ROWS if r in table.index]
    doms = [d for d in DOMAINS if d in table.columns]
    own = {r: r.split()[0] for r in specs}
    mixed = table["mixed"]
    gap = mixed[fused] - mixed[oracle]
    # an absolute gap alone flatters tiny models whose oracle has little room to begin with
    room = mixed[specs].min() - mixed[oracle]
    captured = (mixed[specs].min() - mixed[fused]) / room if room > 0 else float("nan")
    checks = [
        ("every specialist has the lowest loss on its own domain",
         all(table.loc[specs, own[r]].idxmin() == r for r in specs),
         ", ".join(f"{own[r]}: {table.loc[r, own[r]]:.3f}" for r in specs)),
        ("every specialist is worse than the base on some other domain",
         all(any(table.loc[r, d] > table.loc["base", d] for d in doms if d != own[r]) for r in specs),
         ", ".join(f"{r}: worst off-domain Δ {max(table.loc[r, d] - table.loc['base', d] for d in doms if d != own[r]):+.3f}" for r in specs)),
        ("the base is beaten by some specialist on every domain",
         all(table.loc[specs, d].min() < table.loc["base", d] for d in doms),
         f"base mixed {mixed['base']:.3f}"),
        ("averaged crowns do no better than the best single specialist",
         mixed["weight average"] >= mixed[specs].min(),
         f"weight average {mixed['weight average']:.3f} vs best specialist {mixed[specs].min():.3f}"),
        ("the fused model has a lower mixed loss than the base", mixed[fused] < mixed["base"],
         f"{mixed[fused]:.3f} vs {mixed['base']:.3f}"),
        ("the fused model has a lower mixed loss than every specialist", mixed[fused] < mixed[specs].min(),
         f"{mixed[fused]:.3f} vs {mixed[specs].min():.3f}"),
        (f"the oracle leads the router only slightly (gap < {gap_tolerance} nats and the "
         f"router captures ≥ {captured_min:.0%} of the oracle's room over the best specialist)",
         gap < gap_tolerance and captured >= captured_min,
         f"gap {gap:+.4f} nats; router captures {captured:.0%} of the room"),
    ]
    return [{"condition": c, "holds": bool(ok), "evidence": ev} for c, ok, ev in checks]


def gap_by_position(nll: Mapping[str, Mapping[str, torch.Tensor]], method: str = HEADLINE,
                    reference: str = ORACLE, edges: Sequence[int] = (0, 8, 32)) -> dict[str, float]:
    """Mixed-loss gap (method − reference, nats) for token positions [edges[i], edges[i+1]) and beyond.

    A causal router knows little about the domain in the first tokens of a window, while the
    per-sequence oracle has seen the whole window: this shows where the gap comes from.
    """
    T = next(iter(nll[method].values())).shape[1]
    bounds = list(edges) + [T]
    out = {}
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        diffs = [float((nll[method][d][:, lo:hi] - nll[reference][d][:, lo:hi]).mean()) for d in nll[method]]
        out[f"{lo}-{hi - 1}"] = sum(diffs) / len(diffs)
    return out
