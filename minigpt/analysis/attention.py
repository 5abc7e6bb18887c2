"""How spread out a block's attention is: the entropy of each head's attention weights.

A head that averages over everything it can see has an entropy near log(t + 1) at position t; a head
that looks at one or two recent tokens has an entropy near zero. Reported as a share of that
maximum, so 1 means a uniform average over the whole prefix and 0 means one token.
"""
from __future__ import annotations

import math

import torch

from ..model import GPT


@torch.no_grad()
def attention_entropy(model: GPT, x: torch.Tensor, layer: int, from_position: int = 16) -> list[float]:
    """Per head of block ``layer``: the mean over windows ``x`` (B, T) and positions >= ``from_position``
    of the attention entropy divided by its maximum log(t + 1)."""
    h = model.trunk(x, layer)  # (B, T, C): the input of block ``layer``
    block = model.transformer.h[layer]
    B, T, C = h.shape
    nh = block.attn.n_head
    q, k, _ = block.attn.c_attn(block.ln_1(h)).split(C, dim=2)
    q, k = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in (q, k))  # (B, nh, T, hs)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(C // nh)  # (B, nh, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
    att = scores.masked_fill(causal, float("-inf")).softmax(-1)
    ent = -(att * att.clamp_min(1e-12).log()).sum(-1)  # (B, nh, T)
    most = torch.log(torch.arange(1, T + 1, device=x.device, dtype=ent.dtype))  # log(t + 1)
    share = ent[..., from_position:] / most[from_position:]
    return [float(v) for v in share.mean((0, 2))]
