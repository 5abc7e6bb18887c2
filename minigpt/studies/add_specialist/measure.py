"""What joining costs the old domains and buys the new one, read off paired intervals.

Every model is scored on the same held-out windows of all four domains. "Before" is the chapter's
fused model (three crowns, its own router) meeting the new domain's text unprepared; "after" is the
four-crown model with each way of growing the router. A change on the old domains is only called
"nothing lost" when its whole 95 % interval lies below :data:`LOSS_MARGIN` nats.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from ...config import DOMAINS
from ...evaluate import loss_table, routing_accuracy, table_json
from ...intervals import domain_window_means, paired_difference
from ...scoring import ORACLE, Scores, fused_row
from .joining import FOUR, LATE

LOSS_MARGIN = 0.005  # nats: a change on the old domains smaller than this, with its interval, counts as nothing lost
WAYS = ("scratch", "grown", "prototype")  # how the router learned about the new expert
BEFORE = "three experts"


def _windows(sc: Scores, row: str, domains: Sequence[str]) -> dict[str, torch.Tensor]:
    return {d: v for d, v in domain_window_means(sc.nll[row]).items() if d in domains}


def change(a: Scores, row_a: str, b: Scores, row_b: str, domains: Sequence[str]) -> dict:
    """Row ``row_b`` of ``b`` minus row ``row_a`` of ``a``, on ``domains``' windows (equal-weight mean),
    with its paired interval (positive: ``row_b`` has the higher loss)."""
    return paired_difference(_windows(a, row_a, domains), _windows(b, row_b, domains))


def old_domain_verdict(iv: Mapping) -> str:
    """``lost`` / ``gained`` when the interval lies on one side of zero; ``nothing lost`` when it straddles
    zero below :data:`LOSS_MARGIN`; else ``inconclusive`` (a loss up to its upper end cannot be ruled out)."""
    if iv["low"] > 0:
        return "lost"
    if iv["high"] < 0:
        return "gained"
    return "nothing lost" if iv["high"] <= LOSS_MARGIN else "inconclusive"


def old_domains(before: Scores, after: Scores, ways: Sequence[str] = WAYS) -> dict[str, dict]:
    """Per way of growing the router: the fused loss after minus before, per old domain and over the three."""
    out = {}
    for way in ways:
        per = {d: change(before, fused_row("soft", BEFORE), after, row_b=fused_row("soft", way), domains=[d]) for d in DOMAINS}
        per["three old domains"] = change(before, fused_row("soft", BEFORE), after, row_b=fused_row("soft", way),
                                          domains=DOMAINS)
        out[way] = {k: {**iv, "verdict": old_domain_verdict(iv)} for k, iv in per.items()}
    return out


def new_domain(before: Scores, after: Scores, way: str = "scratch") -> dict[str, dict]:
    """On the new domain's windows: the grown system against the base, the new crown alone and the old
    three-expert fused model (fused minus reference, nats; negative: the grown system is better)."""
    fused = fused_row("soft", way)
    return {"vs base": change(after, "base", after, row_b=fused, domains=[LATE]),
            "vs the new specialist alone": change(after, f"{LATE} specialist", after, row_b=fused, domains=[LATE]),
            "vs the old three-expert model": change(before, fused_row("soft", BEFORE), after, row_b=fused,
                                                    domains=[LATE])}


def routing(after: Scores, routers: Sequence[str]) -> dict[str, dict[str, float]]:
    """Routing accuracy on all four domains (argmax = the window's own expert)."""
    return {r: routing_accuracy(after.weights[r], FOUR) for r in routers}


def oracle_gaps(before: Scores, after: Scores) -> dict[str, dict[str, float]]:
    """Fused minus the per-window oracle of its own experts, per domain, before and after joining."""
    tb, ta = loss_table(before.nll, FOUR), loss_table(after.nll, FOUR)
    gap = lambda t, row: {d: float(t.loc[row, d] - t.loc[ORACLE, d]) for d in FOUR}  # noqa: E731
    return {"before (three experts)": gap(tb, fused_row("soft", BEFORE)),
            **{f"after ({w})": gap(ta, fused_row("soft", w)) for w in WAYS}}


def removal(after: Scores, names: Sequence[str]) -> dict[str, dict]:
    """Taking one crown away again (its router output dropped): per domain, what each domain loses."""
    out = {}
    for name in names:
        row = fused_row("soft", f"without {name}")
        out[name] = {d: change(after, fused_row("soft", "scratch"), after, row_b=row, domains=[d]) for d in FOUR}
    return out


def tables(before: Scores, after: Scores, negative: Scores | None) -> dict:
    specs = [f"{d} specialist" for d in FOUR]
    return {name: table_json(loss_table(sc.nll, FOUR, specs)) for name, sc in
            (("before", before), ("after", after), ("other base", negative)) if sc is not None}


def mixed(t: Mapping, row: str, domains: Sequence[str]) -> float:
    return float(np.mean([t[row][d] for d in domains]))
