"""Fused inference: the shared trunk once, then all N crowns in one batched pass.

:class:`StackedCrowns` copies the crowns' parameters into tensors with a leading expert
dimension and runs blocks K.. of every specialist with batched matmuls (``torch.baddbmm``) and
one attention call over N x B sequences. Looping over the crowns costs the same FLOPs but N times
as many small kernels and Python calls. :class:`minigpt.fusion.FusedModel` uses this engine when
no gradient has to reach the crowns; the fusion rules themselves stay in :mod:`minigpt.fusion`.

Logit fusion needs only one head matmul. The head W is tied to the embedding, which is part of
the frozen trunk, so every crown shares it and it is linear:

    sum_n w_n (h_n W^T) = (sum_n w_n h_n) W^T      (w per sequence or per token)

where h_n is crown n's hidden state after its own final LayerNorm. This is exact, unlike mixing
hidden states *before* ln_f or inside the blocks. It saves N - 1 of the (B, T, C) x (C, V)
matmuls, which at V = 2048, C = 128 cost more than a transformer block. Probability fusion
needs every crown's full softmax, so it still computes the N logits (in one matmul).

Each LayerNorm's gain and bias are folded into the linear layer after it (W diag(g), W b + c),
so a block needs one plain normalisation and batched matmuls only. Results equal the per-crown
loop up to float rounding (about 1e-6). The stacked copies are rebuilt whenever a source
parameter is updated in place (optimizer step, ``load_state_dict``) or moved (``.to()``).
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state

from .config import check_freeze_k
from .model import GPT

IMPLS = ("bmm", "vmap")


def _bias(b: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if b is None else b


class StackedCrowns:
    """The crowns (blocks k.., ln_f, head) of N specialists as one batched module.

    ``impl='bmm'`` (default, faster on CPU) uses hand-written batched matmuls with the
    LayerNorm affines folded in; ``impl='vmap'`` runs the original blocks through
    ``torch.func.vmap`` over ``stack_module_state`` (kept for comparison, see benchmarks/).
    Not an ``nn.Module``: it holds derived copies, never trained or saved.
    """

    def __init__(self, specialists: Sequence[GPT], k: int, impl: str = "bmm") -> None:
        if impl not in IMPLS:
            raise ValueError(f"unknown impl {impl!r}; choose one of {', '.join(IMPLS)}")
        if not specialists:
            raise ValueError("need at least one specialist to stack")
        cfg = specialists[0].config
        if any(m.config != cfg for m in specialists):
            raise ValueError("specialists have different GPTConfigs; crowns can only be stacked "
                             "when every specialist has the same shape")
        check_freeze_k(k, cfg.n_layer)
        self.specialists, self.k, self.impl, self.config = list(specialists), k, impl, cfg
        self.n = len(self.specialists)
        # what the stacked copies are made of: the crowns and the (tied) head
        self._sources = [p for m in self.specialists
                         for p in [*m.crown_parameters(k).values(), m.lm_head.weight]]
        self._key: tuple | None = None

    # -- parameters -----------------------------------------------------------------------
    def _refresh(self) -> None:
        """Restack if a source changed: in-place updates bump ``_version``, moves change ``data_ptr``."""
        try:
            key = tuple((p.data_ptr(), p._version) for p in self._sources)
        except RuntimeError:  # inference tensors (models built under inference_mode) have no version
            key = tuple(p.data_ptr() for p in self._sources)
        if key == self._key:
            return
        # plain (non-inference) tensors without autograd history, usable in any grad mode
        with torch.inference_mode(False), torch.no_grad():
            self._build()
        self._key = key

    def _build(self) -> None:
        k, specs = self.k, self.specialists
        heads = [m.lm_head.weight for m in specs]
        self._shared_head = all(torch.equal(heads[0], w) for w in heads[1:])
        self.head = heads[0].detach().clone() if self._shared_head else torch.stack(heads).detach()
        ln_f = [m.transformer.ln_f for m in specs]
        self.ln_f_w = torch.stack([ln.weight for ln in ln_f]).unsqueeze(1)  # (N, 1, C)
        self.ln_f_b = torch.stack([_bias(ln.bias, ln.weight) for ln in ln_f]).unsqueeze(1)
        if self.impl == "vmap":
            self._vmap_params = [stack_module_state([m.transformer.h[i] for m in specs])
                                 for i in range(k, self.config.n_layer)]
            base = copy.deepcopy(specs[0].transformer.h[k]) if k < self.config.n_layer else None
            self._vmap_base = None if base is None else base.to("meta")
            return
        self.blocks = []
        for i in range(k, self.config.n_layer):
            bl = [m.transformer.h[i] for m in specs]
            self.blocks.append({
                "attn": self._fold([b.ln_1 for b in bl], [b.attn.c_attn for b in bl]),
                "attn_proj": self._linear([b.attn.c_proj for b in bl]),
                "fc": self._fold([b.ln_2 for b in bl], [b.mlp.c_fc for b in bl]),
                "fc_proj": self._linear([b.mlp.c_proj for b in bl]),
            })

    @staticmethod
    def _linear(lins: list[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, in, out) transposed weights for bmm and (N, 1, out) biases."""
        wt = torch.stack([lin.weight.t() for lin in lins])
        b = torch.stack([_bias(lin.bias, lin.weight[:, 0]) for lin in lins]).unsqueeze(1)
        return wt.contiguous(), b

    @staticmethod
    def _fold(lns: list[nn.LayerNorm], lins: list[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor]:
        """LayerNorm(g, b) then Linear(W, c) == normalise then Linear(W diag(g), W b + c)."""
        wt = torch.stack([(lin.weight * ln.weight).t() for ln, lin in zip(lns, lins)])
        b = torch.stack([lin.weight @ _bias(ln.bias, ln.weight) + _bias(lin.bias, lin.weight[:, 0])
                         for ln, lin in zip(lns, lins)]).unsqueeze(1)
        return wt.contiguous(), b

    @property
    def shared_head(self) -> bool:
        """True when all specialists have the same head (the tied embedding of a shared trunk)."""
        self._refresh()
        return self._shared_head

    # -- forward pieces -------------------------------------------------------------------
    def trunk(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> shared hidden (B, T, C); the trunk is the same in every specialist."""
        return self.specialists[0].trunk(idx, self.k)

    def hidden(self, h: torch.Tensor) -> torch.Tensor:
        """Shared hidden (B, T, C) after block k -> every crown's state after its ln_f (N, B, T, C)."""
        self._refresh()
        return self._hidden(h)

    def _hidden(self, h: torch.Tensor) -> torch.Tensor:
        B, T, C = h.shape
        if self.impl == "vmap":
            x = self._vmap_blocks(h)
        else:
            x = h.reshape(1, B * T, C)  # broadcast over experts until the first residual add
            for p in self.blocks:
                x = self._block(x, p, B, T)
        x = F.layer_norm(x, (C,), eps=self.config.layer_norm_eps)  # (N or 1, BT, C)
        return torch.addcmul(self.ln_f_b, x, self.ln_f_w).view(self.n, B, T, C)

    def _block(self, x: torch.Tensor, p: dict, B: int, T: int) -> torch.Tensor:
        N, C, nh = self.n, self.config.n_embd, self.config.n_head
        eps = self.config.layer_norm_eps
        a = F.layer_norm(x, (C,), eps=eps).expand(N, B * T, C)
        qkv = torch.baddbmm(p["attn"][1], a, p["attn"][0])  # (N, BT, 3C)
        q, k, v = qkv.view(N * B, T, 3, nh, C // nh).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (NB, nh, T, hs)
        y = y.transpose(1, 2).reshape(N, B * T, C)
        x = x + torch.baddbmm(p["attn_proj"][1], y, p["attn_proj"][0])  # (N, BT, C) from here on
        a = torch.baddbmm(p["fc"][1], F.layer_norm(x, (C,), eps=eps), p["fc"][0])
        return x + torch.baddbmm(p["fc_proj"][1], F.gelu(a, approximate="tanh"), p["fc_proj"][0])

    def _vmap_blocks(self, h: torch.Tensor) -> torch.Tensor:
        x, in_dim = h, None  # the first crown block reads the shared state
        for params, buffers in self._vmap_params:
            run = lambda p, b, inp: functional_call(self._vmap_base, (p, b), (inp,))  # noqa: E731
            x = torch.vmap(run, in_dims=(0, 0, in_dim))(params, buffers, x)
            in_dim = 0
        B, T, C = h.shape
        return x.reshape(-1, B * T, C)  # (N, BT, C), or (1, BT, C) when K = L

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Crown hidden states (N, B, T, C) -> logits (N, B, T, V), one matmul for all crowns."""
        self._refresh()
        return self._head_logits(hidden)

    def _head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self._shared_head:
            return F.linear(hidden, self.head)
        return torch.einsum("nbtc,nvc->nbtv", hidden, self.head)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Shared hidden (B, T, C) -> every crown's logits (N, B, T, V)."""
        self._refresh()
        return self._head_logits(self._hidden(h))

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> stacked crown logits (N, B, T, V)."""
        return self.logits(self.trunk(idx))
