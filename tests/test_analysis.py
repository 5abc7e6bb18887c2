"""Linear CKA's defining properties, KALAVAI divergence and the gain-vs-divergence fit."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from minigpt.analysis import divergence as dv
from minigpt.analysis import seeds
from minigpt.analysis import similarity as sim


def _orthogonal(d: int, gen: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return q


@pytest.fixture
def acts():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(400, 12, generator=gen, dtype=torch.float64) @ torch.randn(12, 12, generator=gen, dtype=torch.float64), gen


def test_cka_identical_is_one(acts):
    x, _ = acts
    assert sim.linear_cka(x, x) == pytest.approx(1.0)


def test_cka_invariant_to_rotation_scale_and_shift(acts):
    x, gen = acts
    y = torch.tanh(x[:, :8]) + 0.1 * torch.randn(400, 8, generator=gen, dtype=torch.float64)  # a related representation
    ref = sim.linear_cka(x, y)
    assert 0.1 < ref < 0.99
    q = _orthogonal(12, gen)
    assert sim.linear_cka(x @ q, y) == pytest.approx(ref, rel=1e-9)
    assert sim.linear_cka(3.7 * x, y) == pytest.approx(ref, rel=1e-9)
    assert sim.linear_cka(x + 5.0, y) == pytest.approx(ref, rel=1e-9)  # centred
    assert sim.linear_cka(x @ q * 0.01, x) == pytest.approx(1.0)
    assert sim.linear_cka(y, x) == pytest.approx(ref, rel=1e-12)  # symmetric


def test_cka_not_invariant_to_general_linear_maps(acts):
    x, gen = acts
    a = torch.diag(torch.tensor([20.0] + [1.0] * 11, dtype=torch.float64))  # stretch one axis
    assert sim.linear_cka(x @ a, x) < 0.99


def test_cka_low_for_unrelated_inputs():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2000, 8, generator=gen)
    y = torch.randn(2000, 8, generator=gen)
    assert sim.linear_cka(x, y) < 0.05


def test_cka_rejects_mismatched_rows():
    with pytest.raises(ValueError, match="same inputs"):
        sim.linear_cka(torch.randn(5, 3), torch.randn(6, 3))


def test_paired_cosine_sees_rotation_that_cka_ignores(acts):
    x, gen = acts
    q = _orthogonal(12, gen)
    assert sim.paired_cosine(x, x) == pytest.approx(1.0)
    assert sim.linear_cka(x @ q, x) == pytest.approx(1.0)
    assert abs(sim.paired_cosine(x @ q, x)) < 0.5


def test_cka_matrix_is_symmetric_with_unit_diagonal(acts):
    x, gen = acts
    m = sim.cka_matrix({"a": x, "b": x @ _orthogonal(12, gen), "c": torch.randn(400, 5, generator=gen)})
    assert np.allclose(np.diag(m.values), 1.0) and np.allclose(m.values, m.values.T)
    assert m.loc["a", "b"] == pytest.approx(1.0)
    assert sim.mean_off_diagonal(m) == pytest.approx((m.loc["a", "b"] + m.loc["a", "c"] + m.loc["b", "c"]) / 3)


def _table():
    return pd.DataFrame({
        "code": [5.0, 4.5, 5.2, 5.1, 4.6],
        "medical": [4.0, 4.2, 3.8, 4.1, 3.9],
        "legal": [6.0, 6.1, 6.2, 5.4, 5.7],
    }, index=["base", "code specialist", "medical specialist", "legal specialist", "fused soft (per-token router)"]
    ).assign(mixed=lambda t: t.mean(axis=1))


def test_divergence_by_hand():
    gains = dv.own_domain_gains(_table())
    assert gains == pytest.approx({"code": 10.0, "medical": 5.0, "legal": 10.0})  # (5-4.5)/5, (4-3.8)/4, (6-5.4)/6
    assert dv.divergence(_table()) == pytest.approx(25 / 3)
    # a dict of dicts works the same
    t = _table()
    as_dict = {r: t.loc[r].to_dict() for r in t.index}
    assert dv.divergence(as_dict) == pytest.approx(25 / 3)


def test_fusion_gain_by_hand():
    # mixed: code specialist 14.8/3, medical 15.2/3, legal 14.6/3 (the best), fused 14.2/3
    # gain = (14.6 - 14.2) / 14.6 * 100 = 2.739726%
    t = _table()
    assert dv.fusion_gain(t) == pytest.approx(0.4 / 14.6 * 100, abs=1e-9)
    # another row, and a fused row behind the best specialist: base 15/3 -> (14.6 - 15) / 14.6 * 100
    assert dv.fusion_gain(t, fused="base") == pytest.approx(-0.4 / 14.6 * 100, abs=1e-9)
    assert dv.fusion_gain(t, fused="legal specialist") == pytest.approx(0.0, abs=1e-12)


def test_fit_recovers_a_line_and_reports_kalavai():
    div = [1.0, 2.0, 4.0, 7.0]
    fit = dv.fit_gain_vs_divergence([(d, 0.5 * d - 1.0) for d in div])
    assert fit["slope"] == pytest.approx(0.5) and fit["intercept"] == pytest.approx(-1.0)
    assert fit["r2"] == pytest.approx(1.0)
    assert fit["kalavai"]["predicted_gain"] == pytest.approx([0.82 * d - 2.72 for d in div])
    assert fit["kalavai"]["mean_residual"] == pytest.approx(np.mean([(0.5 - 0.82) * d + 1.72 for d in div]))
    # noisy points: R² below 1, dict points accepted
    noisy = dv.fit_gain_vs_divergence([{"divergence": d, "gain": g} for d, g in [(1, 0), (2, 2), (3, 1)]])
    assert noisy["slope"] == pytest.approx(0.5) and noisy["r2"] < 1


def test_fit_needs_two_distinct_divergences():
    fit = dv.fit_gain_vs_divergence([(3.0, 1.0), (3.0, 2.0)])
    assert fit["slope"] is None and fit["n"] == 2
    assert dv.kalavai_line(10.0) == pytest.approx(5.48)


def _report(seed: int, fused_mixed: float, gap: float, acc: dict) -> dict:
    t = _table()
    t.loc["fused soft (per-token router)", "mixed"] = fused_mixed
    return {"seed": seed, "table": {r: t.loc[r].to_dict() for r in t.index}, "oracle_gap_nats": gap,
            "routing_accuracy": {"per-token": acc}}


def test_seed_summary_by_hand():
    accs = [{"code": 0.99, "medical": 0.96, "legal": 0.94}, {"code": 0.97, "medical": 0.98, "legal": 0.95}]
    reps = [_report(0, 4.0, 0.02, accs[0]), _report(3, 4.2, 0.03, accs[1])]
    s = seeds.seed_summary(reps)
    assert list(s.index) == ["seed 0", "seed 3", "mean", "std"]
    best = _table().loc[["code specialist", "medical specialist", "legal specialist"], "mixed"].min()
    gains = [(best - 4.0) / best * 100, (best - 4.2) / best * 100]
    assert s.loc["seed 3", "gain vs best specialist %"] == pytest.approx(gains[1])
    assert s.loc["mean", "gain vs best specialist %"] == pytest.approx(np.mean(gains))
    assert s.loc["std", "oracle gap nats"] == pytest.approx(np.std([0.02, 0.03], ddof=1))
    assert s.loc["seed 0", "routing min %"] == pytest.approx(94.0)  # legal, the weakest domain of seed 0
    assert s.loc["mean", "routing min %"] == pytest.approx(94.5)  # mean of the per-seed minimums
    assert s.loc["mean", "routing medical %"] == pytest.approx(97.0)


def test_seed_summary_adds_the_ceiling_only_where_reports_carry_one():
    acc = {"code": 0.99, "medical": 0.96, "legal": 0.94}
    with_ceiling = {**_report(0, 4.0, 0.02, acc),
                    "routing_ceiling": {"oracle_gap_nats": 0.015,
                                        "routing_accuracy": {"code": 0.995, "medical": 0.97, "legal": 0.955}}}
    s = seeds.seed_summary([with_ceiling, _report(1, 4.1, 0.03, acc)])
    assert s.loc["seed 0", "ceiling gap nats"] == pytest.approx(0.015)
    assert s.loc["seed 0", "ceiling routing min %"] == pytest.approx(95.5)  # legal, the weakest
    assert np.isnan(s.loc["seed 1", "ceiling gap nats"])  # an older report without one: left blank, not zero
    assert "ceiling gap nats" not in seeds.seed_summary([_report(1, 4.1, 0.03, acc)]).columns


def test_seed_summary_rejects_repeated_or_missing_seeds():
    rep = _report(0, 4.0, 0.02, {"code": 1.0, "medical": 1.0, "legal": 1.0})
    with pytest.raises(ValueError, match="repeat"):
        seeds.seed_summary([rep, rep])
    with pytest.raises(ValueError, match="no results"):
        seeds.seed_summary([])
