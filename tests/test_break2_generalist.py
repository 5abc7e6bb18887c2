"""Break 2's generalist setting and target sharpness, on hand-made inputs: scoring more than three
experts (a generalist beside the specialists) and how sharp performance targets are per temperature."""
from __future__ import annotations

import copy

import pytest
import torch

from minigpt.config import DOMAINS, GPTConfig
from minigpt.model import GPT
from minigpt.fusion import FusedModel
from minigpt.scoring import ORACLE_PER_TOKEN, SPECIALIST_ROWS, ScoreRequest, score, token_nll
from minigpt.studies.break2 import GENERALIST as GENERALIST_ROW
from minigpt.studies.break2 import ROUTING_DROP_PP, _band, own_margin, status, target_sharpness

CFG = GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=1, n_embd=8)
K = 1


def _experts(n: int) -> list[GPT]:
    """``n`` models sharing one random trunk (embeddings, head, block 0), each with its own random crown."""
    gen = torch.Generator().manual_seed(0)
    trunk = GPT(CFG)
    out = []
    for _ in range(n):
        m = copy.deepcopy(trunk)
        with torch.no_grad():
            for name, p in m.named_parameters():
                if name in m.crown_parameters(K):
                    p.copy_(0.5 * torch.randn(p.shape, generator=gen))
        out.append(m.eval())
    return out


def _eval_sets() -> dict:
    gen = torch.Generator().manual_seed(1)
    return {d: (torch.randint(0, 11, (3, 6), generator=gen), torch.randint(0, 11, (3, 6), generator=gen))
            for d in DOMAINS}


def test_score_names_a_fourth_expert_and_its_oracles_choose_among_all():
    models, sets = _experts(4), _eval_sets()
    names = (*SPECIALIST_ROWS, GENERALIST_ROW)
    s = score(ScoreRequest(windows=sets, experts=FusedModel(models, K), batch_size=2, names=names))
    for name, m in zip(names, models):
        for d, (x, y) in sets.items():
            assert torch.allclose(s.nll[name][d], token_nll(m(x)[0], y), atol=1e-5)
    for d in DOMAINS:  # the per-token oracle is the minimum over all four experts
        expected = torch.stack([s.nll[n][d] for n in names]).min(0).values
        assert torch.allclose(s.nll[ORACLE_PER_TOKEN][d], expected)
    assert s.specialist_rows == list(SPECIALIST_ROWS) and s.spec_nll("code").shape[0] == 3
    with pytest.raises(ValueError, match="row names"):
        score(ScoreRequest(windows=sets, experts=FusedModel(models, K),
                           batch_size=2))  # four experts, three default names


def test_target_sharpness_falls_with_temperature_and_is_one_hot_when_cold():
    gen = torch.Generator().manual_seed(2)
    losses = {d: 3 + torch.rand(5, 3, generator=gen) for d in DOMAINS}
    sharp = target_sharpness(losses, [1e-4, 0.1, 1.0, 100.0])
    means = [v["mean_max_target"] for v in sharp.values()]
    assert list(sharp) == ["0.0001", "0.1", "1", "100"]
    assert all(a >= b for a, b in zip(means, means[1:]))
    assert means[0] == pytest.approx(1.0, abs=1e-3) and means[-1] == pytest.approx(1 / 3, abs=0.01)
    for v in sharp.values():
        assert v["mean_max_target"] == pytest.approx(sum(v["per_domain"].values()) / len(DOMAINS))


def test_own_margin_is_the_other_specialists_excess_loss():
    base = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.5, 2.5]])  # code windows: own 1, others 2/3 and 1.5/2.5
    losses = {"code": base, "medical": base[:, [1, 0, 2]], "legal": base[:, [1, 2, 0]]}
    m = own_margin(losses)
    for d in DOMAINS:
        assert m[d]["mean_other_minus_own"] == pytest.approx((1.5 + 1.0) / 2)
        assert m[d]["best_other_minus_own"] == pytest.approx((1.0 + 0.5) / 2)


@pytest.mark.parametrize("drop, elsewhere, above, want", [
    (0.0, 0.33, False, "healthy"), (0.0, 0.33, True, "worse"),
    (ROUTING_DROP_PP, 0.33, False, "silent"), (ROUTING_DROP_PP - 1e-9, 0.33, False, "healthy"),
    (5.0, 0.5, False, "silent"), (5.0, 0.4999, True, "worse"), (30.0, 0.9, True, "loud")])
def test_status_needs_a_collapse_sign_and_reads_the_band_from_above(drop, elsewhere, above, want):
    assert status(drop, elsewhere, above) == want


def test_band_is_the_healthy_routers_mean_plus_minus_two_sd():
    mixed = {f"fused soft (healthy #{r} router)": v for r, v in enumerate([4.0, 4.2, 4.1])}
    b = _band(mixed, 3)
    assert b["mean"] == pytest.approx(4.1) and b["sd"] == pytest.approx(0.1)
    assert (b["low"], b["high"]) == (pytest.approx(3.9), pytest.approx(4.3))
