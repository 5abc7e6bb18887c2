"""The per-token router with document memory (minigpt.router.with_memory and the study's prefixes),
on hand-made tensors and a tiny untrained GPT: no corpus, no trained model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from minigpt.config import GPTConfig
from minigpt.model import GPT
from minigpt.router import CausalRouter, after_last_eos, with_memory
from minigpt.streams import eval_windows
from minigpt.studies.document_memory import CarriedStateRouter, eval_prefixes

B, P, T, C = 3, 7, 9, 8
EOS = 0


@pytest.fixture
def router() -> CausalRouter:
    torch.manual_seed(0)
    return CausalRouter(C, 3).eval()


def _states(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_memory_equals_the_causal_router_on_the_concatenated_states(router):
    prefix, states = _states(B, P, C), _states(B, T, C, seed=2)
    want = router(torch.cat([prefix, states], dim=1))[:, -T:]
    torch.testing.assert_close(with_memory(router, prefix, states), want)


def test_no_prefix_or_a_forgotten_prefix_is_the_cold_router(router):
    prefix, states = _states(B, P, C), _states(B, T, C, seed=2)
    cold = router(states)
    torch.testing.assert_close(with_memory(router, None, states), cold)
    torch.testing.assert_close(with_memory(router, prefix, states, torch.zeros(B, P)), cold)
    # one row forgotten, the others remembered: rows are independent
    keep = torch.ones(B, P)
    keep[1] = 0
    mixed = with_memory(router, prefix, states, keep)
    torch.testing.assert_close(mixed[1], cold[1])
    torch.testing.assert_close(mixed[0], with_memory(router, prefix[:1], states[:1])[0])


def test_the_memory_matters_and_fades(router):
    prefix, states = _states(B, P, C), _states(B, T, C, seed=2)
    diff = (with_memory(router, prefix, states) - router(states)).abs().amax(dim=(0, 2))  # (T,)
    assert diff[0] > 1e-3  # the first position reads the prefix
    assert diff[-1] < diff[0]  # and forgets it with the decay


def test_after_last_eos_by_hand():
    ids = torch.tensor([[5, EOS, 6, 7, EOS, 8, 9],  # last EOS at 4: keep 5, 6
                        [5, 6, 7, 8, 9, 10, 11],  # no EOS: keep everything
                        [5, 6, 7, 8, 9, 10, EOS]])  # EOS last: a new document starts with the window
    want = torch.tensor([[0, 0, 0, 0, 0, 1, 1], [1] * 7, [0] * 7], dtype=torch.float)
    torch.testing.assert_close(after_last_eos(ids, EOS), want)


def test_memory_stops_at_the_last_document_boundary(router):
    """Masking the prefix up to its last EOS equals a prefix that starts after that EOS."""
    prefix, states = _states(1, P, C), _states(1, T, C, seed=2)
    ids = torch.tensor([[4, EOS, 5, EOS, 6, 7, 8]])
    masked = with_memory(router, prefix, states, after_last_eos(ids, EOS))
    torch.testing.assert_close(masked, with_memory(router, prefix[:, 4:], states))
    assert not torch.allclose(masked, with_memory(router, prefix, states))


def test_memory_is_causal_in_the_tokens(router):
    """Weights at window position t do not move when tokens after t change (trunk of a tiny GPT)."""
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=37, block_size=16, n_layer=2, n_head=2, n_embd=C)).eval()
    gen = torch.Generator().manual_seed(3)
    pre, x = torch.randint(1, 37, (2, 12), generator=gen), torch.randint(1, 37, (2, 12), generator=gen)
    t = 5
    x2 = x.clone()
    x2[:, t + 1:] = torch.randint(1, 37, (2, 12 - t - 1), generator=gen)
    with torch.no_grad():
        w = with_memory(router, gpt.trunk(pre, 1), gpt.trunk(x, 1), after_last_eos(pre, EOS))
        w2 = with_memory(router, gpt.trunk(pre, 1), gpt.trunk(x2, 1), after_last_eos(pre, EOS))
    torch.testing.assert_close(w[:, :t + 1], w2[:, :t + 1])
    assert not torch.allclose(w[:, t + 1:], w2[:, t + 1:])


def test_eval_prefixes_are_the_tokens_just_before_each_window():
    stream = np.arange(1000, dtype=np.int32)
    x, _ = eval_windows(stream, 5, 9)
    ids, has = eval_prefixes(stream, x)
    assert has.tolist() == [False, True, True, True, True]  # the first slot starts the stream
    assert (ids[0] == 0).all()
    for row in range(1, 5):
        assert ids[row].tolist() == list(range(int(x[row, 0]) - 9, int(x[row, 0])))
    with pytest.raises(ValueError, match="not eval_windows"):
        eval_prefixes(stream, x.flip(0))


def test_carried_state_router_refuses_other_windows(router):
    prefix, states = _states(2, P, C), _states(2, T, C, seed=2)
    carried = CarriedStateRouter(router, [(prefix, torch.ones(2, P), states)])
    with pytest.raises(RuntimeError, match="other windows"):
        carried(states + 1)
    carried = CarriedStateRouter(router, [(prefix, torch.ones(2, P), states)])
    torch.testing.assert_close(carried(states), with_memory(router, prefix, states))
    with pytest.raises(RuntimeError, match="more batches"):
        carried(states)
