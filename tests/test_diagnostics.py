"""Routing and calibration diagnostics on small hand-made inputs whose answers are worked out by hand."""
from __future__ import annotations

import math

import pytest
import torch

from minigpt.analysis.calibration import calibration, expected_calibration_error, merge_stats, reliability_bins
from minigpt.analysis.routing import (confusion_matrix, dominant_weight, gate_histograms, mean_weights, misrouting,
                                      oracle_agreement, routing_accuracy, weight_on)
from minigpt.config import DOMAINS
from minigpt.plots import plot_confusion, plot_token_routing
from minigpt.studies.ceiling import fit_to_eval_labels


def _w(rows):
    """(1, T, 3) weights for one window from a list of per-token weight triples."""
    return torch.tensor([rows], dtype=torch.float64)


@pytest.fixture
def weights():
    return {
        # code: argmax code, code, legal -> accuracy 2/3
        "code": _w([[0.6, 0.3, 0.1], [0.5, 0.2, 0.3], [0.2, 0.2, 0.6]]),
        # medical: argmax code, medical, medical, medical -> 3/4
        "medical": _w([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.4, 0.3], [0.2, 0.5, 0.3]]),
        # legal: argmax medical, medical -> 0
        "legal": _w([[0.1, 0.5, 0.4], [0.3, 0.4, 0.3]]),
    }


def test_routing_accuracy(weights):
    acc = routing_accuracy(weights)
    assert acc == pytest.approx({"code": 2 / 3, "medical": 3 / 4, "legal": 0.0})


def test_confusion_matrix_rows(weights):
    cm = confusion_matrix(weights)
    assert list(cm.columns) == ["code specialist", "medical specialist", "legal specialist"]
    assert cm.loc["code"].tolist() == pytest.approx([2 / 3, 0, 1 / 3])
    assert cm.loc["medical"].tolist() == pytest.approx([1 / 4, 3 / 4, 0])
    assert cm.loc["legal"].tolist() == pytest.approx([0, 1, 0])
    # the diagonal is the routing accuracy
    acc = routing_accuracy(weights)
    assert [cm.iloc[i, i] for i in range(3)] == pytest.approx(list(acc.values()))


def test_mean_and_dominant_weights(weights):
    mw = mean_weights(weights)
    assert mw.loc["legal"].tolist() == pytest.approx([0.2, 0.45, 0.35])
    dom = dominant_weight(weights)
    assert dom["legal"] == {"specialist": "medical specialist", "weight": pytest.approx(0.45), "is_own": False}
    assert dom["code"]["specialist"] == "code specialist" and dom["code"]["is_own"]
    assert weight_on(weights, 0)["medical"] == pytest.approx((0.7 + 0.1 + 0.3 + 0.2) / 4)


def test_gate_histograms(weights):
    hist = gate_histograms(weights, bins=4)  # bins [0,.25) [.25,.5) [.5,.75) [.75,1]
    assert hist["edges"] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    assert hist["counts"]["code"]["code specialist"] == [1, 0, 2, 0]  # 0.2 | 0.6, 0.5
    assert hist["counts"]["medical"]["medical specialist"] == [1, 1, 1, 1]  # 0.2 | 0.4 | 0.5 | 0.8
    assert all(sum(c) == w.shape[1] for d, w in weights.items() for c in hist["counts"][d].values())


def test_ece_by_hand():
    # 15 bins of width 1/15: 0.9 lands in (13/15, 14/15], 0.6 in (8/15, 9/15]
    conf = torch.tensor([0.9, 0.9, 0.6, 0.6])
    correct = torch.tensor([1.0, 0.0, 1.0, 1.0])
    # bin of 0.9: acc 0.5, conf 0.9 -> 2/4 * 0.4; bin of 0.6: acc 1, conf 0.6 -> 2/4 * 0.4
    assert expected_calibration_error(conf, correct) == pytest.approx(0.4)
    # one bin for everything: |mean conf 0.75 - accuracy 0.75| = 0
    assert expected_calibration_error(conf, correct, n_bins=1) == pytest.approx(0.0)
    # a perfectly calibrated set in one bin
    assert expected_calibration_error(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0])) == pytest.approx(0.0)


def test_reliability_bins_by_hand():
    # four tokens split over two domains as Scores keeps them; 0.9 lands in bin 13 (13/15, 14/15],
    # 0.55 in bin 8 (8/15, 9/15]
    per_domain = {"code": {"confidence": torch.tensor([0.9, 0.55]), "correct": torch.tensor([1.0, 1.0])},
                  "legal": {"confidence": torch.tensor([0.9, 0.55]), "correct": torch.tensor([0.0, 1.0])}}
    assert merge_stats(per_domain)["confidence"].tolist() == pytest.approx([0.9, 0.55, 0.9, 0.55])
    bins = reliability_bins(per_domain)  # per-domain stats are merged first
    assert len(bins) == 15 and bins["count"].sum() == 4
    assert bins.loc[13, ["confidence", "accuracy", "count"]].tolist() == pytest.approx([0.9, 0.5, 2])
    assert bins.loc[8, ["confidence", "accuracy", "count"]].tolist() == pytest.approx([0.55, 1.0, 2])
    assert bins.loc[0, "count"] == 0 and math.isnan(bins.loc[0, "accuracy"])  # an empty bin
    assert (bins.loc[8, "lo"], bins.loc[8, "hi"]) == pytest.approx((8 / 15, 9 / 15))
    ece = ((bins["accuracy"] - bins["confidence"]).abs() * bins["count"]).sum() / bins["count"].sum()
    # the bins are the ECE's: it is their count-weighted distance from the diagonal, 2/4 * 0.4 + 2/4 * 0.45
    assert ece == pytest.approx(0.425) == expected_calibration_error(torch.tensor([0.9, 0.55, 0.9, 0.55]),
                                                                      torch.tensor([1.0, 1.0, 0.0, 1.0]))


def test_calibration_from_logits():
    # two tokens over a 2-word vocabulary: p(top) = 0.9 for both; the first is right, the second wrong
    z = math.log(9.0)
    logits = torch.tensor([[[z, 0.0], [0.0, z]]])
    targets = torch.tensor([[0, 0]])
    cal = calibration(logits, targets)
    assert cal["mean_max_prob"] == pytest.approx(0.9)
    assert cal["accuracy"] == pytest.approx(0.5)
    assert cal["ece"] == pytest.approx(0.4)
    assert cal["logit_scale"] == pytest.approx(z / 2)  # population std of (z, 0)
    assert cal["n_tokens"] == 2
    # scaling the logits changes the scale and the confidence, not the argmax
    hot = calibration(3 * logits, targets)
    assert hot["accuracy"] == cal["accuracy"] and hot["logit_scale"] == pytest.approx(3 * z / 2)
    assert hot["mean_max_prob"] > cal["mean_max_prob"]


def test_misrouting_and_oracle_agreement():
    # one legal window of 2 tokens, routed to code then legal
    weights = {"legal": _w([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])}
    # per-token losses (N=3, n=1, T=2): code is best on this window on average
    nll = {"legal": torch.tensor([[[1.0, 1.0]], [[3.0, 3.0]], [[2.0, 1.6]]])}
    mis = misrouting(weights, nll)["legal"]
    assert mis["misrouted"] == pytest.approx(0.5)
    assert mis["chosen_is_window_best"] == pytest.approx(1.0)  # the misrouted token went to the window's best
    assert mis["excess_nats"] == pytest.approx(1.0 - 2.0)  # code's loss minus legal's at that token
    assert oracle_agreement(weights, nll)["legal"] == pytest.approx(0.5)


def test_token_routing_plot_accepts_both_router_shapes(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    plot_token_routing(torch.rand(16, 3).softmax(-1), labels=torch.zeros(16, dtype=torch.long), path=tmp_path / "a.png")
    plot_token_routing(torch.tensor([0.2, 0.5, 0.3]), path=tmp_path / "b.png")
    plot_confusion(confusion_matrix({"code": _w([[0.6, 0.3, 0.1]])}), path=tmp_path / "c.png")
    assert all((tmp_path / f"{n}.png").stat().st_size > 0 for n in "abc")


def _states(separable: bool, n: int = 24, T: int = 12, C: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Trunk-like states per domain: a domain-specific mean direction plus noise, or one shared set."""
    gen = torch.Generator().manual_seed(seed)
    if not separable:
        shared = torch.randn(n, T, C, generator=gen)
        return {d: shared.clone() for d in DOMAINS}
    return {d: 3.0 * torch.eye(C)[i] + torch.randn(n, T, C, generator=gen) for i, d in enumerate(DOMAINS)}


@pytest.mark.parametrize("kind", ["per_token", "last_token"])
def test_fit_to_eval_labels_learns_separable_states(kind):
    from minigpt.router import ROUTERS

    states = _states(separable=True)
    torch.manual_seed(0)
    router = ROUTERS[kind](8, 3)
    weights = lambda: {d: router(s).detach() for d, s in states.items()}  # noqa: E731
    before = routing_accuracy(weights())
    assert fit_to_eval_labels(router, states, steps=150) is router and not router.training
    after = routing_accuracy(weights())
    assert min(after.values()) > 0.9, after
    assert sum(after.values()) > sum(before.values()) + 0.5, (before, after)


def test_fit_to_eval_labels_cannot_separate_identical_states():
    from minigpt.router import CausalRouter

    states = _states(separable=False)
    torch.manual_seed(0)
    router = fit_to_eval_labels(CausalRouter(8, 3), states, steps=50)
    acc = routing_accuracy({d: router(s).detach() for d, s in states.items()})
    # the same input gives the same argmax whatever the label, so each token counts for one domain only
    assert sum(acc.values()) == pytest.approx(1.0)


def test_fit_to_eval_labels_rejects_bad_input():
    from minigpt.router import CausalRouter

    with pytest.raises(ValueError, match="steps must be >= 1"):
        fit_to_eval_labels(CausalRouter(8, 3), _states(True), steps=0)
    with pytest.raises(ValueError, match="no trunk states"):
        fit_to_eval_labels(CausalRouter(8, 3), {})
    with pytest.raises(ValueError, match="unknown domains"):
        fit_to_eval_labels(CausalRouter(8, 3), {"poetry": torch.zeros(2, 4, 8)})


def _fit_step_by_step(router, states, steps, lr=1e-2):
    """The fit as it was before its features were computed once: the whole router at every step."""
    import torch.nn.functional as F

    from minigpt.router import router_loss

    x = torch.cat(list(states.values()))
    labels = torch.cat([torch.full((s.shape[0],), DOMAINS.index(d)) for d, s in states.items()])
    opt = torch.optim.Adam(router.parameters(), lr=lr)
    for _ in range(steps):
        w = router(x)
        loss = router_loss(w, F.one_hot(labels, w.shape[-1]).to(w.dtype))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return router.eval()


@pytest.mark.parametrize("kind", ["per_token", "last_token"])
def test_fit_with_features_computed_once_is_the_step_by_step_fit(kind):
    from minigpt.router import ROUTERS

    states = _states(separable=True)
    torch.manual_seed(1)
    a = ROUTERS[kind](8, 3)
    b = ROUTERS[kind](8, 3)
    b.load_state_dict(a.state_dict())
    fit_to_eval_labels(a, states, steps=20)
    _fit_step_by_step(b, states, steps=20)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


def test_fit_refuses_a_router_that_is_not_softmax_of_a_linear_map():
    from minigpt.router import CausalRouter

    class Sharpened(CausalRouter):  # squares the weights after the softmax: features alone do not give them
        def forward(self, shared_h):
            w = super().forward(shared_h) ** 2
            return w / w.sum(-1, keepdim=True)

    with pytest.raises(TypeError, match="not softmax\\(proj\\(features\\)\\)"):
        fit_to_eval_labels(Sharpened(8, 3), _states(True), steps=1)
