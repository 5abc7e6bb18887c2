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
from minigpt.scoring import ORACLE, ORACLE_PER_TOKEN, SPECIALIST_ROWS, Scores, fused_row
from minigpt.studies import break1 as b1
from minigpt.intervals import domain_window_means
from minigpt.studies.common import INTERVAL_Z, VERDICT_Z, paired, paired_interval, verdict

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


# -- verdict and z -----------------------------------------------------------------------------------


def test_verdict_boundaries():
    assert VERDICT_Z == 2
    assert verdict(2.0) == "no significant change"  # strictly beyond 2 standard errors
    assert verdict(2.0 + 1e-9) == "worse"
    assert verdict(-2.0) == "no significant change"
    assert verdict(-2.0 - 1e-9) == "better"
    assert verdict(0.0) == "no significant change"
    assert verdict(None) == "n/a"
    assert verdict(3.0, worse="drops", better="rises") == "drops"
    assert verdict(-3.0, worse="drops", better="rises") == "rises"


def test_z_is_delta_over_se():
    assert b1._z({"delta": 0.3, "se": 0.1}) == pytest.approx(3.0)
    assert b1._z({"delta": -0.05, "se": 0.02}) == pytest.approx(-2.5)
    assert b1._z({"delta": 0.3, "se": 0.0}) is None  # no spread: no z, not infinity
    assert b1._z(None) is None


# -- hand-made shared / different scores ---------------------------------------------------------------

R = b1.SHARED_TRUNK
NW, T = 4, 4  # windows per domain, tokens per window (losses are constant within a window)
A = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
B = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
C = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64)
ZERO = torch.zeros(NW, dtype=torch.float64)

# Shared set: every window of a domain has the same loss.
SHARED = {
    "base": {"code": 3.2, "medical": 3.2, "legal": 3.2},
    "code specialist": {"code": 2.0, "medical": 3.0, "legal": 3.0},     # mixed 2.666667
    "medical specialist": {"code": 3.0, "medical": 2.0, "legal": 3.0},  # mixed 2.666667
    "legal specialist": {"code": 3.0, "medical": 3.0, "legal": 1.5},    # mixed 2.5: the best
    fused_row("soft", R): dict.fromkeys(DOMAINS, 2.4),
    fused_row("hard", R): dict.fromkeys(DOMAINS, 2.6),
    fused_row("probs", R): dict.fromkeys(DOMAINS, 2.5),
    fused_row("hidden", R): dict.fromkeys(DOMAINS, 2.4),
    "weight average": dict.fromkeys(DOMAINS, 2.8),
    "uniform mix": dict.fromkeys(DOMAINS, 2.7),
    ORACLE: dict.fromkeys(DOMAINS, 2.3),
    ORACLE_PER_TOKEN: dict.fromkeys(DOMAINS, 2.2),
}


def _different(soft_shift: float) -> dict[str, dict[str, torch.Tensor]]:
    """Per-window losses with different bases: shared + change + noise, per row and domain."""
    out = {row: {d: v + ZERO for d, v in per.items()} for row, per in SHARED.items()}
    for d in DOMAINS:
        out[fused_row("soft", R)][d] = 2.4 + soft_shift + 0.06 * A
        out[fused_row("probs", R)][d] = 2.5 + 0.25 + 0.5 * A
        out[fused_row("hidden", R)][d] = 2.4 + 0.192 + 0.06 * C
        out["weight average"][d] = 2.8 - 0.056 + 0.06 * A
        out[ORACLE][d] = 2.32 + ZERO
        out[f"{d} specialist"][d] = SHARED[f"{d} specialist"][d] + 0.03 + 0.03 * B  # own domain only
    # on medical window 0 the code specialist (2.05) beats the medical one (2.0 + 0.03 + 0.03 = 2.06)
    out["code specialist"]["medical"] = torch.tensor([2.05, 3.0, 3.0, 3.0], dtype=torch.float64)
    return out


def _weights(different: bool) -> dict[str, torch.Tensor]:
    """0.8 on the own domain's specialist at every token; with different bases the first three
    tokens of legal window 0 go to the medical specialist."""
    out = {}
    for i, d in enumerate(DOMAINS):
        w = torch.full((NW, T, 3), 0.1, dtype=torch.float64)
        w[..., i] = 0.8
        if different and d == "legal":
            w[0, :3] = torch.tensor([0.1, 0.8, 0.1], dtype=torch.float64)
        out[d] = w
    return out


def _stats(confidence: float) -> dict:
    one = lambda: {"confidence": torch.full((NW * T,), confidence), "correct": torch.ones(NW * T),  # noqa: E731
                   "logit_std": torch.ones(NW * T)}
    return {row: {d: one() for d in DOMAINS} for row in SPECIALIST_ROWS}


def _scores(per_window: dict, weights: dict, stats: dict) -> Scores:
    nll = {row: {d: torch.as_tensor(v, dtype=torch.float64).reshape(-1, 1).expand(NW, T).clone() if torch.is_tensor(v)
                 else torch.full((NW, T), float(v), dtype=torch.float64) for d, v in per.items()}
           for row, per in per_window.items()}
    return Scores(nll, {R: weights}, stats)


def _run(soft_shift: float = 0.12):
    scores = {"shared": _scores(SHARED, _weights(False), _stats(0.875)),  # ECE |0.875 - 1| = 0.125
              "different": _scores(_different(soft_shift), _weights(True), _stats(0.84375))}  # ECE 0.15625
    reports = {s: b1._setting_report(scores[s], [R], R, dict.fromkeys(DOMAINS, 3.2)) for s in b1.SETS}
    return scores, reports


def test_the_setting_reports_read_the_hand_made_scores():
    _, reps = _run()
    s, d = reps["shared"], reps["different"]
    assert s["best_specialist"] == d["best_specialist"] == "legal specialist"
    assert s["best_specialist_mixed"] == pytest.approx(2.5) and d["best_specialist_mixed"] == pytest.approx(7.53 / 3)
    assert s["mixed"][fused_row("soft", R)] == pytest.approx(2.4)
    assert d["mixed"][fused_row("soft", R)] == pytest.approx(2.52)
    assert s["mean_routing_accuracy"][R] == pytest.approx(1.0)
    assert d["mean_routing_accuracy"][R] == pytest.approx((1 + 1 + 13 / 16) / 3)
    assert d["mean_oracle_agreement"][R] == pytest.approx((1 + 3 / 4 + 13 / 16) / 3)
    assert s["mean_ece"] == pytest.approx(0.125) and d["mean_ece"] == pytest.approx(0.15625)
    assert s["oracle_gap"][R] == pytest.approx(0.1) and d["oracle_gap"][R] == pytest.approx(0.2)


# name -> (shared value, different value, relative_%, z, verdict), worked out by hand; listed in
# the order _degradations must rank them (relative_% descending).
#   routing accuracy: per-window hit rates shared 1; different legal (1/4, 1, 1, 1), others 1.
#     diff (shared - different) on legal (3/4, 0, 0, 0): mean 3/16, s² 0.140625, s²/n 0.03515625;
#     delta (3/16)/3 = 0.0625, se sqrt(0.03515625)/3 = 0.0625, z 1.0; relative 0.0625 / 1 = 6.25%.
#   oracle agreement: medical window 0's best specialist is now code, so medical (0, 1, 1, 1) too:
#     delta (1/4 + 3/16)/3 = 0.1458333, se sqrt(0.0625 + 0.03515625)/3 = 0.1041667, z 1.4.
#   fused losses: soft +0.12 ± 0.06A (z 6), probs +0.25 ± 0.5A (z 1.5), hidden +0.192 ± 0.06C (z 9.6);
#     relative = change / shared mixed: 0.12/2.4 = 5%, 0.25/2.5 = 10%, 0.192/2.4 = 8%.
#   fusion gain: per window (soft - legal specialist) changes by 0.12 ± 0.06A on code and medical and
#     by 0.09 + 0.06A - 0.03B on legal: delta 0.11, se sqrt(0.0012 + 0.0012 + 0.0015)/3 = 0.0208167,
#     z 5.284229; gain shared (2.5 - 2.4)/2.5 = 4%, different (2.51 - 2.52)/2.51 = -0.398406%.
#   oracle gap: 0.1 -> 0.2, change 0.12 - 0.02 = 0.10 ± 0.06A: z 5; relative 0.1 / 2.3 = 4.347826%.
#   own domain: +0.03 ± 0.03B: z 3; relative 0.03 / mean(2, 2, 1.5) = 1.636364%.
#   weight averaging: -0.056 ± 0.06A: z -2.8 (better); relative -0.056 / 2.8 = -2%.
#   calibration: ECE 0.125 -> 0.15625, relative 25%, no per-window estimate.
GAIN_D = (2.51 - 2.52) / 2.51 * 100  # the fusion gain with different bases, -0.398406%
DEGRADATIONS = [  # name, shared, different, relative_%, z, verdict
    ("calibration (mean ECE of the specialists)", 0.125, 0.15625, 25.0, None, "n/a (no per-window estimate)"),
    (f"oracle agreement ({R})", 1.0, (1 + 0.75 + 0.8125) / 3, 0.4375 / 3 * 100, 1.4, "no significant change"),
    ("fused loss, probs fusion", 2.5, 2.75, 10.0, 1.5, "no significant change"),
    ("fused loss, hidden fusion", 2.4, 2.592, 8.0, 9.6, "worse"),
    (f"routing accuracy ({R})", 1.0, 0.9375, 6.25, 1.0, "no significant change"),
    ("fused loss, logits fusion", 2.4, 2.52, 5.0, 6.0, "worse"),
    ("fusion gain over best specialist (logits)", 4.0, GAIN_D, 4.0 - GAIN_D, 0.33 / math.sqrt(0.0039), "worse"),
    ("oracle gap", 0.1, 0.2, 0.1 / 2.3 * 100, 5.0, "worse"),
    ("specialists on their own domain", 5.5 / 3, 5.59 / 3, 0.03 / (5.5 / 3) * 100, 3.0, "worse"),
    ("weight averaging", 2.8, 2.744, -2.0, -2.8, "better"),
]


def test_degradations_values_z_and_ranking():
    scores, reps = _run()
    degr = b1._degradations(reps, scores, R)
    assert [m["metric"] for m in degr] == [row[0] for row in DEGRADATIONS]
    for m, (name, shared, different, rel, z, v) in zip(degr, DEGRADATIONS):
        assert m["shared"] == pytest.approx(shared, abs=1e-6), name
        assert m["different"] == pytest.approx(different, abs=1e-6), name
        assert m["relative_%"] == pytest.approx(rel, abs=1e-5), name
        assert (m["z"] is None) if z is None else m["z"] == pytest.approx(z, abs=1e-5), name
        assert m["verdict"] == v, name


# contrasts (a - b), different minus shared, in nats, ranked by change:
#   probs - logits:   0.13 + 0.44A        se 0.44/3 = 0.146667,           z 0.886364
#   router - uniform: 0.12 + 0.06A        se 0.02,                        z 6
#   logits - best:    0.11 (see fusion gain above), se 0.0208167,         z 5.284229
#   logits - oracle:  0.10 + 0.06A        se 0.02,                        z 5
#   hidden - logits:  0.072 + 0.06(C - A) se sqrt(3 * 0.0036 * 8/3 / 4)/3 = 0.0282843, z 2.545584
#   wavg - uniform:  -0.056 + 0.06A       se 0.02,                        z -2.8
CONTRASTS = [  # name, shared, different, change, se, z, verdict
    ("probability fusion minus logit fusion", 0.1, 0.23, 0.13, 0.44 / 3, 0.886364, "no significant change"),
    ("learned router minus uniform mix", -0.3, -0.18, 0.12, 0.02, 6.0, "worse"),
    ("fused logits minus best specialist", -0.1, 0.01, 0.11, math.sqrt(0.0039) / 3, 0.33 / math.sqrt(0.0039), "worse"),
    ("fused logits minus oracle (oracle gap)", 0.1, 0.2, 0.10, 0.02, 5.0, "worse"),
    ("hidden-state fusion minus logit fusion", 0.0, 0.072, 0.072, math.sqrt(0.0072) / 3, 2.545584, "worse"),
    ("weight averaging minus output averaging (uniform mix)", 0.1, 0.044, -0.056, 0.02, -2.8, "better"),
]


def test_contrasts_values_z_and_ranking():
    scores, reps = _run()
    contrasts = b1._contrasts(reps, scores, R)
    assert [c["contrast"] for c in contrasts] == [row[0] for row in CONTRASTS]
    for c, (name, shared, different, change, se, z, v) in zip(contrasts, CONTRASTS):
        assert c["shared"] == pytest.approx(shared, abs=1e-9), name
        assert c["different"] == pytest.approx(different, abs=1e-9), name
        assert c["change_nats"] == pytest.approx(change, abs=1e-9), name
        assert c["z"] == pytest.approx(z, abs=1e-5), name
        assert c["se"] == pytest.approx(se, abs=1e-9), name
        assert c["verdict"] == v, name


def _conclusions(soft_shift: float, confounded: bool = False) -> dict:
    scores, reps = _run(soft_shift)
    run = b1._Run(base_seeds=[0, 1, 2], bases={}, base_losses={}, sets={}, scores=scores, reports=reps, controls={})
    return b1._conclusions(run, {"base_quality_spread": 0.3, "shared_fusion_effect": 0.1,
                                 "confounded_by_base_quality": confounded})


def test_what_fails_first_is_the_first_significant_metric_in_rank_order():
    c = _conclusions(0.12)
    # calibration, oracle agreement and probs fusion rank higher but are not significant
    assert c["what_fails_first"] == "fused loss, hidden fusion"
    assert c["what_fails_first_within_set"] == "learned router minus uniform mix"  # probs - logits is not
    assert c["headline_catches_it"] is True and c["missed_by_headline"] == []
    assert c["confound_note"] is None and c["verdict_z_threshold"] == VERDICT_Z


def test_headline_misses_what_other_metrics_catch():
    # the fused logits row changes by 0.02 ± 0.06A (z 1): not significant; hidden fusion (z 9.6) and
    # the specialists on their own domain (z 3) are, in that rank order
    c = _conclusions(0.02, confounded=True)
    assert c["headline_catches_it"] is False
    assert c["what_fails_first"] == "fused loss, hidden fusion"
    assert c["missed_by_headline"] == ["fused loss, hidden fusion", "specialists on their own domain"]
    assert "0.300 nats" in c["confound_note"] and "+0.100" in c["confound_note"]


# -- the controls: one-sided, with paired intervals ----------------------------------------------------

def test_paired_interval_is_delta_plus_minus_1_96_se():
    assert INTERVAL_Z == 1.96
    a = {d: 2.4 + ZERO for d in DOMAINS}
    p = paired_interval(a, {d: 2.52 + 0.06 * A for d in DOMAINS})  # delta 0.12, se 0.02
    assert p["delta"] == pytest.approx(0.12) and p["se"] == pytest.approx(0.02)
    assert (p["ci_low"], p["ci_high"]) == pytest.approx((0.12 - 0.0392, 0.12 + 0.0392))
    assert p["verdict"] == "worse"
    assert paired_interval(a, {d: 2.37 + 0.06 * A for d in DOMAINS})["verdict"] == "inconclusive"  # -0.03 ± 0.0392
    assert paired_interval(a, {d: 2.34 + 0.06 * A for d in DOMAINS})["verdict"] == "better"  # -0.06 ± 0.0392


def _control_scores(level: float, noise: torch.Tensor = ZERO) -> Scores:
    return _scores({fused_row("soft", R): dict.fromkeys(DOMAINS, level + noise)}, {}, {})


def _vs(levels: dict[str, float]) -> dict:
    """Different-base fused logits at 2.52 ± 0.06A per window against controls at ``levels``."""
    scores, reps = _run(0.12)
    ctrl = {s: _control_scores(v) for s, v in levels.items()}
    run = b1._Run(base_seeds=[0, 1, 2], bases={}, base_losses={}, sets={}, scores=scores, reports=reps,
                  controls={s: {"fused_logits_mixed": v} for s, v in levels.items()}, control_scores=ctrl)
    return b1._vs_controls(run)


def test_vs_controls_per_control_intervals_and_counts():
    dv = _vs({"0": 2.4, "1": 2.55, "2": 2.3})
    assert dv["n_controls"] == 3 and dv["control_base_seeds"] == [0, 1, 2] and dv["interval_z"] == INTERVAL_Z
    pc = dv["per_control"]
    assert pc["0"]["delta"] == pytest.approx(0.12) and pc["0"]["se"] == pytest.approx(0.02)
    assert pc["0"]["ci_low"] == pytest.approx(0.12 - 1.96 * 0.02) and pc["0"]["paired"] is True
    assert [pc[s]["verdict"] for s in "012"] == ["worse", "inconclusive", "worse"]  # -0.03 ± 0.0392 at seed 1
    assert (dv["n_worse"], dv["n_better"], dv["n_inconclusive"]) == (2, 0, 1)
    assert dv["worse_than_every_control"] is False and dv["better_than_every_control"] is False
    assert (dv["controls_min"], dv["controls_max"]) == (2.3, 2.55)
    assert dv["different_fused_logits_mixed"] == pytest.approx(2.52)
    assert "3 controls" in dv["controls_note"] and "0, 1, 2" in dv["controls_note"]
    assert "base quality is matched" in dv["controls_note"] and "4 held-out windows" in dv["controls_note"]
    assert dv["verdict_note"].startswith("worse than 2 of 3 controls, better than 0, inconclusive against 1")


def test_vs_controls_is_one_sided():
    # better than every control: outside their range, but never counted as worse (the old check was two-sided)
    better = _vs({"0": 2.7, "1": 2.8})
    assert better["better_than_every_control"] and not better["worse_than_every_control"]
    assert not better["controls_min"] <= better["different_fused_logits_mixed"] <= better["controls_max"]
    worse = _vs({"0": 2.3, "1": 2.4})
    assert worse["worse_than_every_control"] and worse["verdict_note"].endswith("worse than every control")
    # above the range by its point estimate, but within the interval of one control: not worse than all
    close = _vs({"0": 2.3, "1": 2.5})
    assert close["different_fused_logits_mixed"] > close["controls_max"]
    assert close["per_control"]["1"]["verdict"] == "inconclusive" and not close["worse_than_every_control"]


def test_vs_control_without_per_window_losses_compares_points():
    c = b1._vs_control(None, None, 2.5, 2.4)
    assert c["paired"] is False and c["se"] is None and c["verdict"] == "worse" and c["delta"] == pytest.approx(0.1)
    assert b1._vs_control(None, None, 2.3, 2.4)["verdict"] == "better"


# -- fusion_verdict on a hand-made report ---------------------------------------------------------------

def _report(behind: float, fused: float, controls: dict[str, float]) -> dict:
    contrasts = [{"contrast": "fused logits minus best specialist", "different": behind, "change_nats": 0.05,
                  "verdict": "worse"},
                 {"contrast": "probability fusion minus logit fusion", "different": 0.1, "change_nats": 0.01,
                  "verdict": "no significant change"}]
    per = {s: b1._vs_control(None, None, fused, v) for s, v in controls.items()}
    return {"within_set_contrasts": contrasts, "different_vs_controls": b1.vs_controls_summary(fused, per)}


@pytest.mark.parametrize("behind, fused, want", [
    (-0.02, 2.50, "survives"),                     # beats its best specialist, between the controls 2.4, 2.6
    (+0.02, 2.50, "not worse than the controls"),  # behind its best specialist, between the controls
    (+0.02, 2.39, "not worse than the controls"),  # better than every control: one-sided, not a degradation
    (-0.02, 2.39, "survives"),
    (-0.02, 2.70, "degrades"),                     # worse than every control
])
def test_fusion_verdict(behind, fused, want):
    v = b1.fusion_verdict(_report(behind, fused, {"0": 2.4, "1": 2.6}))
    assert v["verdict"] == want
    assert v["beats_best"] == (behind < 0) and v["behind_best_nats"] == behind
    assert v["controls"] == (2.4, 2.6) and v["fused"] == fused and v["n_controls"] == 2
    assert v["worse_than_controls"] == (fused > 2.6) and v["better_than_controls"] == (fused < 2.4)
    assert set(v["per_control"]) == {"0", "1"}
    assert v["bites"] == [("fused logits minus best specialist", 0.05)]
