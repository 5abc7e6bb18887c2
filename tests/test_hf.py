"""GPT-2 conversion, checked against a random ``transformers`` GPT-2 (no hub access needed)."""
from __future__ import annotations

import pytest
import torch
from conftest import require_extra

transformers = require_extra("transformers")  # a test extra: missing fails the file, never skips it

from minigpt import hf  # noqa: E402
from minigpt.config import PROFILES, GPTConfig  # noqa: E402

PARITY_ATOL = 1e-5


def _random_hf_gpt2(seed: int = 0, n_positions: int = 64, vocab_size: int = 500):
    """A tiny GPT-2 with *every* parameter random: default init has zero biases and unit
    LayerNorm gains, which would hide a bias or LayerNorm that the converter drops or swaps."""
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=vocab_size, n_positions=n_positions,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for p in model.parameters():  # the head is tied to wte, so this also randomises the head
            p.normal_(0.0, 0.2)
    return model.eval()


def test_logits_match_transformers():
    ref = _random_hf_gpt2()
    ours = hf.from_hf_state_dict(ref.state_dict(), ref.config)
    idx = torch.randint(0, 500, (3, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref(idx).logits
        got, _ = ours(idx)
    diff = (got - want).abs().max().item()
    print(f"max abs logit difference vs transformers: {diff:.3e}")
    assert diff < PARITY_ATOL, diff
    assert want.abs().max() > 1.0  # logits are far from zero, so the tolerance is a real check


def test_greedy_generation_matches_transformers():
    ref = _random_hf_gpt2(seed=2)
    ours = hf.from_hf_state_dict(ref.state_dict(), ref.config)
    prompt = torch.randint(0, 500, (2, 8), generator=torch.Generator().manual_seed(3))
    want = ref.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, min_new_tokens=20,
                        do_sample=False, pad_token_id=0)
    got = ours.generate(prompt, 20, greedy=True)
    assert got.shape == (2, 28)
    assert torch.equal(got, want)


def test_shorter_context_keeps_first_positions():
    ref = _random_hf_gpt2(seed=4)
    ours = hf.from_hf_state_dict(ref.state_dict(), ref.config, block_size=16)
    assert ours.config.block_size == 16
    idx = torch.randint(0, 500, (2, 16), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.allclose(ours(idx)[0], ref(idx).logits, atol=PARITY_ATOL)
    with pytest.raises(ValueError, match="exceeds the context"):
        ours(torch.zeros(1, 17, dtype=torch.long))


def test_bare_gpt2model_keys_and_old_mask_buffers_are_accepted():
    ref = _random_hf_gpt2(seed=6)
    sd = ref.state_dict()
    # a bare GPT2Model (no "transformer." prefix, no head) plus the mask buffers older releases saved
    bare = {k.removeprefix("transformer."): v for k, v in sd.items() if k != "lm_head.weight"}
    bare["h.0.attn.bias"] = torch.ones(1, 1, 64, 64, dtype=torch.bool)
    bare["h.0.attn.masked_bias"] = torch.tensor(-1e4)
    a = hf.from_hf_state_dict(sd, ref.config)
    b = hf.from_hf_state_dict(bare, ref.config)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb), na


def test_incomplete_or_untied_state_dict_is_refused():
    ref = _random_hf_gpt2(seed=7)
    sd = dict(ref.state_dict())
    partial = {k: v for k, v in sd.items() if "h.1.mlp" not in k}
    with pytest.raises(KeyError, match="lacks 4 weights"):
        hf.from_hf_state_dict(partial, ref.config)
    untied = {**sd, "lm_head.weight": sd["lm_head.weight"] + 1}
    with pytest.raises(ValueError, match="tied head"):
        hf.from_hf_state_dict(untied, ref.config)


def test_unsupported_variant_is_refused():
    cfg = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=16,
                                  activation_function="relu")
    with pytest.raises(ValueError, match="activation_function='relu'"):
        hf.gpt2_config_to_minigpt(cfg)
    with pytest.raises(ValueError, match="n_positions=16"):
        hf.gpt2_config_to_minigpt(transformers.GPT2Config(n_positions=16), block_size=32)


def test_gpt2_profile_matches_gpt2_small_shape():
    # GPT2Config() defaults are GPT-2 small, so the profile is checked without the hub
    assert PROFILES["gpt2"].model == hf.gpt2_config_to_minigpt(transformers.GPT2Config(), block_size=256)
    assert 0 < PROFILES["gpt2"].freeze_k < PROFILES["gpt2"].model.n_layer


def test_gpt2_profile_experiment_uses_hf_tokenizer_and_base(tmp_path, monkeypatch):
    """The Experiment hooks for profile 'gpt2', with the hub replaced by local stand-ins."""
    from minigpt.experiment import Experiment
    from minigpt.tokenizer import EOS, train_tokenizer

    monkeypatch.setenv("MINIGPT_CACHE_DIR", str(tmp_path))
    texts = ["def f(x):\n    return x + 1\n", "the patient presents with fever", "the licensee shall"] * 40
    tok = train_tokenizer(texts, 500)  # a stand-in for GPT-2's tokenizer, with the same EOS
    V = tok.get_vocab_size()
    assert tok.token_to_id(EOS) == 0
    ref = _random_hf_gpt2(seed=8, vocab_size=V)
    calls = []
    monkeypatch.setattr(hf, "_hf_model", lambda name: calls.append(("model", name)) or ref)
    monkeypatch.setattr(hf, "_hf_tokenizer", lambda name: calls.append(("tokenizer", name)) or tok)

    small = GPTConfig(vocab_size=V, block_size=32, n_layer=2, n_head=4, n_embd=64)
    exp = Experiment("gpt2", model=small, freeze_k=1)
    assert exp.tokenizer.get_vocab_size() == V
    base = exp.base()
    assert base.manifest["source"] == "hf:gpt2" and base.manifest["train_losses"] == []
    idx = torch.randint(0, V, (2, 32), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert torch.allclose(base(idx)[0], ref(idx).logits, atol=PARITY_ATOL)
    assert exp.base(seed=5) is base  # one pretrained base for every seed
    assert calls == [("tokenizer", "gpt2"), ("model", "gpt2")]

    # a second Experiment loads both from the cache instead of the hub
    again = Experiment("gpt2", model=small, freeze_k=1)
    assert again.tokenizer_fingerprint == exp.tokenizer_fingerprint
    assert torch.equal(again.base().transformer.wte.weight, base.transformer.wte.weight)
    assert len(calls) == 2

    # the vocab check runs on the hub tokenizer too
    wrong = Experiment("gpt2", model=GPTConfig(vocab_size=V + 1, block_size=32, n_layer=2, n_head=4, n_embd=64),
                       freeze_k=1)
    with pytest.raises(ValueError, match=f"tokenizer has {V} tokens but the model's vocab_size is {V + 1}"):
        wrong.tokenizer  # noqa: B018


def test_missing_transformers_gives_install_hint(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ImportError, match=r"pip install -e '\.\[hf\]'") as err:
        hf.from_pretrained("gpt2")
    assert "\n" not in str(err.value)
