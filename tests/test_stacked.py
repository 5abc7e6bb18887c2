"""Batched crowns (minigpt.stacked) give the per-crown loop's logits and fusions.

Specialists here share a random trunk and get crowns perturbed in different directions
(LayerNorm gains and biases too, so the folding of LayerNorm into the next matmul is exercised).
"""
from __future__ import annotations

import copy

import pytest
import torch

from minigpt.config import GPTConfig
from minigpt.fusion import FusedModel, fuse_logits, fuse_probs, uniform_weights
from minigpt.model import GPT
from minigpt.stacked import IMPLS, StackedCrowns

CFG = GPTConfig(vocab_size=97, block_size=16, n_layer=4, n_head=2, n_embd=32)
N, B, T = 3, 2, 16
ATOL = 1e-5


def make_specialists(cfg: GPTConfig = CFG, k: int = 2, n: int = N, seed: int = 0) -> list[GPT]:
    torch.manual_seed(seed)
    base = GPT(cfg)
    specs = []
    for _ in range(n):
        m = copy.deepcopy(base)
        with torch.no_grad():
            for p in m.crown_parameters(k).values():
                p.add_(0.2 * torch.randn_like(p))
        specs.append(m.eval())
    return specs


def loop_logits(specs: list[GPT], idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    h = specs[0].trunk(idx, k)
    return h, torch.stack([m.crown(h, k) for m in specs])


def router_weights(kind: str, gen: torch.Generator) -> torch.Tensor:
    shape = (B, T, N) if kind == "per_token" else (B, N)
    return torch.softmax(2 * torch.randn(shape, generator=gen), dim=-1)


@pytest.fixture(scope="module")
def idx() -> torch.Tensor:
    return torch.randint(0, CFG.vocab_size, (B, T), generator=torch.Generator().manual_seed(1))


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # vmap's attention fallback
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("k", [0, 1, 2, 3, 4])
@torch.no_grad()
def test_stacked_logits_match_each_crown(idx, impl, k):
    specs = make_specialists(k=k)
    h, ref = loop_logits(specs, idx, k)
    stacked = StackedCrowns(specs, k, impl=impl)
    out = stacked(idx)
    assert out.shape == (N, B, T, CFG.vocab_size)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)
    # the crowns really differ, so a mix-up of experts would be caught
    assert (ref[0] - ref[1]).abs().max() > 100 * ATOL


@pytest.mark.parametrize("kind", ["per_token", "per_sequence"])
@pytest.mark.parametrize("k", [0, 2, 4])
@torch.no_grad()
def test_single_head_logit_fusion_equals_fusing_logits(idx, kind, k):
    specs = make_specialists(k=k)
    stacked = StackedCrowns(specs, k)
    assert stacked.shared_head  # tied head in the frozen trunk
    h, ref = loop_logits(specs, idx, k)
    w = router_weights(kind, torch.Generator().manual_seed(k))
    fused = stacked.fused_logits(stacked.hidden(h), w)
    torch.testing.assert_close(fused, fuse_logits(w, ref), atol=ATOL, rtol=0)
    expected = torch.log_softmax(fuse_logits(w, ref), -1)
    torch.testing.assert_close(stacked.fused_logprobs(h, w, "logits"), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", ["per_token", "per_sequence"])
@torch.no_grad()
def test_probability_fusion_equals_fuse_probs(idx, kind):
    specs = make_specialists()
    stacked = StackedCrowns(specs, 2)
    h, ref = loop_logits(specs, idx, 2)
    w = router_weights(kind, torch.Generator().manual_seed(3))
    torch.testing.assert_close(stacked.fused_logprobs(h, w, "probs"), fuse_probs(w, ref), atol=ATOL, rtol=0)


@torch.no_grad()
def test_separate_heads_and_no_bias(idx):
    # untied-in-practice heads (e.g. specialists with different trunks) fall back to one head each
    cfg = GPTConfig(vocab_size=97, block_size=16, n_layer=3, n_head=2, n_embd=32, bias=False)
    specs = [GPT(cfg).eval() for _ in range(N)]
    stacked = StackedCrowns(specs, 1)
    assert not stacked.shared_head
    h, ref = loop_logits(specs, idx, 1)
    torch.testing.assert_close(stacked.logits(h), ref, atol=ATOL, rtol=0)
    w = router_weights("per_token", torch.Generator().manual_seed(4))
    torch.testing.assert_close(stacked.fused_logits(stacked.hidden(h), w), fuse_logits(w, ref), atol=ATOL, rtol=0)


@torch.no_grad()
def test_stacked_copy_follows_in_place_updates(idx):
    specs = make_specialists()
    stacked = StackedCrowns(specs, 2)
    before = stacked(idx)
    specs[1].transformer.h[3].mlp.c_fc.weight.mul_(1.5)  # e.g. an optimizer step or load_state_dict
    after = stacked(idx)
    assert not torch.allclose(before[1], after[1])
    torch.testing.assert_close(after, loop_logits(specs, idx, 2)[1], atol=ATOL, rtol=0)
    for m in specs:  # .to() swaps the storage under the same Parameter objects
        m.double()
    assert stacked(idx).dtype == torch.float64
    torch.testing.assert_close(stacked(idx), loop_logits(specs, idx, 2)[1], atol=ATOL, rtol=0)


@pytest.mark.parametrize("fusion", ["logits", "probs"])
def test_fused_model_batched_path_equals_loop(idx, fusion):
    specs = make_specialists()
    router = torch.nn.Linear(CFG.n_embd, N)
    fm = FusedModel(specs, 2, router=lambda h: torch.softmax(router(h), -1), fusion=fusion)
    with torch.no_grad():
        assert fm.stacked() is not None
        fast = fm(idx)
        _, logits = fm.expert_logits(idx)
    # with grad enabled and trainable crowns, FusedModel keeps the per-crown autograd graph
    assert fm.stacked() is None
    slow = fm(idx)
    torch.testing.assert_close(fast, slow.detach(), atol=ATOL, rtol=0)
    torch.testing.assert_close(logits, loop_logits(specs, idx, 2)[1], atol=ATOL, rtol=0)
    slow.sum().backward()
    assert specs[0].transformer.h[3].mlp.c_fc.weight.grad is not None


def test_fused_model_batched_path_passes_router_gradients(idx):
    specs = make_specialists()
    for m in specs:
        m.requires_grad_(False)
    router = torch.nn.Linear(CFG.n_embd, N)
    fm = FusedModel(specs, 2, router=lambda h: torch.softmax(router(h), -1))
    assert fm.stacked() is not None  # nothing in the crowns needs a gradient
    fm(idx).sum().backward()
    assert router.weight.grad is not None and router.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("fusion", ["logits", "probs"])
@torch.no_grad()
def test_greedy_generation_matches_naive_fusion(fusion):
    specs = make_specialists()
    stacked = StackedCrowns(specs, 2)
    prompt = torch.randint(0, CFG.vocab_size, (B, 5), generator=torch.Generator().manual_seed(5))
    out = stacked.generate(prompt, 20, fusion=fusion)  # runs past block_size: window slides
    idx = prompt
    w = uniform_weights(B, N)
    for _ in range(20):
        logits = torch.stack([m(idx[:, -CFG.block_size:])[0][:, -1:] for m in specs])
        scores = fuse_logits(w, logits) if fusion == "logits" else fuse_probs(w, logits)
        idx = torch.cat((idx, scores[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(out, idx)


def test_rejects_unknown_impl_and_mismatched_shapes():
    specs = make_specialists()
    with pytest.raises(ValueError, match="impl"):
        StackedCrowns(specs, 2, impl="loop")
    other = GPT(GPTConfig(vocab_size=97, block_size=16, n_layer=4, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match="same shape"):
        StackedCrowns(specs + [other], 2)
