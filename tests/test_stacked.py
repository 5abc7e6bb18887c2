"""Batched crowns (minigpt.stacked) give the per-crown loop's logits, and FusedModel's fusions and
greedy decoding on top of them equal fusing the loop's logits.

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
from minigpt.router import CausalRouter, LinearRouter
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


def fused_both_paths(specs: list[GPT], k: int, idx: torch.Tensor, w: torch.Tensor,
                     fusion: str) -> tuple[StackedCrowns, torch.Tensor, torch.Tensor]:
    """FusedModel's log-probabilities with weights ``w`` on both of its paths: the stacked crowns
    (no gradients) and the per-crown loop (gradients enabled, crowns trainable)."""
    fm = FusedModel(specs, k, fusion=fusion, batched=True)
    with torch.no_grad():
        stacked = fm.engine()
        assert stacked is not None
        fast = fm(idx, weights=w)[0]
    assert fm.engine() is None  # the crowns' parameters require grad: the loop keeps their graph
    slow = fm(idx, weights=w)[0].detach()
    return stacked, fast, slow


@pytest.mark.parametrize("kind", ["per_token", "per_sequence"])
@pytest.mark.parametrize("k", [0, 2, 4])
def test_single_head_logit_fusion_equals_fusing_logits(idx, kind, k):
    specs = make_specialists(k=k)
    w = router_weights(kind, torch.Generator().manual_seed(k))
    stacked, fast, slow = fused_both_paths(specs, k, idx, w, "logits")
    assert stacked.shared_head  # tied head in the frozen trunk: the stacked path applies it once
    with torch.no_grad():
        _, ref = loop_logits(specs, idx, k)
    expected = torch.log_softmax(fuse_logits(w, ref), -1)
    torch.testing.assert_close(fast, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(slow, expected, atol=ATOL, rtol=0)
    # the weights matter, so weights applied to the wrong experts or positions would be caught
    uniform = torch.log_softmax(fuse_logits(uniform_weights(B, N), ref), -1)
    assert (expected - uniform).abs().max() > 100 * ATOL


@pytest.mark.parametrize("kind", ["per_token", "per_sequence"])
def test_probability_fusion_equals_fuse_probs(idx, kind):
    specs = make_specialists()
    w = router_weights(kind, torch.Generator().manual_seed(3))
    _, fast, slow = fused_both_paths(specs, 2, idx, w, "probs")
    with torch.no_grad():
        _, ref = loop_logits(specs, idx, 2)
    torch.testing.assert_close(fast, fuse_probs(w, ref), atol=ATOL, rtol=0)
    torch.testing.assert_close(slow, fuse_probs(w, ref), atol=ATOL, rtol=0)


def test_separate_heads_and_no_bias(idx):
    # untied-in-practice heads (e.g. specialists with different trunks) fall back to one head each
    cfg = GPTConfig(vocab_size=97, block_size=16, n_layer=3, n_head=2, n_embd=32, bias=False)
    specs = [GPT(cfg).eval() for _ in range(N)]
    w = router_weights("per_token", torch.Generator().manual_seed(4))
    stacked, fast, slow = fused_both_paths(specs, 1, idx, w, "logits")
    assert not stacked.shared_head
    with torch.no_grad():
        h, ref = loop_logits(specs, idx, 1)
        torch.testing.assert_close(stacked.logits(h), ref, atol=ATOL, rtol=0)
    expected = torch.log_softmax(fuse_logits(w, ref), -1)
    torch.testing.assert_close(fast, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(slow, expected, atol=ATOL, rtol=0)


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


def naive_fused(specs: list[GPT], router: torch.nn.Module, idx: torch.Tensor, k: int, fusion: str) -> torch.Tensor:
    """Fused log-probabilities the long way: every specialist's full forward, the router on the
    trunk, the experts mixed by an explicit loop (differentiable; no FusedModel, no fusion code)."""
    logits = [m(idx)[0] for m in specs]
    w = torch.softmax(router(specs[0].trunk(idx, k)), -1)
    if fusion == "logits":
        return torch.log_softmax(sum(w[..., n:n + 1] * logits[n] for n in range(len(specs))), -1)
    return torch.log(sum(w[..., n:n + 1] * torch.softmax(logits[n], -1) for n in range(len(specs))))


def _objective(out: torch.Tensor) -> torch.Tensor:
    """A fixed random linear functional of the output (its plain sum would hide some mix-ups)."""
    return (torch.randn(out.shape, generator=torch.Generator().manual_seed(11)) * out).sum()


@pytest.mark.parametrize("fusion", ["logits", "probs"])
def test_fused_model_batched_path_equals_loop(idx, fusion):
    specs = make_specialists()
    ref_specs = copy.deepcopy(specs)  # the same models, for the long-way gradients
    torch.manual_seed(0)
    router = torch.nn.Linear(CFG.n_embd, N)
    ref_router = copy.deepcopy(router)
    fm = FusedModel(specs, 2, router=lambda h: torch.softmax(router(h), -1), fusion=fusion, batched=True)
    with torch.no_grad():
        assert fm.engine() is not None
        fast = fm(idx)[0]
        _, logits = fm.expert_logits(idx)
    # with grad enabled and trainable crowns, FusedModel keeps the per-crown autograd graph
    assert fm.engine() is None
    slow = fm(idx)[0]
    torch.testing.assert_close(fast, slow.detach(), atol=ATOL, rtol=0)
    torch.testing.assert_close(logits, loop_logits(specs, idx, 2)[1], atol=ATOL, rtol=0)
    # the crowns' and the router's gradients equal those of the long way round, and are not zero
    _objective(slow).backward()
    _objective(naive_fused(ref_specs, ref_router, idx, 2, fusion)).backward()
    for m, ref in zip(specs, ref_specs):
        got, want = m.crown_parameters(2), ref.crown_parameters(2)
        for name in want:
            assert want[name].grad.abs().max() > 1e-4, name
            torch.testing.assert_close(got[name].grad, want[name].grad, atol=1e-5, rtol=1e-4, msg=name)
    torch.testing.assert_close(router.weight.grad, ref_router.weight.grad, atol=1e-5, rtol=1e-4)
    assert ref_router.weight.grad.abs().max() > 1e-4


@pytest.mark.parametrize("fusion", ["logits", "probs"])
def test_fused_model_batched_path_passes_router_gradients(idx, fusion):
    specs = make_specialists()
    for m in specs:
        m.requires_grad_(False)
    torch.manual_seed(0)
    router = torch.nn.Linear(CFG.n_embd, N)
    ref_router = copy.deepcopy(router)
    fm = FusedModel(specs, 2, router=lambda h: torch.softmax(router(h), -1), fusion=fusion, batched=True)
    assert fm.engine() is not None  # nothing in the crowns needs a gradient
    _objective(fm(idx)[0]).backward()
    _objective(naive_fused(specs, ref_router, idx, 2, fusion)).backward()
    for name in ("weight", "bias"):
        want = getattr(ref_router, name).grad
        assert want.abs().max() > 1e-4
        torch.testing.assert_close(getattr(router, name).grad, want, atol=1e-5, rtol=1e-4)


GENERATION_ROUTERS = {"uniform": None, "per_token": CausalRouter, "last_token": LinearRouter}


@pytest.mark.parametrize("router_kind", sorted(GENERATION_ROUTERS))
@pytest.mark.parametrize("fusion", ["logits", "probs"])
@torch.no_grad()
def test_greedy_generation_matches_naive_fusion(fusion, router_kind):
    specs, k = make_specialists(), 2
    torch.manual_seed(6)
    cls = GENERATION_ROUTERS[router_kind]
    router = None if cls is None else cls(CFG.n_embd, N)
    fm = FusedModel(specs, k, router, fusion=fusion)
    prompt = torch.randint(0, CFG.vocab_size, (B, 5), generator=torch.Generator().manual_seed(5))
    out = fm.generate(prompt, 20)  # runs past block_size: window slides
    assert out.shape == (B, 25) and torch.equal(out[:, :5], prompt)
    idx, ref_w = prompt, []
    for _ in range(20):
        window = idx[:, -CFG.block_size:]
        if router is None:
            w = uniform_weights(B, N)
        else:
            w = router(specs[0].trunk(window, k))
            w = w[:, -1] if w.dim() == 3 else w  # the last position's weights pick the next token
        logits = [m(window)[0][:, -1] for m in specs]  # (B, V) each: every specialist's full forward
        mix = lambda xs: sum(w[:, n:n + 1] * xs[n] for n in range(N))  # noqa: E731  (an explicit loop, not fuse_*)
        scores = mix(logits) if fusion == "logits" else mix([torch.softmax(lg, -1) for lg in logits])
        idx = torch.cat((idx, scores.argmax(-1, keepdim=True)), dim=1)
        ref_w.append(w)
    assert torch.equal(out, idx)
    # return_weights: the same ids, plus the weights that chose each new token
    ids, weights = fm.generate(prompt, 20, return_weights=True)
    assert torch.equal(ids, out) and weights.shape == (B, 20, N)
    torch.testing.assert_close(weights, torch.stack(ref_w, dim=1), atol=1e-6, rtol=0)
    assert torch.allclose(weights.sum(-1), torch.ones(B, 20))
    if router_kind == "per_token":  # the weights move from step to step as the window grows
        assert (weights[:, 1:] - weights[:, :-1]).abs().max() > 1e-4
    ids0, w0 = fm.generate(prompt, 0, return_weights=True)
    assert torch.equal(ids0, prompt) and w0.shape == (B, 0, N)


def test_rejects_unknown_impl_and_mismatched_shapes():
    specs = make_specialists()
    with pytest.raises(ValueError, match="impl"):
        StackedCrowns(specs, 2, impl="loop")
    other = GPT(GPTConfig(vocab_size=97, block_size=16, n_layer=4, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match="same shape"):
        StackedCrowns(specs + [other], 2)


def test_scoring_with_the_batched_engine_equals_the_plain_path_on_every_row():
    """One switch, the same numbers: every row of a scoring pass (specialists, uniform mix, every fused
    rule, oracles) with the crowns batched against one crown after another, within 1e-5 nats."""
    from minigpt.router import CausalRouter, LinearRouter
    from minigpt.scoring import ScoreRequest, score

    specs, k = make_specialists(), 2
    gen = torch.Generator().manual_seed(3)
    sets = {d: (torch.randint(0, CFG.vocab_size, (4, CFG.block_size), generator=gen),
                torch.randint(0, CFG.vocab_size, (4, CFG.block_size), generator=gen)) for d in ("code", "legal")}
    torch.manual_seed(1)
    routers = {"per-token": CausalRouter(CFG.n_embd, N), "last-token": LinearRouter(CFG.n_embd, N)}
    rows = {}
    for batched in (False, True):
        req = ScoreRequest(windows=sets, experts=FusedModel(specs, k, batched=batched), routers=routers,
                           hidden_head=specs[0].lm_head, batch_size=2, names=[f"e{i}" for i in range(N)])
        rows[batched] = score(req).nll
    assert set(rows[True]) == set(rows[False]) and len(rows[True]) > 8
    worst = max(float((rows[True][r][d] - rows[False][r][d]).abs().max()) for r in rows[False] for d in sets)
    assert worst <= 1e-5, f"batched and plain scoring differ by {worst:.2e} nats"
