"""End-to-end causality: what the fused model says at position t must not depend on tokens after t.

Change every token after position t (inputs and targets); everything computed up to position t
stays put (within 1e-6) for :class:`FusedModel` with a :class:`CausalRouter` on both of its paths
(batched crowns under ``no_grad``, the per-crown loop when the crowns need gradients) and both
fusion rules, and for the rows of :func:`minigpt.scoring.score` that claim to be causal. A
last-token router, which reads the whole window, is the control: the same check catches it.
(Greedy generation with a router against a plain loop is in tests/test_stacked.py.)
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from minigpt.config import GPTConfig
from minigpt.fusion import FusedModel, average_weights
from minigpt.model import GPT
from minigpt.router import CausalRouter, LinearRouter
from minigpt.scoring import ORACLE_PER_TOKEN, SPECIALIST_ROWS, ScoreRequest, fused_row, score

CFG = GPTConfig(vocab_size=13, block_size=8, n_layer=3, n_head=2, n_embd=8)
K, N, B, T = 1, 3, 3, 8
TOL = 1e-6


def _specialists(seed: int = 0) -> list[GPT]:
    """One trunk (embeddings, block 0), three crowns with large random weights, so they disagree."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    trunk = GPT(CFG)
    with torch.no_grad():
        for p in trunk.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    specs = []
    for _ in range(N):
        m = copy.deepcopy(trunk)
        with torch.no_grad():
            for p in m.crown_parameters(K).values():
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
        specs.append(m.eval())
    return specs


def _router(cls, seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    r = cls(CFG.n_embd, N)
    with torch.no_grad():
        r.proj.weight.mul_(5.0)  # confident weights: a leak would move them visibly
    return r


def _pairs():
    """(x, y) and, for each t, a copy whose inputs and targets after position t all differ."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(0, CFG.vocab_size, (B, T), generator=gen)
    y = torch.randint(0, CFG.vocab_size, (B, T), generator=gen)
    out = []
    for t in range(T - 1):
        x2, y2 = x.clone(), y.clone()
        bump = 1 + torch.randint(0, CFG.vocab_size - 1, (B, T - t - 1), generator=gen)  # never 0 mod V
        x2[:, t + 1:] = (x[:, t + 1:] + bump) % CFG.vocab_size
        y2[:, t + 1:] = (y[:, t + 1:] + 1) % CFG.vocab_size
        assert (x2[:, t + 1:] != x[:, t + 1:]).all() and torch.equal(x2[:, :t + 1], x[:, :t + 1])
        out.append((t, x2, y2))
    return x, y, out


PATHS = ["stacked", "loop"]


def _fused_out(fm: FusedModel, x: torch.Tensor, path: str) -> torch.Tensor:
    if path == "stacked":
        with torch.no_grad():
            assert fm.engine() is not None
            return fm(x)[0]
    assert fm.engine() is None  # crowns require grad: the per-crown loop keeps their graph
    out = fm(x)[0]
    assert out.requires_grad
    return out.detach()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fusion", ["logits", "probs"])
def test_fused_model_with_causal_router_is_causal(path, fusion):
    fm = FusedModel(_specialists(), K, _router(CausalRouter), fusion=fusion, batched=True)
    x, _, pairs = _pairs()
    ref = _fused_out(fm, x, path)
    assert ref.shape == (B, T, CFG.vocab_size)
    for t, x2, _ in pairs:
        out = _fused_out(fm, x2, path)
        torch.testing.assert_close(out[:, :t + 1], ref[:, :t + 1], atol=TOL, rtol=0, msg=f"positions <= {t}")
        assert (out[:, t + 1:] - ref[:, t + 1:]).abs().max() > 1e-3  # the later positions did see the change


@pytest.mark.parametrize("path", PATHS)
def test_the_check_catches_a_router_that_reads_the_whole_window(path):
    # the control: a last-token router's weights at position 0 depend on the last token
    fm = FusedModel(_specialists(), K, _router(LinearRouter), batched=True)
    x, _, pairs = _pairs()
    ref = _fused_out(fm, x, path)
    t, x2, _ = pairs[0]
    assert (_fused_out(fm, x2, path)[:, :t + 1] - ref[:, :t + 1]).abs().max() > 1e-3


CAUSAL_ROWS = ["base", *SPECIALIST_ROWS, "weight average", "uniform mix", ORACLE_PER_TOKEN,
               *(fused_row(rule, "causal") for rule in ("soft", "hard", "probs", "hidden"))]


def _score(specs, base, x, y):
    head = nn.Linear(CFG.n_embd, CFG.vocab_size, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(9)))
    return score(ScoreRequest(windows={"code": (x, y)}, experts=FusedModel(specs, K),
                              routers={"causal": _router(CausalRouter), "last-token": _router(LinearRouter)},
                              base=base, extra={"weight average": average_weights(specs)}, batch_size=2,
                              hidden_head=head))


def test_score_rows_of_a_causal_router_are_causal():
    specs = _specialists()
    base = _specialists(seed=5)[0]
    x, y, pairs = _pairs()
    ref = _score(specs, base, x, y).nll
    assert set(CAUSAL_ROWS) <= set(ref)
    leaked = 0.0
    for t, x2, y2 in pairs:
        got = _score(specs, base, x2, y2).nll
        for row in CAUSAL_ROWS:
            a, b = got[row]["code"], ref[row]["code"]
            torch.testing.assert_close(a[:, :t + 1], b[:, :t + 1], atol=TOL, rtol=0, msg=f"{row}, positions <= {t}")
            assert (a[:, t + 1:] - b[:, t + 1:]).abs().max() > 1e-3, row  # later positions do change
        # the control: the last-token router's soft row moves at early positions
        leaked = max(leaked, float((got[fused_row("soft", "last-token")]["code"][:, :t + 1]
                                    - ref[fused_row("soft", "last-token")]["code"][:, :t + 1]).abs().max()))
    assert leaked > 1e-3
