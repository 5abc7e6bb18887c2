"""Load Hugging Face GPT-2 weights into minigpt's :class:`~minigpt.model.GPT`.

minigpt's parameter names already follow GPT-2 (``transformer.h.0.attn.c_attn`` ...), so the
conversion is one to one except that GPT-2 stores its projections as ``Conv1D`` (in, out) while
minigpt uses ``nn.Linear`` (out, in): those weights are transposed. The head is tied to ``wte``.

The ``gpt2`` profile (``MINIGPT_PROFILE=gpt2``) runs the chapter on real GPT-2 small: its
tokenizer replaces the BPE learned on the corpus and its weights are the base, so only the
specialists' crowns and the routers are trained. Downloading the weights needs the Hugging Face
hub and the optional ``transformers`` package (``pip install -e '.[hf]'``), so that profile runs
on Colab or a GPU box, not offline; once converted, the base and tokenizer sit in the cache and
later runs load them from there. :func:`from_hf_state_dict` itself needs neither hub nor import.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from tokenizers import Tokenizer

from .cache import cache_root, cached
from .config import GPTConfig
from .model import GPT
from .tokenizer import load_tokenizer, save_tokenizer

# HF Conv1D layers keep their weight as (in_features, out_features); nn.Linear wants (out, in).
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Non-parameter buffers of older transformers releases (the causal mask), rebuilt by SDPA here.
_BUFFERS = (".attn.bias", ".attn.masked_bias")


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError("minigpt.hf needs the optional 'transformers' package: "
                          "pip install -e '.[hf]'") from None
    return transformers


def gpt2_config_to_minigpt(hf_config: Any, block_size: int | None = None) -> GPTConfig:
    """A ``transformers.GPT2Config`` -> the equivalent :class:`GPTConfig`.

    ``block_size`` shortens the context below ``n_positions`` (the position table is cut to
    its first rows); dropout is 0 as in every minigpt profile. Variants this model does not
    implement are refused rather than converted into a silently different network.
    """
    unsupported = {
        "activation_function": (getattr(hf_config, "activation_function", "gelu_new"),
                                ("gelu_new", "gelu_pytorch_tanh")),  # both are the tanh GELU used here
        "scale_attn_weights": (getattr(hf_config, "scale_attn_weights", True), (True,)),
        "scale_attn_by_inverse_layer_idx": (getattr(hf_config, "scale_attn_by_inverse_layer_idx", False), (False,)),
        "n_inner": (getattr(hf_config, "n_inner", None), (None, 4 * hf_config.n_embd)),
        "add_cross_attention": (getattr(hf_config, "add_cross_attention", False), (False,)),
        "tie_word_embeddings": (getattr(hf_config, "tie_word_embeddings", True), (True,)),
    }
    for field, (value, ok) in unsupported.items():
        if value not in ok:
            raise ValueError(f"GPT-2 config has {field}={value!r}, which minigpt's GPT does not implement "
                             f"(supported: {', '.join(map(repr, ok))}); use a standard GPT-2 checkpoint")
    n_positions = hf_config.n_positions
    block_size = n_positions if block_size is None else block_size
    if not 0 < block_size <= n_positions:
        raise ValueError(f"block_size={block_size} must be between 1 and the checkpoint's "
                         f"n_positions={n_positions}; pick a shorter context")
    return GPTConfig(vocab_size=hf_config.vocab_size, block_size=block_size, n_layer=hf_config.n_layer,
                     n_head=hf_config.n_head, n_embd=hf_config.n_embd, dropout=0.0, bias=True,
                     layer_norm_eps=hf_config.layer_norm_epsilon)


def from_hf_state_dict(state_dict: Mapping[str, torch.Tensor], hf_config: Any,
                       block_size: int | None = None) -> GPT:
    """Build a :class:`GPT` from a GPT-2 state dict (``GPT2LMHeadModel`` or bare ``GPT2Model`` keys)."""
    cfg = gpt2_config_to_minigpt(hf_config, block_size)
    model = GPT(cfg)
    ours = model.state_dict()  # tied head: lm_head.weight and wte.weight are one tensor
    seen: set[str] = set()
    with torch.no_grad():
        for name, tensor in state_dict.items():
            if name.endswith(_BUFFERS):
                continue
            if not name.startswith(("transformer.", "lm_head.")):
                name = "transformer." + name  # a bare GPT2Model has no "transformer." prefix
            if name == "lm_head.weight":
                continue  # checked against wte below
            if name not in ours:
                raise KeyError(f"unexpected GPT-2 weight {name!r}; is this a GPT-2 checkpoint?")
            t = tensor.t() if name.endswith(_CONV1D) else tensor
            if name == "transformer.wpe.weight":
                t = t[:cfg.block_size]  # a shorter context keeps the first positions
            if t.shape != ours[name].shape:
                raise ValueError(f"GPT-2 weight {name} has shape {tuple(t.shape)}, expected "
                                 f"{tuple(ours[name].shape)}; the config does not match the weights")
            ours[name].copy_(t)
            seen.add(name)
    missing = sorted(set(ours) - seen - {"lm_head.weight"})
    if missing:
        raise KeyError(f"GPT-2 state dict lacks {len(missing)} weights (first: {missing[0]}); "
                       "pass the full model state dict")
    head = state_dict.get("lm_head.weight")
    if head is not None and not torch.equal(head, model.transformer.wte.weight):
        raise ValueError("GPT-2 head differs from its token embedding; minigpt needs a tied head")
    return model.eval()


def _hf_model(name: str):
    """The Hugging Face model (downloaded from the hub on first use; tests replace this)."""
    return _transformers().GPT2LMHeadModel.from_pretrained(name)


def _hf_tokenizer(name: str) -> Tokenizer:
    fast = _transformers().AutoTokenizer.from_pretrained(name)
    backend = getattr(fast, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(f"{name!r} has no fast (tokenizers) tokenizer; minigpt needs one")
    return backend


def pretrained_tokenizer(name: str = "gpt2") -> Tokenizer:
    """GPT-2's tokenizer as a ``tokenizers.Tokenizer``, cached so later runs work offline."""
    path = cache_root() / "tokenizers" / f"hf-{name.replace('/', '--')}.json"
    return cached(path, lambda: _hf_tokenizer(name), save_tokenizer, load_tokenizer)


def pretrained_base(cfg: GPTConfig, name: str = "gpt2") -> GPT:
    """The hub model ``name`` converted to ``cfg`` (same shape, possibly a shorter context)."""
    hf_model = _hf_model(name)
    model = from_hf_state_dict(hf_model.state_dict(), hf_model.config, cfg.block_size)
    if model.config != cfg:
        raise ValueError(f"{name!r} converts to {model.config}, not the profile's {cfg}; "
                         "fix the profile's model config")
    return model


def from_pretrained(name: str = "gpt2", block_size: int | None = None) -> tuple[GPT, Tokenizer]:
    """(model, tokenizer) for a GPT-2 checkpoint on the Hugging Face hub (needs network access)."""
    hf_model = _hf_model(name)
    model = from_hf_state_dict(hf_model.state_dict(), hf_model.config, block_size)
    return model, pretrained_tokenizer(name)


__all__ = ["gpt2_config_to_minigpt", "from_hf_state_dict", "from_pretrained", "pretrained_base",
           "pretrained_tokenizer"]
