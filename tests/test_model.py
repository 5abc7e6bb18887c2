"""The GPT and its trunk/crown cut."""
from __future__ import annotations

import math

import pytest
import torch

from minigpt.model import GPT, lm_loss, token_nll_from_logprobs


@pytest.fixture
def model(tiny_config):
    torch.manual_seed(0)
    m = GPT(tiny_config).eval()
    # Fresh init has zero biases and unit LayerNorms; jitter every parameter so a block that is
    # skipped, run twice or run out of order cannot go unnoticed.
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("k", range(4))  # tiny_config.n_layer == 3: every cut 0..L
def test_crown_of_trunk_is_forward(model, tiny_ids, k):
    assert k <= model.config.n_layer
    full, _ = model(tiny_ids)
    with torch.no_grad():
        cut = model.crown(model.trunk(tiny_ids, k), k)
    torch.testing.assert_close(cut, full, atol=1e-6, rtol=0)


def test_trunk_depth_matters(model, tiny_ids):
    # guards the test above: if trunk(., k) ignored k, every cut would trivially agree
    with torch.no_grad():
        hs = [model.trunk(tiny_ids, k) for k in range(model.config.n_layer + 1)]
    for a, b in zip(hs, hs[1:]):
        assert not torch.allclose(a, b)


@pytest.mark.parametrize("k", range(4))
def test_trunk_and_crown_parameters_partition_the_model(model, k):
    everything = dict(model.named_parameters())
    trunk, crown = model.trunk_parameters(k), model.crown_parameters(k)
    assert set(trunk).isdisjoint(crown)
    assert set(trunk) | set(crown) == set(everything)
    for name, p in {**trunk, **crown}.items():
        assert p is everything[name]
    blocks_in_trunk = {int(n.split(".")[2]) for n in trunk if n.startswith("transformer.h.")}
    blocks_in_crown = {int(n.split(".")[2]) for n in crown if n.startswith("transformer.h.")}
    assert blocks_in_trunk == set(range(k))
    assert blocks_in_crown == set(range(k, model.config.n_layer))
    assert {"transformer.wte.weight", "transformer.wpe.weight"} <= set(trunk)
    assert {"transformer.ln_f.weight", "transformer.ln_f.bias"} <= set(crown)


def test_head_is_tied_to_token_embedding(model, tiny_ids):
    assert model.lm_head.weight is model.transformer.wte.weight
    # the tied head is counted once, under the embedding, i.e. in the trunk
    assert "lm_head.weight" not in dict(model.named_parameters())
    # and it really is the same storage: editing the embedding moves the logits
    before, _ = model(tiny_ids)
    with torch.no_grad():
        model.transformer.wte.weight[:, 0] += 1.0
    after, _ = model(tiny_ids)
    assert not torch.allclose(before, after)
    assert torch.equal(model.lm_head.weight, model.transformer.wte.weight)


def test_untied_head_trains_apart_from_the_embedding(model, tiny_ids):
    """The freeze sweep's "nothing frozen" point: untie_head copies wte into a parameter of its own."""
    wte = model.transformer.wte.weight
    model.untie_head()
    assert not model.tied_head and model.lm_head.weight is not wte
    assert torch.equal(model.lm_head.weight, wte)  # initialised from the embedding
    assert "lm_head.weight" in model.crown_parameters(0) and "lm_head.weight" not in model.trunk_parameters(0)
    head, emb = model.lm_head.weight.detach().clone(), wte.detach().clone()
    for train, still in ((model.lm_head.weight, wte), (wte, model.lm_head.weight)):
        frozen = still.detach().clone()
        opt = torch.optim.SGD([train], lr=0.5)
        model(tiny_ids, tiny_ids)[1].backward()
        opt.step()
        model.zero_grad(set_to_none=True)
        assert torch.equal(still, frozen) and not torch.equal(train, frozen)  # training one leaves the other
    assert not torch.equal(model.lm_head.weight, head) and not torch.equal(wte, emb)


def test_trunk_does_not_read_crown_parameters(model, tiny_ids):
    k = 1
    h = model.trunk(tiny_ids, k)
    with torch.no_grad():
        for p in model.crown_parameters(k).values():
            p.add_(1.0)
    assert torch.equal(model.trunk(tiny_ids, k), h)


@pytest.mark.parametrize("k", [-1, 4, 10])
def test_k_outside_range_raises_naming_range(model, tiny_ids, k):
    L = model.config.n_layer
    with pytest.raises(ValueError, match=f"0\\.\\.{L}"):
        model.trunk(tiny_ids, k)
    h = torch.zeros(1, 4, model.config.n_embd)
    with pytest.raises(ValueError, match=f"0\\.\\.{L}"):
        model.crown(h, k)
    with pytest.raises(ValueError, match=f"0\\.\\.{L}"):
        model.crown_hidden(h, k)


def test_sequence_longer_than_block_size_raises(model, tiny_config):
    too_long = torch.zeros(1, tiny_config.block_size + 1, dtype=torch.long)
    with pytest.raises(ValueError, match=str(tiny_config.block_size)):
        model(too_long)
    with pytest.raises(ValueError, match="block_size"):
        model.trunk(too_long, 1)
    model(too_long[:, :-1])  # exactly block_size is fine


def test_loss_at_init_is_log_vocab(tiny_config):
    # GPT-2 init (std 0.02) gives near-uniform predictions, so the loss starts near ln V
    torch.manual_seed(0)
    m = GPT(tiny_config)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, tiny_config.vocab_size, (4, tiny_config.block_size), generator=gen)
    y = torch.randint(0, tiny_config.vocab_size, (4, tiny_config.block_size), generator=gen)
    _, loss = m(x, y)
    assert abs(loss.item() - math.log(tiny_config.vocab_size)) < 0.3


def test_lm_loss_and_token_nll_agree(model, tiny_ids):
    logits, _ = model(tiny_ids)
    y = tiny_ids.roll(-1, dims=1)
    per_token = lm_loss(logits, y, reduction="none")
    assert per_token.shape == y.shape
    nll = token_nll_from_logprobs(torch.log_softmax(logits, -1), y)
    torch.testing.assert_close(per_token, nll, atol=1e-5, rtol=0)
    torch.testing.assert_close(lm_loss(logits, y), per_token.mean())
    # hand check of one token: -log softmax(logits)[target]
    b, t = 1, 3
    want = -(logits[b, t, y[b, t]] - torch.logsumexp(logits[b, t], -1))
    torch.testing.assert_close(per_token[b, t], want, atol=1e-5, rtol=0)


def test_generate_greedy_is_argmax(model, tiny_ids):
    prompt = tiny_ids[:, :5]
    out = model.generate(prompt, 3, greedy=True)
    assert out.shape == (2, 8) and torch.equal(out[:, :5], prompt)
    logits, _ = model(prompt)
    assert torch.equal(out[:, 5], logits[:, -1].argmax(-1))
