"""Prediction fusion, weight averaging and FusedModel, checked against numbers worked out by hand."""
from __future__ import annotations

import contextlib
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from minigpt.fusion import (FusedModel, average_weights, broadcast_weights, fuse_logits, fuse_probs,
                            hard_weights, uniform_weights)
from minigpt.model import GPT
from minigpt.router import CausalRouter, LinearRouter

# Two specialists (N=2), vocabulary V=3, one sequence of T=2 tokens, the same logits at both positions:
#   specialist 1: [1, 2, 3]      specialist 2: [3, 0, -3]
L1 = torch.tensor([[[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]])  # (B=1, T=2, V=3)
L2 = torch.tensor([[[3.0, 0.0, -3.0], [3.0, 0.0, -3.0]]])


def test_fuse_logits_per_sequence_by_hand():
    # w = (0.25, 0.75): 0.25*[1,2,3] + 0.75*[3,0,-3] = [0.25+2.25, 0.5+0, 0.75-2.25] = [2.5, 0.5, -1.5]
    fused = fuse_logits(torch.tensor([[0.25, 0.75]]), [L1, L2])
    assert fused.shape == (1, 2, 3)
    want = torch.tensor([2.5, 0.5, -1.5])
    torch.testing.assert_close(fused[0, 0], want)
    torch.testing.assert_close(fused[0, 1], want)  # per-sequence weights: same mix at every position


def test_fuse_logits_per_sequence_differs_per_row():
    # row 0 as above; row 1 has w = (0, 1), so it is specialist 2's logits untouched
    both = [torch.cat([L1, L1]), torch.cat([L2, L2])]  # (B=2, T=2, V)
    fused = fuse_logits(torch.tensor([[0.25, 0.75], [0.0, 1.0]]), both)
    torch.testing.assert_close(fused[0, 0], torch.tensor([2.5, 0.5, -1.5]))
    torch.testing.assert_close(fused[1], L2[0])


def test_fuse_logits_per_token_by_hand():
    # t=0: w=(0.25, 0.75) -> [2.5, 0.5, -1.5];  t=1: w=(0.5, 0.5) -> [(1+3)/2, (2+0)/2, (3-3)/2] = [2, 1, 0]
    w = torch.tensor([[[0.25, 0.75], [0.5, 0.5]]])  # (B=1, T=2, N=2)
    fused = fuse_logits(w, torch.stack([L1, L2]))  # stacked (N, B, T, V) input works too
    torch.testing.assert_close(fused, torch.tensor([[[2.5, 0.5, -1.5], [2.0, 1.0, 0.0]]]))


def test_per_sequence_equals_per_token_repeated():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 5, 7, generator=gen)  # (N, B, T, V)
    w = torch.softmax(torch.randn(4, 3, generator=gen), -1)
    per_token = w.unsqueeze(1).expand(4, 5, 3)
    torch.testing.assert_close(fuse_logits(w, logits), fuse_logits(per_token, logits))
    torch.testing.assert_close(fuse_probs(w, logits), fuse_probs(per_token, logits))


# fuse_probs: logits are log-probabilities plus a per-specialist constant (softmax must remove it):
#   p1 = [0.5, 0.25, 0.25]   p2 = [0.1, 0.2, 0.7]
P1, P2 = torch.tensor([0.5, 0.25, 0.25]), torch.tensor([0.1, 0.2, 0.7])


def test_fuse_probs_by_hand():
    logits = torch.stack([(P1.log() + 3.0).expand(1, 2, 3), (P2.log() - 1.0).expand(1, 2, 3)])
    # t=0: w=(0.2, 0.8): 0.2*p1 + 0.8*p2 = [0.10+0.08, 0.05+0.16, 0.05+0.56] = [0.18, 0.21, 0.61]
    # t=1: w=(0.5, 0.5): (p1 + p2)/2     = [0.30, 0.225, 0.475]
    w = torch.tensor([[[0.2, 0.8], [0.5, 0.5]]])
    out = fuse_probs(w, logits)
    want = torch.tensor([[[0.18, 0.21, 0.61], [0.30, 0.225, 0.475]]]).log()
    torch.testing.assert_close(out, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(1, 2))  # a distribution


@pytest.mark.parametrize("expert", [0, 1, 2])
def test_one_hot_weights_reproduce_that_specialist(expert):
    gen = torch.Generator().manual_seed(expert)
    logits = 3 * torch.randn(3, 2, 4, 11, generator=gen)
    w = F.one_hot(torch.full((2, 4), expert), 3).float()  # per token
    assert torch.equal(fuse_probs(w, logits), F.log_softmax(logits[expert], -1))
    assert torch.equal(fuse_logits(w, logits), logits[expert])
    assert torch.equal(fuse_probs(w[:, 0], logits), F.log_softmax(logits[expert], -1))  # per sequence


def test_fuse_probs_survives_tiny_probabilities():
    # a token one specialist gives ~e^-200 must not become log(0) = -inf
    logits = torch.tensor([[[[0.0, -200.0]]], [[[0.0, -300.0]]]])
    out = fuse_probs(torch.tensor([[0.5, 0.5]]), logits)
    assert torch.isfinite(out).all()
    assert abs(out[0, 0, 1].item() - (-200.0 + math.log(0.5))) < 1e-3


def test_hard_weights_one_hot_on_argmax():
    w = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    assert torch.equal(hard_weights(w), torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    w3 = torch.tensor([[[0.1, 0.1, 0.8], [0.4, 0.35, 0.25]]])  # (B, T, N)
    assert torch.equal(hard_weights(w3), torch.tensor([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]]))
    assert hard_weights(w3).dtype == w3.dtype


def test_uniform_weights():
    w = uniform_weights(5, 4)
    assert w.shape == (5, 4)
    assert torch.equal(w, torch.full((5, 4), 0.25))
    # uniform logit fusion is the plain mean of the logits
    logits = torch.randn(4, 5, 3, 6)
    torch.testing.assert_close(fuse_logits(w, logits), logits.mean(0))


def test_broadcast_weights_shapes():
    assert broadcast_weights(torch.ones(2, 3), 3).shape == (3, 2, 1, 1)
    assert broadcast_weights(torch.ones(2, 5, 3), 3).shape == (3, 2, 5, 1)
    w = torch.arange(6.0).view(2, 3)  # expert n of row b is w[b, n]
    assert broadcast_weights(w, 3)[2, 1, 0, 0] == w[1, 2]


def test_wrong_number_of_weights_raises():
    logits = torch.randn(3, 2, 4, 5)
    for fuse in (fuse_logits, fuse_probs):
        with pytest.raises(ValueError, match="weights for 2 specialists but 3 are being fused"):
            fuse(torch.ones(2, 2) / 2, logits)
        with pytest.raises(ValueError, match="weights for 4 specialists but 3 are being fused"):
            fuse(torch.ones(2, 4, 4) / 4, logits)


# -- weight averaging ---------------------------------------------------------------------------


def _model(cfg, seed):
    torch.manual_seed(seed)
    return GPT(cfg).eval()


def test_averaging_identical_models_is_identity(tiny_config):
    m = _model(tiny_config, 0)
    for copies in (2, 3):
        avg = average_weights([copy.deepcopy(m) for _ in range(copies)])
        for name, p in m.named_parameters():
            torch.testing.assert_close(dict(avg.named_parameters())[name], p, atol=1e-7, rtol=0)
    assert all(torch.equal(a, b) for a, b in zip(average_weights([m, m]).parameters(), m.parameters()))


def test_averaging_two_models_gives_midpoint(tiny_config, tiny_ids):
    a, b = _model(tiny_config, 0), _model(tiny_config, 1)
    a_before = copy.deepcopy(a)
    avg = average_weights([a, b])
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    differing = 0
    for name, p in avg.named_parameters():
        torch.testing.assert_close(p, (pa[name] + pb[name]) / 2, atol=1e-7, rtol=0)
        differing += not torch.equal(pa[name], pb[name])
    assert differing > 0  # the two inputs really were different models
    assert avg is not a and all(torch.equal(x, y) for x, y in zip(a.parameters(), a_before.parameters()))
    assert avg.lm_head.weight is avg.transformer.wte.weight  # still tied after the copy
    avg(tiny_ids)


def test_averaging_only_named_parameters(tiny_config):
    a, b = _model(tiny_config, 0), _model(tiny_config, 1)
    names = set(a.crown_parameters(2))
    avg = dict(average_weights([a, b], names=names).named_parameters())
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    for name in pa:
        want = (pa[name] + pb[name]) / 2 if name in names else pa[name]
        torch.testing.assert_close(avg[name], want, atol=1e-7, rtol=0)


# -- FusedModel ---------------------------------------------------------------------------------


@pytest.fixture
def specialists(tiny_config):
    """Three copies of one base whose crowns (blocks >= K and ln_f) were moved apart; trunk shared."""
    base, k = _model(tiny_config, 0), 1
    specs = []
    for i in range(3):
        m = copy.deepcopy(base)
        gen = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for p in m.crown_parameters(k).values():
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
        specs.append(m)
    return base, specs, k


# FusedModel has two engines: the batched crowns (switched on, used when no gradient reaches the crowns)
# and the per-crown loop (the default, and always when gradients must reach the crowns). Same numbers.
PATHS = {"no_grad": torch.no_grad, "grad": contextlib.nullcontext}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_expert_logits_equal_each_specialists_forward(specialists, tiny_ids, path):
    base, specs, k = specialists
    fused = FusedModel(specs, k, batched=True)
    with PATHS[path]():
        assert (fused.engine() is None) == (path == "grad")
        h, logits = fused.expert_logits(tiny_ids)
    assert h.shape == (*tiny_ids.shape, base.config.n_embd)
    assert logits.shape == (3, *tiny_ids.shape, base.config.vocab_size)
    torch.testing.assert_close(h, base.trunk(tiny_ids, k), atol=0, rtol=0)
    for n, m in enumerate(specs):
        torch.testing.assert_close(logits[n], m(tiny_ids)[0], atol=1e-6, rtol=0)
    assert not torch.allclose(logits[0], logits[1])  # the crowns really differ


@pytest.mark.parametrize("path", sorted(PATHS))
def test_fused_forward_matches_fusion_functions(specialists, tiny_ids, path):
    _, specs, k = specialists
    gen = torch.Generator().manual_seed(0)
    w = torch.softmax(torch.randn(*tiny_ids.shape, 3, generator=gen), -1)
    with torch.no_grad():
        _, logits = FusedModel(specs, k).expert_logits(tiny_ids)
    with PATHS[path]():
        by_logits = FusedModel(specs, k, batched=True)(tiny_ids, weights=w)[0]
        by_probs = FusedModel(specs, k, fusion="probs", batched=True)(tiny_ids, weights=w)[0]
        by_seq = FusedModel(specs, k, batched=True)(tiny_ids, weights=w[:, 0])[0]  # (B, N) per-sequence weights
    torch.testing.assert_close(by_logits, F.log_softmax(fuse_logits(w, logits), -1), atol=1e-5, rtol=0)
    torch.testing.assert_close(by_probs, fuse_probs(w, logits), atol=1e-5, rtol=0)
    torch.testing.assert_close(by_seq, F.log_softmax(fuse_logits(w[:, 0], logits), -1), atol=1e-5, rtol=0)
    assert not torch.allclose(by_logits, by_probs)


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("router_cls", [LinearRouter, CausalRouter])
def test_fused_forward_uses_the_router(specialists, tiny_ids, router_cls, path):
    _, specs, k = specialists
    torch.manual_seed(0)
    router = router_cls(specs[0].config.n_embd, 3)
    fused = FusedModel(specs, k, router, batched=True)
    with PATHS[path]():
        h = fused.trunks(tiny_ids)[0]
        torch.testing.assert_close(fused(tiny_ids)[0], fused(tiny_ids, weights=router(h))[0])
        # and not some input-independent mix
        assert not torch.allclose(fused(tiny_ids)[0], fused(tiny_ids, weights=uniform_weights(2, 3))[0], atol=1e-4)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_router_with_wrong_number_of_outputs_raises(specialists, tiny_ids, path):
    _, specs, k = specialists
    fused = FusedModel(specs, k, LinearRouter(specs[0].config.n_embd, 2))
    with PATHS[path](), pytest.raises(ValueError, match="2 specialists but 3"):
        fused(tiny_ids)


def test_unknown_fusion_raises(specialists):
    _, specs, k = specialists
    with pytest.raises(ValueError, match="unknown fusion 'geometric'; choose 'logits' or 'probs'"):
        FusedModel(specs, k, fusion="geometric")
