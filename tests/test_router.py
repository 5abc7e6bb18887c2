"""Routers, their targets and their training loop, on hand-made tensors (no corpus, no trained model)."""
from __future__ import annotations

import math
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from minigpt.config import DOMAINS, RouterConfig
from minigpt.router import (ROUTERS, CausalRouter, LinearRouter, expert_window_losses, performance_targets, router_loss,
                            train_router)
from minigpt.router_pool import RouterPool, build_pool, train_router_on_pool

LOSSES = torch.tensor([[1.0, 0.5, 2.0],
                       [3.0, 2.9, 0.1],
                       [0.7, 0.2, 0.25]])  # best specialist per row: 1, 2, 1


def test_performance_targets_cold_is_one_hot_on_best():
    t = performance_targets(LOSSES, temp=1e-3)
    want = torch.nn.functional.one_hot(LOSSES.argmin(-1), 3).float()
    torch.testing.assert_close(t, want, atol=1e-6, rtol=0)


def test_performance_targets_hot_is_uniform():
    t = performance_targets(LOSSES, temp=1e4)
    torch.testing.assert_close(t, torch.full_like(LOSSES, 1 / 3), atol=1e-3, rtol=0)


@pytest.mark.parametrize("temp", [1e-3, 0.1, 1.0, 1e4])
def test_performance_targets_are_distributions_favouring_low_loss(temp):
    t = performance_targets(LOSSES, temp)
    torch.testing.assert_close(t.sum(-1), torch.ones(3))
    # the closed form exp(-(L - L_min) / temp) / sum, in float64
    e = torch.exp(-(LOSSES.double() - LOSSES.double().min(-1, keepdim=True).values) / temp)
    torch.testing.assert_close(t.double(), e / e.sum(-1, keepdim=True), atol=1e-6, rtol=0)
    # lower loss never gets less weight
    order = LOSSES.argsort(-1)
    assert (t.gather(-1, order).diff(dim=-1) <= 1e-7).all()


def test_performance_targets_by_hand():
    # losses (0, ln 2) at temp 1: softmax(-(0, ln 2)) = (1, 1/2) / (3/2) = (2/3, 1/3)
    t = performance_targets(torch.tensor([0.0, math.log(2.0)]), 1.0)
    torch.testing.assert_close(t, torch.tensor([2 / 3, 1 / 3]))
    # also for (B, T, N) losses
    assert performance_targets(torch.zeros(2, 5, 3), 0.1).shape == (2, 5, 3)


@pytest.mark.parametrize("temp", [0.0, -1.0])
def test_performance_targets_nonpositive_temp_raises(temp):
    with pytest.raises(ValueError, match="temperature"):
        performance_targets(LOSSES, temp)


def test_router_loss_by_hand():
    # row 1: targets (1, 0, 0),     weights (0.5, 0.25, 0.25) -> -ln 0.5 = 0.693147
    # row 2: targets (0, 0.5, 0.5), weights (0.2, 0.3, 0.5)   -> -(0.5 ln 0.3 + 0.5 ln 0.5) = 0.948560
    # mean over rows: (0.693147 + 0.948560) / 2 = 0.820854
    w = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]])
    t = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    assert abs(router_loss(w, t).item() - 0.820854) < 1e-5


def test_router_loss_is_minimised_at_the_targets():
    gen = torch.Generator().manual_seed(0)
    targets = torch.softmax(torch.randn(4, 3, generator=gen), -1)
    at_targets = router_loss(targets, targets)
    for _ in range(50):  # Gibbs: cross-entropy >= entropy, with equality only at w == targets
        w = torch.softmax(torch.randn(4, 3, generator=gen), -1)
        assert router_loss(w, targets) > at_targets
    # through a softmax router the gradient is (softmax(z) - targets) / B (closed form of the mean
    # cross-entropy): not zero away from the targets, zero at them
    z = torch.randn(4, 3, generator=gen).requires_grad_(True)
    router_loss(torch.softmax(z, -1), targets).backward()
    want = (torch.softmax(z.detach(), -1) - targets) / 4
    assert want.abs().max() > 1e-2
    torch.testing.assert_close(z.grad, want, atol=1e-6, rtol=0)
    z = targets.log().clone().requires_grad_(True)
    router_loss(torch.softmax(z, -1), targets).backward()
    assert z.grad.abs().max() < 1e-6


def test_linear_router_reads_only_the_last_token():
    torch.manual_seed(0)
    router = LinearRouter(8, 3)
    h = torch.randn(4, 6, 8)
    w = router(h)
    assert w.shape == (4, 3)
    torch.testing.assert_close(w.sum(-1), torch.ones(4))
    earlier_changed = h.clone()
    earlier_changed[:, :-1] = torch.randn(4, 5, 8)
    assert torch.equal(router(earlier_changed), w)
    last_changed = h.clone()
    last_changed[:, -1] = torch.randn(4, 8)
    assert not torch.allclose(router(last_changed), w)


def test_causal_router_never_looks_ahead():
    torch.manual_seed(0)
    router = CausalRouter(8, 3)
    B, T = 3, 7
    h = torch.randn(B, T, 8)
    w = router(h)
    assert w.shape == (B, T, 3)
    torch.testing.assert_close(w.sum(-1), torch.ones(B, T))
    for t in range(T):
        later_changed = h.clone()
        later_changed[:, t + 1:] = torch.randn(B, T - t - 1, 8)
        w2 = router(later_changed)
        torch.testing.assert_close(w2[:, :t + 1], w[:, :t + 1], atol=1e-6, rtol=0)
        now_changed = h.clone()
        now_changed[:, t] += torch.randn(B, 8)  # ...but it does read position t itself
        assert not torch.allclose(router(now_changed)[:, t], w[:, t])



@pytest.mark.parametrize("decay", [0.0, 0.5, 0.9])
def test_causal_router_reads_a_decaying_average(decay):
    # m_t = decay * m_(t-1) + (1 - decay) * h_t, divided by (1 - decay^(t+1)) so early positions
    # are a true average (weights sum to 1) rather than biased toward zero
    torch.manual_seed(0)
    router = CausalRouter(8, 3, decay=decay)
    h = torch.randn(2, 6, 8)
    m, summaries = torch.zeros(2, 8), []
    for t in range(h.shape[1]):
        h_t = (h[:, t] - h[:, t].mean(-1, keepdim=True)) / (h[:, t].var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
        m = decay * m + (1 - decay) * h_t
        summaries.append(m / (1 - decay ** (t + 1)))
    expected = torch.softmax(router.proj(torch.stack(summaries, 1)), -1)
    torch.testing.assert_close(router(h), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", sorted(ROUTERS))
def test_router_reads_the_direction_of_the_hidden_state_not_its_size(kind):
    # the residual stream's scale differs by position and by base; the routers normalise it away
    torch.manual_seed(0)
    router = ROUTERS[kind](8, 3)
    h = torch.randn(2, 6, 8)
    torch.testing.assert_close(router(3.0 * h + 0.5), router(h), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(router(h.flip(-1)), router(h))  # ...but the direction matters


def test_causal_router_forgets_an_old_domain():
    # after a switch, the decaying average reaches the new state; a plain running mean would sit halfway
    router = CausalRouter(2, 2, decay=0.5)
    with torch.no_grad():
        router.proj.weight.copy_(torch.eye(2) * 10)
        router.proj.bias.zero_()
    h = torch.cat([torch.tensor([1.0, 0.0]).expand(1, 20, 2), torch.tensor([0.0, 1.0]).expand(1, 20, 2)], 1)
    w = router(h)
    assert w[0, 19].argmax() == 0 and w[0, 39].argmax() == 1 and w[0, 39, 1] > 0.99
    with pytest.raises(ValueError, match="decay must be in"):
        CausalRouter(2, 2, decay=1.0)

# -- training on a toy problem ------------------------------------------------------------------

C, N, V, T = 8, 3, 5, 6
CENTERS = 3.0 * torch.randn(N, C, generator=torch.Generator().manual_seed(42))


def _toy_batch(gen: torch.Generator, B: int = 32):
    """Hidden states from 3 well-separated clusters; specialist ``label`` is the one that predicts y.

    ``x`` *is* the hidden state here, so ``expert_logits`` needs no model.
    """
    labels = torch.randint(0, N, (B,), generator=gen)
    h = CENTERS[labels].unsqueeze(1) + torch.randn(B, T, C, generator=gen)
    y = torch.randint(0, V, (B, T), generator=gen)
    logits = torch.randn(N, B, T, V, generator=gen)
    own = logits[labels, torch.arange(B)]  # (B, T, V): the window's own specialist
    own.scatter_add_(-1, y.unsqueeze(-1), torch.full((B, T, 1), 6.0))
    logits[labels, torch.arange(B)] = own
    return h, y, labels, logits


class _ToyExperts:
    """``next_batch`` / ``expert_logits`` pair for :func:`train_router`: the logits of the batch just drawn."""

    def next_batch(self, gen):
        self.h, y, labels, self.logits = _toy_batch(gen)
        return self.h, y, labels

    def expert_logits(self, x):
        assert x is self.h
        return x, self.logits


def _accuracy(router, seed=123):
    h, _, labels, _ = _toy_batch(torch.Generator().manual_seed(seed), B=256)
    with torch.no_grad():
        w = router(h)
    if w.dim() == 3:
        labels = labels.unsqueeze(1).expand(-1, w.shape[1])
    return (w.argmax(-1) == labels).float().mean().item()


def test_toy_batch_is_what_it_claims():
    h, y, labels, logits = _toy_batch(torch.Generator().manual_seed(0))
    nll = -torch.log_softmax(logits, -1).gather(-1, y.expand(N, -1, -1).unsqueeze(-1)).squeeze(-1)
    assert (nll.mean(-1).argmin(0) == labels).all()


@pytest.mark.parametrize("target", ["domain", "performance", "lm"])
@pytest.mark.parametrize("kind", sorted(ROUTERS))
def test_train_router_learns_separable_clusters(kind, target):
    torch.manual_seed(0)
    router = ROUTERS[kind](C, N)
    assert _accuracy(router) < 0.7  # untrained: about chance
    cfg = RouterConfig(steps=80, batch_size=32, lr=3e-2, target=target, temp=0.1)
    toy = _ToyExperts()
    history = train_router(router, toy.next_batch, toy.expert_logits, cfg, seed=0)
    assert len(history) == cfg.steps
    assert sum(history[-10:]) < sum(history[:10])
    assert not router.training
    assert _accuracy(router) > 0.9


def test_train_router_is_reproducible():
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        router, toy = CausalRouter(C, N), _ToyExperts()
        train_router(router, toy.next_batch, toy.expert_logits,
                     RouterConfig(steps=10, target="domain"), seed=7)
        states.append(router.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_unknown_target_raises():
    with pytest.raises(ValueError, match="domain, performance, lm"):
        RouterConfig(target="oracle")  # caught when the config is built...
    # ...and by train_router itself, for a config that skipped that check
    cfg = SimpleNamespace(**{**asdict(RouterConfig(steps=1)), "target": "oracle"})
    toy = _ToyExperts()
    with pytest.raises(ValueError, match="domain, performance, lm"):
        train_router(CausalRouter(C, N), toy.next_batch, toy.expert_logits, cfg, seed=0)


def _unnormalized(shared_h):
    return shared_h


def test_router_code_fingerprint_follows_the_helper_the_routers_call(monkeypatch):
    # cached routers are keyed by this fingerprint: editing `normalized` alone must retrain them
    import minigpt.router as router_mod

    before = router_mod.router_code_fingerprint()
    assert router_mod.router_code_fingerprint() == before  # stable between calls
    monkeypatch.setattr(router_mod, "normalized", _unnormalized)
    assert router_mod.router_code_fingerprint() != before


def test_router_loss_applies_sequence_targets_at_every_position():
    gen = torch.Generator().manual_seed(0)
    w = torch.softmax(torch.randn(2, 5, 3, generator=gen), -1)  # (B, T, N) per-token weights
    t = torch.softmax(torch.randn(2, 3, generator=gen), -1)  # (B, N) one target per sequence
    expanded = t.unsqueeze(1).expand(-1, 5, -1)
    assert router_loss(w, t).item() == pytest.approx(router_loss(w, expanded).item())
    # and it is the mean over positions of the per-position loss, not the loss of one position
    assert router_loss(w, t).item() == pytest.approx(sum(router_loss(w[:, i], t).item() for i in range(5)) / 5)


# -- training on a precomputed pool (minigpt.router_pool) ------------------------------------------
def _toy_pool(per_domain: int = 64) -> RouterPool:
    """The toy problem as a pool: domain by domain, each window's hidden states and expert losses."""
    gen = torch.Generator().manual_seed(5)
    h = torch.cat([CENTERS[d] + torch.randn(per_domain, T, C, generator=gen) for d in range(N)])
    losses = 1.0 + 0.1 * torch.rand(N * per_domain, N, generator=gen)
    losses[torch.arange(N * per_domain), torch.arange(N).repeat_interleave(per_domain)] -= 0.5  # own expert best
    return RouterPool(h, losses, per_domain)


@pytest.mark.parametrize("target", ["domain", "performance"])
@pytest.mark.parametrize("kind", sorted(ROUTERS))
def test_router_trained_on_a_pool_learns_the_clusters(kind, target):
    torch.manual_seed(0)
    router = ROUTERS[kind](C, N)
    cfg = RouterConfig(steps=80, batch_size=32, lr=3e-2, target=target, temp=0.1)
    history = train_router_on_pool(router, _toy_pool(), cfg, seed=0)
    assert len(history) == cfg.steps and sum(history[-10:]) < sum(history[:10])
    assert _accuracy(router) > 0.9


def test_pool_batches_follow_the_domain_mix():
    pool = _toy_pool(per_domain=10)
    h, losses, labels = pool.batch(400, torch.Generator().manual_seed(0), mix=(0.0, 1.0, 0.0))
    assert (labels == 1).all()
    assert torch.equal(losses.argmin(-1), labels)  # rows come from the medical block of the pool
    _, _, labels = pool.batch(3000, torch.Generator().manual_seed(0), mix=(0.6, 0.2, 0.2))
    share = torch.bincount(labels, minlength=N).double() / 3000
    assert abs(share[0] - 0.6) < 0.03 and abs(share[2] - 0.2) < 0.03


def test_pool_refuses_lm_targets():
    with pytest.raises(ValueError, match="lm targets need the fused logits"):
        train_router_on_pool(CausalRouter(C, N), _toy_pool(8), RouterConfig(steps=1, target="lm"), seed=0)


def test_build_pool_keeps_each_experts_window_loss():
    """The pool's losses are what the full path computes for performance targets, window by window."""
    vocab = 700  # stream d holds tokens 200 d .. 200 d + 199 in order: a window's first token names its domain
    table = torch.randn(N, vocab, vocab, generator=torch.Generator().manual_seed(1))  # expert i's logits after a token
    streams = SimpleNamespace(get=lambda d, split: np.arange(200, dtype=np.int32) + 200 * DOMAINS.index(d),
                              domains=lambda split: list(DOMAINS))

    def inputs(x):  # (router input, expert logits) of a deterministic fake expert set
        return x.unsqueeze(-1).float().expand(-1, -1, C), torch.stack([table[i][x] for i in range(N)])

    pool = build_pool(streams, inputs, per_domain=5, T=T, seed=0, batch_size=4)
    assert pool.h.shape == (5 * len(DOMAINS), T, C) and pool.losses.shape == (5 * len(DOMAINS), N)
    first = pool.h[:, 0, 0].long()  # each pooled window's first token, in [domain offset, +200)
    assert ((first // 200) == torch.arange(len(DOMAINS)).repeat_interleave(5)).all()
    x = first.unsqueeze(1) + torch.arange(T)
    assert torch.allclose(pool.losses, expert_window_losses(inputs(x)[1], x + 1), atol=1e-6)
