"""Break 1's statistics on synthetic paired losses with a known difference and standard error.

* :func:`minigpt.studies.common.paired`: per-window differences with a chosen mean and sample
  variance, checked against the hand formula se = sqrt(sum_d s_d^2 / n_d) / D;
* :func:`~minigpt.studies.common.verdict` at its boundaries and ``break1._z``;
* ``break1._degradations`` / ``_contrasts`` / ``_conclusions`` on two hand-made :class:`Scores`
  (a shared-base set and a different-bases set) whose every change, z-score and rank is worked out
  in the comments: the ranking, the verdicts, ``what_fails_first`` (the first *significant* metric
  in rank order, not the first in rank) and its within-set counterpart;
* the one-sided comparison with the shared-base controls (``break1._vs_controls``): per control a
  paired 95% interval, "worse than the controls" only when worse than every one of them;
* :func:`break1.fusion_verdict` on a hand-made report.

Per-window noise uses three zero-mean, mutually orthogonal patterns over the 4 windows of a domain
(A, B, C below). Each has unbiased variance 4/3, so ``c + a * pattern`` on every domain has
delta = c and se = sqrt(3 * a^2 * (4/3) / 4) / 3 = a / 3, and z = 3c / a.
"""
from __future__ import annotations

import math

import pytest
import torch

from minigpt.config import DOMAINS
from minigpt.intervals import paired_difference
from minigpt.scoring import ORACLE, SHARED_TRUNK, Scores, fused_row
from minigpt.studies.break1 import matched as m
from minigpt.intervals import domain_window_means
from minigpt.studies.common import INTERVAL_Z, paired, paired_interval

# -- paired -------------------------------------------------------------------------------------


def test_paired_delta_and_se_by_hand():
    gen = torch.Generator().manual_seed(0)
    diffs = {"code": [1.0, 2.0, 3.0],          # mean 2, sample variance 1,  n 3 -> s²/n = 1/3
             "medical": [0.0, 4.0],            # mean 2, sample variance 8,  n 2 -> 4
             "legal": [0.5, -0.5, 0.5, -0.5]}  # mean 0, sample variance 1/3, n 4 -> 1/12
    a = {d: torch.rand(len(v), generator=gen, dtype=torch.float64) for d, v in diffs.items()}
    b = {d: a[d] + torch.tensor(v, dtype=torch.float64) for d, v in diffs.items()}
    p = paired(a, b)
    assert p["delta"] == pytest.approx(4 / 3, abs=1e-12)  # (2 + 2 + 0) / 3
    assert p["se"] == pytest.approx(math.sqrt(1 / 3 + 4 + 1 / 12) / 3, abs=1e-12)  # sqrt(53/12) / 3
    # b - a, not a - b
    q = paired(b, a)
    assert q["delta"] == pytest.approx(-4 / 3, abs=1e-12) and q["se"] == pytest.approx(p["se"], abs=1e-12)


def test_paired_single_window_domain_adds_no_variance():
    a = {"code": torch.zeros(3, dtype=torch.float64), "medical": torch.zeros(1, dtype=torch.float64)}
    b = {"code": torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
         "medical": torch.tensor([5.0], dtype=torch.float64)}
    p = paired(a, b)
    assert p["delta"] == pytest.approx(3.5)  # (2 + 5) / 2: domains weigh equally, not windows
    assert p["se"] == pytest.approx(math.sqrt(1 / 3) / 2)


def test_window_means_are_per_window_float64():
    nll = {"code": torch.tensor([[1.0, 2.0, 6.0], [0.5, 0.5, 2.0]])}
    out = domain_window_means(nll)["code"]
    assert out.dtype == torch.float64 and out.tolist() == pytest.approx([3.0, 1.0])


# -- hand-made sets ------------------------------------------------------------------------------------
NW, T = 4, 2  # windows per domain, tokens per window (a loss is constant within a window)
A = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)  # zero-mean noise over the windows
ZERO = torch.zeros(NW, dtype=torch.float64)
FUSED = fused_row("soft", SHARED_TRUNK)


def _set(base: float, best: float, fused: float, oracle: float, wavg: float, uniform: float, routed: int,
         confidence: float, noise: float = 0.0) -> Scores:
    """One set: every row's loss is the same on every domain (the legal specialist is the best one), the
    router sends ``routed`` of each window's T tokens to the own domain, the fused row's top-1
    confidence is ``confidence`` on tokens that are all right (ECE = 1 - confidence)."""
    rows = {"base": base, "code specialist": best + 1, "medical specialist": best + 1, "legal specialist": best,
            FUSED: fused, ORACLE: oracle, "weight average": wavg, "uniform mix": uniform}
    nll = {r: {d: (v + noise * A).reshape(-1, 1).expand(NW, T).clone() for d in DOMAINS} for r, v in rows.items()}
    weights = {}
    for i, d in enumerate(DOMAINS):
        w = torch.zeros(NW, T, 3, dtype=torch.float64)
        w[:, :routed, i] = 1.0
        w[:, routed:, (i + 1) % 3] = 1.0
        weights[d] = w
    stats = {FUSED: {d: {"confidence": torch.full((NW * T,), confidence, dtype=torch.float64),
                         "correct": torch.ones(NW * T, dtype=torch.float64)}
                     for d in DOMAINS}}
    return Scores(nll, {SHARED_TRUNK: weights}, stats)


BEST = {"different": "legal specialist", "0": "legal specialist", "1": "legal specialist", "2": "legal specialist"}


def _comparison(different: Scores | None = None) -> dict:
    # controls: fused gains 0.5 over the base and 0.2 over the best specialist; gap 0.1; routing 1.0
    controls = {"0": _set(4.0, 3.7, 3.5, 3.4, 3.9, 3.6, 2, 0.9),
                "1": _set(4.2, 3.9, 3.7, 3.6, 4.1, 3.8, 2, 0.9),
                "2": _set(4.4, 4.1, 3.9, 3.8, 4.3, 4.0, 2, 0.8)}
    # different bases on base X: gains 0.1 over the base, -0.1 behind the best specialist, gap 0.05,
    # routing 0.5, ECE 0.3, weight average 1.0 worse than the uniform mix
    different = different or _set(4.0, 3.8, 3.9, 3.85, 5.0, 4.0, 1, 0.7, noise=0.01)
    return {r["metric"]: r for r in m.matched_comparison(different, controls, BEST, "0")}


def test_each_metric_is_measured_within_its_set_then_compared():
    rows = _comparison()
    want = {  # metric: (different, matched control, mean of the controls)
        "fused gain over its router's base": (0.1, 0.5, 0.5), "fused gain over its best specialist": (-0.1, 0.2, 0.2),
        "routing accuracy": (0.5, 1.0, 1.0), "oracle gap": (0.05, 0.1, 0.1),
        "fused calibration error": (0.3, 0.1, (0.1 + 0.1 + 0.2) / 3),
        "weight averaging minus output averaging": (1.0, 0.3, 0.3)}
    assert list(rows) == list(m.PREDICTIONS) == list(want)
    for metric, (diff, matched, mean) in want.items():
        r = rows[metric]
        assert (r["different"], r["matched_control"], r["mean_of_controls"]) == pytest.approx((diff, matched, mean), abs=1e-9)
        assert r["vs_matched"]["estimate"] == pytest.approx(diff - matched, abs=1e-9)
        assert r["vs_mean_of_controls"]["estimate"] == pytest.approx(diff - mean, abs=1e-9)
        assert r["vs_matched"]["low"] <= r["vs_matched"]["estimate"] <= r["vs_matched"]["high"]


def test_outcomes_follow_the_predicted_direction():
    rows = _comparison()
    # every change is on the predicted side (gains and routing fall, ECE and weight averaging rise)...
    for metric in ("fused gain over its router's base", "fused gain over its best specialist", "routing accuracy",
                   "fused calibration error", "weight averaging minus output averaging"):
        assert rows[metric]["outcome"] == "held", metric
    # ...but the oracle gap shrinks, which the chapter did not predict
    assert rows["oracle gap"]["outcome"] == "reversed"
    assert m.what_fails_first(list(rows.values()))[0] in {r for r, v in rows.items() if v["outcome"] == "held"}
    assert "oracle gap" not in m.what_fails_first(list(rows.values()))


@pytest.mark.parametrize("low, high, direction, want", [
    (0.1, 0.2, +1, "held"), (0.1, 0.2, -1, "reversed"), (-0.2, -0.1, -1, "held"), (-0.1, 0.1, +1, "inconclusive")])
def test_outcome_reads_the_interval(low, high, direction, want):
    assert m.outcome({"estimate": (low + high) / 2, "low": low, "high": high}, direction) == want


def test_two_comparisons_give_one_outcome():
    assert m.prediction_outcome("held", "held") == "held"
    assert m.prediction_outcome("held", "inconclusive") == "mixed"


def test_headline_and_confound():
    controls = _set(4.0, 3.7, 3.5, 3.4, 3.9, 3.6, 2, 0.9)
    worse = _set(4.0, 3.8, 3.9, 3.85, 5.0, 4.0, 1, 0.7, noise=0.01)
    h = m.headline_change(worse, controls)
    assert h["estimate"] == pytest.approx(0.4) and h["catches_it"]
    assert not m.headline_change(controls, controls)["catches_it"]
    c = m.confound_check({"0": 4.0, "1": 4.2, "2": 4.4}, h)
    assert c["base_quality_spread_nats"] == pytest.approx(0.4) and c["confounded_by_base_quality"]
    assert not m.confound_check({"0": 4.0, "1": 4.05}, h)["confounded_by_base_quality"]


def test_paired_difference_holds_its_estimate_and_pairs_the_windows():
    a = {d: 2.0 + 0.5 * A for d in DOMAINS}
    b = {d: 2.1 + 0.5 * A for d in DOMAINS}  # the same noise: the difference is exactly 0.1 in every resample
    iv = paired_difference(a, b)
    assert iv["estimate"] == pytest.approx(0.1) and iv["low"] == pytest.approx(0.1) and iv["high"] == pytest.approx(0.1)
    c = {d: 2.1 + 0.5 * A.flip(0) for d in DOMAINS}  # other noise: the interval widens around 0.1
    wide = paired_difference(a, c)
    assert wide["low"] < 0.1 < wide["high"]


def test_paired_interval_is_delta_plus_minus_1_96_se():
    assert INTERVAL_Z == 1.96
    a = {d: 2.4 + ZERO for d in DOMAINS}
    p = paired_interval(a, {d: 2.52 + 0.06 * A for d in DOMAINS})  # delta 0.12, se 0.02
    assert p["delta"] == pytest.approx(0.12) and p["se"] == pytest.approx(0.02)
    assert (p["ci_low"], p["ci_high"]) == pytest.approx((0.12 - 0.0392, 0.12 + 0.0392))
    assert p["verdict"] == "worse"
    assert paired_interval(a, {d: 2.37 + 0.06 * A for d in DOMAINS})["verdict"] == "inconclusive"  # -0.03 ± 0.0392
    assert paired_interval(a, {d: 2.34 + 0.06 * A for d in DOMAINS})["verdict"] == "better"  # -0.06 ± 0.0392


