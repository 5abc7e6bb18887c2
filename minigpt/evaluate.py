"""The chapter's table from scored token losses (Chapter 32, Steps 6-8).

:func:`minigpt.scoring.score` gives every row's token losses on the held-out windows; this module
turns them into the table (mean loss per domain, "mixed" = equal-weight mean of the domain losses,
Δ% against the best specialist and the base), routing accuracy, the specialist x domain matrix,
the gap to the oracle by token position, and the Step 8 checklist. Protocol: docs/design.md,
"Evaluation protocol".
"""
from __future__ import annotations

from typing import Mapping, Sequence

import json

import pandas as pd
import torch

from .config import DOMAINS
from .rows import Row
from .intervals import by_name, format_interval, interval_verdict
from .scoring import HEADLINE, ORACLE, SPECIALIST_ROWS  # noqa: F401  (the row names tables use)


def table_json(table: pd.DataFrame) -> dict:
    """A DataFrame as ``{row: {column: value}}`` with 6 decimals (row and column order kept), for JSON."""
    return json.loads(table.round(6).to_json(orient="index"))


# the references a row is compared with, in the order the columns appear: the chapter's (the best
# specialist), same compute on pooled data (monolithic), what the router adds (uniform mix), the base
REFERENCES = ("best specialist", "monolithic", "uniform mix", "base")


def loss_table(nll: Mapping[str, Mapping[str, torch.Tensor]], domains: Sequence[str] = DOMAINS,
               specialists: Sequence[str] = SPECIALIST_ROWS) -> pd.DataFrame:
    """Rows x (``domains``, mixed, Δ% vs each of :data:`REFERENCES` that was scored). Positive Δ% = better.
    "mixed" is the equal-weight mean over ``domains``; the best specialist is the best of ``specialists``."""
    table = pd.DataFrame({row: {d: float(v.mean()) for d, v in per.items()} for row, per in nll.items()}).T
    table = table[[d for d in domains if d in table.columns]]
    table["mixed"] = table.mean(axis=1)
    specs = [r for r in specialists if r in table.index]
    for ref in REFERENCES:
        if ref == "best specialist" or ref in table.index:
            m = table.loc[specs, "mixed"].min() if ref == "best specialist" else table.loc[ref, "mixed"]
            table[f"Δ% vs {ref}"] = (m - table["mixed"]) / m * 100
    return table


def whole_window_rows(rows: Mapping[str, Row]) -> list[str]:
    """Rows whose weight for a token depends on later tokens or on the targets (a per-sequence router's
    rows, single dispatch, both oracles): references, not models one could deploy."""
    return [name for name, r in rows.items() if r.whole_window]


WHOLE_WINDOW_MARK = " †"
WHOLE_WINDOW_NOTE = "† sees the whole window (later tokens or the targets): a reference, not a deployable model"


def marked(table: pd.DataFrame, rows: Mapping[str, Row]) -> pd.DataFrame:
    """``table`` with the rows that see the whole window marked † (for display; JSON keeps plain names)."""
    whole = set(whole_window_rows(rows))
    return table.rename(index=lambda r: r + WHOLE_WINDOW_MARK if r in whole else r)


def routing_accuracy(weights: Mapping[str, torch.Tensor], order: Sequence[str] = DOMAINS) -> dict[str, float]:
    """Share of tokens whose argmax specialist is the window's own domain, per domain; ``order`` names
    the expert of each router output (the chapter's three, or more when a domain joined later)."""
    return {d: float((w.argmax(-1) == list(order).index(d)).float().mean()) for d, w in weights.items()}


def cross_domain_matrix(nll: Mapping[str, Mapping[str, torch.Tensor]]) -> pd.DataFrame:
    """(base + specialists) x eval domains mean loss: the diagonal should be the column minimum."""
    rows = ["base"] + [r for r in SPECIALIST_ROWS if r in nll]
    return pd.DataFrame({r: {d: float(nll[r][d].mean()) for d in DOMAINS} for r in rows}).T


def litmus(table: pd.DataFrame, intervals: Sequence[Mapping] | None = None, fused: str = HEADLINE,
           oracle: str = ORACLE, gap_tolerance: float = 0.05, captured_min: float = 0.75) -> list[dict]:
    """The chapter's Step 8 checklist, each condition evaluated on the measured table.

    Every check gets a ``verdict``: holds, fails, or (for the claims about the fused model, read off
    the paired ``intervals`` of :func:`minigpt.intervals.comparison_intervals` when given)
    inconclusive when the 95 % interval straddles the line. ``holds`` is ``verdict == "holds"``.
    """
    specs = [r for r in SPECIALIST_ROWS if r in table.index]
    doms = [d for d in DOMAINS if d in table.columns]
    own = {r: r.split()[0] for r in specs}
    mixed = table["mixed"]
    ivs = by_name(intervals or [])
    yes = lambda ok: "holds" if ok else "fails"  # noqa: E731  (a point comparison)
    checks = [
        ("every specialist has the lowest loss on its own domain",
         yes(all(table.loc[specs, own[r]].idxmin() == r for r in specs)),
         ", ".join(f"{own[r]}: {table.loc[r, own[r]]:.3f}" for r in specs)),
        ("every specialist is worse than the base on some other domain",
         yes(all(any(table.loc[r, d] > table.loc["base", d] for d in doms if d != own[r]) for r in specs)),
         ", ".join(f"{r}: worst off-domain Δ {max(table.loc[r, d] - table.loc['base', d] for d in doms if d != own[r]):+.3f}" for r in specs)),
        ("the base is beaten by some specialist on every domain",
         yes(all(table.loc[specs, d].min() < table.loc["base", d] for d in doms)),
         f"base mixed {mixed['base']:.3f}"),
        ("averaged crowns do no better than the best single specialist",
         yes(mixed["weight average"] >= mixed[specs].min()),
         f"weight average {mixed['weight average']:.3f} vs best specialist {mixed[specs].min():.3f}"),
        ("the fused model has a lower mixed loss than the base",
         *_beats(ivs.get("vs base"), mixed[fused] < mixed["base"], f"{mixed[fused]:.3f} vs {mixed['base']:.3f}")),
        ("the fused model has a lower mixed loss than every specialist",
         *_beats(ivs.get("vs best specialist"), mixed[fused] < mixed[specs].min(),
                 f"{mixed[fused]:.3f} vs {mixed[specs].min():.3f}")),
        (f"the oracle leads the router only slightly (gap < {gap_tolerance} nats and the "
         f"router captures ≥ {captured_min:.0%} of the oracle's room over the best specialist)",
         *_oracle_check(table, specs, fused, oracle=oracle, iv=ivs.get("oracle gap"), tolerance=gap_tolerance,
                        captured_min=captured_min)),
    ]
    return [{"condition": c, "verdict": v, "holds": v == "holds", "evidence": ev} for c, v, ev in checks]


def _beats(iv: Mapping | None, point: bool, evidence: str) -> tuple[str, str]:
    """Verdict and evidence of "the fused model is better than X": from the interval when there is one."""
    if iv is None:
        return ("holds" if point else "fails"), evidence
    return interval_verdict(iv["low"], iv["high"]), f"{evidence}; Δ {format_interval(iv)}"


def _oracle_check(table: pd.DataFrame, specs: list, fused: str, oracle: str, iv: Mapping | None,
                  tolerance: float, captured_min: float) -> tuple[str, str]:
    """The gap part read off its interval (below ``tolerance`` throughout?), the captured share a point."""
    mixed = table["mixed"]
    gap = mixed[fused] - mixed[oracle]
    # an absolute gap alone flatters tiny models whose oracle has little room to begin with
    room = mixed[specs].min() - mixed[oracle]
    captured = (mixed[specs].min() - mixed[fused]) / room if room > 0 else float("nan")
    evidence = f"gap {gap:+.4f} nats; router captures {captured:.0%} of the room"
    if not captured >= captured_min:
        return "fails", evidence
    if iv is None:
        return ("holds" if gap < tolerance else "fails"), evidence
    # "gap < tolerance" holds when tolerance - gap > 0 over the whole interval
    return interval_verdict(tolerance - iv["high"], tolerance - iv["low"]), f"{evidence}; gap {format_interval(iv)}"


def gap_per_position(nll: Mapping[str, Mapping[str, torch.Tensor]], method: str = HEADLINE,
                     reference: str = ORACLE) -> list[float]:
    """Mixed-loss gap (method − reference, nats) at every token position 0..T-1: per domain the mean
    over windows, then the equal-weight mean over domains. :func:`gap_by_position` is its bucket means."""
    per = [(nll[method][d].double() - nll[reference][d].double()).mean(0) for d in nll[method]]
    return (torch.stack(per).mean(0)).tolist()


def gap_by_position(nll: Mapping[str, Mapping[str, torch.Tensor]], method: str = HEADLINE,
                    reference: str = ORACLE, edges: Sequence[int] = (0, 8, 32)) -> dict[str, float]:
    """Mixed-loss gap (method − reference, nats) for token positions [edges[i], edges[i+1]) and beyond.

    A causal router knows little about the domain in the first tokens of a window, while the
    per-sequence oracle has seen the whole window: this shows where the gap comes from. Edges at or
    beyond the window length T are dropped, so every bucket holds positions.
    """
    T = next(iter(nll[method].values())).shape[1]
    bounds = [e for e in edges if e < T] + [T]
    out = {}
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        diffs = [float((nll[method][d][:, lo:hi] - nll[reference][d][:, lo:hi]).mean()) for d in nll[method]]
        out[f"{lo}-{hi - 1}"] = sum(diffs) / len(diffs)
    return out
