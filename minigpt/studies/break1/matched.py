"""Break 1 judged on what the break changes: each set against itself, then against its matched controls.

A specialist set from different bases and a shared-base control differ in two ways: the missing
shared geometry, and the quality of the bases under them. Comparing their fused losses mixes both.
So every metric here is measured *within* a set first, in a form a weaker or stronger base cancels
from (the fused model against its own router's base, against its own best specialist, against its own
oracle; its routing; its calibration; weight averaging against output averaging of the same models),
and only then compared across sets, window by window on the same held-out windows:

* against the *matched control*: the shared-base set built on the base the different set's router
  reads (base X), and
* against the *mean of the controls*: the shared-base sets on every base seed the break uses.

Each comparison carries a paired bootstrap interval (:mod:`minigpt.intervals`), and each metric is
one of the chapter's predictions for Break 1 (:data:`PREDICTIONS`), which the interval decides:
*held*, *reversed* or *inconclusive*.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from ...analysis.calibration import _bin_index
from ...config import DOMAINS
from ...intervals import domain_window_means, interval_verdict, mean_stat, paired_difference
from ...scoring import ORACLE, SHARED_TRUNK, Scores, fused_row

FUSED = fused_row("soft", SHARED_TRUNK)  # the headline: logit fusion, router on base X's trunk
ECE_BINS = 15

# metric -> (what the chapter predicts for different bases, the direction that prediction means, unit)
PREDICTIONS: dict[str, tuple[str, int, str]] = {
    "fused gain over its router's base": ("the fused model gains less over its base than a shared-base one", -1, "nats"),
    "fused gain over its best specialist": ("fusion falls behind its own best specialist", -1, "nats"),
    "routing accuracy": ("routing accuracy drops sharply", -1, "share of tokens"),
    "oracle gap": ("the gap to the oracle grows", +1, "nats"),
    "fused calibration error": ("the fused outputs are calibrated worse", +1, "ECE"),
    "weight averaging minus output averaging": ("weight averaging becomes useless or catastrophic", +1, "nats"),
}


# -- per-window values of one set ---------------------------------------------------------------------
def _diff(sc: Scores, a: str, b: str) -> dict[str, torch.Tensor]:
    """Per window, row ``a``'s mean loss minus row ``b``'s, (n,) float64 per domain."""
    wa, wb = domain_window_means(sc.nll[a]), domain_window_means(sc.nll[b])
    return {d: wa[d] - wb[d] for d in wa}


def _own_routing(sc: Scores, router: str) -> dict[str, torch.Tensor]:
    """Per window, the share of tokens whose top-weighted specialist is the window's own domain."""
    w = sc.weights[router]
    return {d: (w[d].argmax(-1) == DOMAINS.index(d)).double().mean(-1) for d in w}


def window_metrics(sc: Scores, best_specialist: str) -> dict[str, dict[str, torch.Tensor]]:
    """Every :data:`PREDICTIONS` metric but calibration, per window of one set: ``{metric: {domain: (n,)}}``.
    The base row is the router's base; gains are positive when fusion helps."""
    return {"fused gain over its router's base": _diff(sc, "base", FUSED),
            "fused gain over its best specialist": _diff(sc, best_specialist, FUSED),
            "routing accuracy": _own_routing(sc, SHARED_TRUNK),
            "oracle gap": _diff(sc, FUSED, ORACLE),
            "weight averaging minus output averaging": _diff(sc, "weight average", "uniform mix")}


def ece_parts(sc: Scores, row: str = FUSED, n_bins: int = ECE_BINS) -> dict[str, torch.Tensor]:
    """Per window and confidence bin, the mean over its T tokens of (confidence - correct) where the token
    falls in that bin: ``{domain: (n, bins)}``. Averaged over any windows, |.| summed over bins is their ECE."""
    out = {}
    for d, st in sc.stats[row].items():
        n = sc.nll[row][d].shape[0]
        conf, corr = st["confidence"].double().view(n, -1), st["correct"].double().view(n, -1)
        idx = _bin_index(conf, n_bins)
        out[d] = torch.zeros(n, n_bins, dtype=torch.float64).scatter_add_(1, idx, conf - corr) / conf.shape[1]
    return out


# -- paired intervals across sets ----------------------------------------------------------------------
def _ece_stat(v: Mapping[str, torch.Tensor], idx: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
    """ECE over all tokens of the chosen windows, from :func:`ece_parts` (domains weigh equally, as
    every domain has as many windows): the sum over bins of |mean (confidence - correct)|."""
    per_domain = [v[d].mean(0) if idx is None else v[d][idx[d]].mean(1) for d in v]  # (bins,) or (R, bins)
    return torch.stack(per_domain).mean(0).abs().sum(-1)


def _mean_of(sets: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {d: torch.stack([s[d] for s in sets]).mean(0) for d in sets[0]}


def outcome(iv: Mapping, direction: int) -> str:
    """``held`` when the whole interval lies on the predicted side of zero, ``reversed`` when on the other."""
    v = interval_verdict(iv["low"], iv["high"])
    if v == "inconclusive":
        return "inconclusive"
    return "held" if (v == "holds") == (direction > 0) else "reversed"


def prediction_outcome(vs_matched: str, vs_mean: str) -> str:
    """One outcome from the two comparisons: the same verdict twice, else ``mixed``."""
    return vs_matched if vs_matched == vs_mean else "mixed"


# -- the comparison ------------------------------------------------------------------------------------
def matched_comparison(different: Scores, controls: Mapping[str, Scores], best: Mapping[str, str],
                       matched: str) -> list[dict]:
    """Every prediction's metric on the different-base set, its matched control and the controls' mean,
    with paired intervals of the different set minus each. ``best[name]``: each set's best specialist row
    (keys "different" and every control's name); ``matched``: the name of the control on base X."""
    per = {"different": window_metrics(different, best["different"]),
           **{c: window_metrics(sc, best[c]) for c, sc in controls.items()}}
    ece = {"different": ece_parts(different), **{c: ece_parts(sc) for c, sc in controls.items()}}
    rows = []
    for metric, (claim, direction, unit) in PREDICTIONS.items():
        values, stat = (ece, _ece_stat) if metric == "fused calibration error" else (
            {k: v[metric] for k, v in per.items()}, mean_stat)
        mean_ctrl = _ece_mean(values, controls) if stat is _ece_stat else _mean_of([values[c] for c in controls])
        vs_matched = paired_difference(values[matched], values["different"], stat)
        vs_mean = paired_difference(mean_ctrl, values["different"], stat)
        rows.append({"metric": metric, "prediction": claim, "direction": direction, "unit": unit,
                     "different": float(stat(values["different"], None)),
                     "matched_control": float(stat(values[matched], None)),
                     "controls": {c: float(stat(values[c], None)) for c in controls},
                     "mean_of_controls": float(np.mean([stat(values[c], None) for c in controls])),
                     "vs_matched": vs_matched, "vs_mean_of_controls": vs_mean,
                     "outcome_vs_matched": outcome(vs_matched, direction),
                     "outcome_vs_mean": outcome(vs_mean, direction)})
        rows[-1]["outcome"] = prediction_outcome(rows[-1]["outcome_vs_matched"], rows[-1]["outcome_vs_mean"])
    return rows


def _ece_mean(values: Mapping[str, Mapping[str, torch.Tensor]], controls: Sequence[str]) -> dict[str, torch.Tensor]:
    """The controls' per-window ECE parts averaged, so that the "mean of the controls" is one pooled set."""
    return _mean_of([values[c] for c in controls])


def what_fails_first(rows: Sequence[Mapping]) -> list[str]:
    """The predictions that held, most decisive first: estimate over the interval's half-width."""
    held = [r for r in rows if r["outcome"] == "held"]

    def strength(r: Mapping) -> float:
        iv = r["vs_matched"]
        half = (iv["high"] - iv["low"]) / 2
        return abs(iv["estimate"]) / half if half > 0 else float("inf")
    return [r["metric"] for r in sorted(held, key=strength, reverse=True)]


def headline_change(different: Scores, matched: Scores) -> dict:
    """The headline as a reader would read it: the different set's fused mixed loss minus the matched
    control's, with its paired interval (positive: the different-base system is worse)."""
    a, b = domain_window_means(matched.nll[FUSED]), domain_window_means(different.nll[FUSED])
    iv = paired_difference(a, b)
    return {**iv, "catches_it": iv["low"] > 0}


def confound_check(base_mixed: Mapping[str, float], headline: Mapping) -> dict:
    """Is the spread of base quality (nats) as large as the effect the break must explain (the headline's
    change against the matched control, nats)? Then raw fused losses say little, and the matched
    metrics, each measured against the set's own base and specialists, are what to read."""
    spread = max(base_mixed.values()) - min(base_mixed.values())
    effect = headline["estimate"]
    return {"base_quality_spread_nats": spread, "effect_nats": effect,
            "confounded_by_base_quality": bool(spread >= abs(effect))}
