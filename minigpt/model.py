"""A small GPT-2 (nanoGPT-style) that can be cut into a shared *trunk* and a domain *crown*.

``trunk(idx, k)`` runs the embeddings and the first ``k`` blocks; ``crown(h, k)`` runs the rest,
the final LayerNorm and the (tied) head, so ``crown(trunk(idx, k), k)`` equals ``forward(idx)``.
``untie_head()`` gives the head its own copy of the embedding (the freeze sweep's "nothing frozen" point).
Parameter names follow Hugging Face GPT-2 (``transformer.h.0.attn.c_attn`` ...) so real GPT-2
weights map onto this model one to one (see ``minigpt.hf``).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import GPTConfig, check_freeze_k


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # GPT-2's GELU


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))  # pre-LN residual blocks
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
            ln_f=nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps, bias=cfg.bias),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        # Tied head: it belongs to the frozen trunk, so every crown predicts in one output space.
        self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # -- the two halves -------------------------------------------------------------------
    def trunk(self, idx: torch.Tensor, k: int) -> torch.Tensor:
        """Token ids (B, T) -> hidden state (B, T, C) after the embeddings and the first k blocks."""
        check_freeze_k(k, self.config.n_layer)
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds the context of {self.config.block_size} "
                             "tokens; split the text into windows of at most block_size")
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, C)
        for block in self.transformer.h[:k]:
            x = block(x)
        return x

    def crown(self, h: torch.Tensor, k: int) -> torch.Tensor:
        """Hidden state (B, T, C) after block k -> logits (B, T, V)."""
        return self.lm_head(self.crown_hidden(h, k))

    def crown_hidden(self, h: torch.Tensor, k: int) -> torch.Tensor:
        """Blocks k.. and the final LayerNorm: (B, T, C) -> (B, T, C), just before the head."""
        check_freeze_k(k, self.config.n_layer)
        for block in self.transformer.h[k:]:
            h = block(h)
        return self.transformer.ln_f(h)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """(B, T) ids -> (logits (B, T, V), mean cross-entropy or None)."""
        logits = self.crown(self.trunk(idx, 0), 0)
        loss = None if targets is None else lm_loss(logits, targets)
        return logits, loss

    def untie_head(self) -> GPT:
        """Give the head its own parameter, a copy of the token embedding, trained apart from it from
        now on. An untied head is no longer part of the trunk: it shows up as ``lm_head.weight``."""
        self.lm_head.weight = nn.Parameter(self.transformer.wte.weight.detach().clone())
        return self

    @property
    def tied_head(self) -> bool:
        return self.lm_head.weight is self.transformer.wte.weight

    # -- which parameters belong where ----------------------------------------------------
    def trunk_parameters(self, k: int) -> dict[str, nn.Parameter]:
        """Embeddings (and so the tied head) plus blocks 0..k-1: frozen in every specialist."""
        check_freeze_k(k, self.config.n_layer)
        keep = ("transformer.wte.", "transformer.wpe.") + tuple(f"transformer.h.{i}." for i in range(k))
        return {n: p for n, p in self.named_parameters() if n.startswith(keep)}

    def crown_parameters(self, k: int) -> dict[str, nn.Parameter]:
        """Blocks k.. and the final LayerNorm (and an untied head): what a specialist trains."""
        trunk = self.trunk_parameters(k)
        return {n: p for n, p in self.named_parameters() if n not in trunk}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, greedy: bool = False) -> torch.Tensor:
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.config.block_size:])
            logits = logits[:, -1, :] / max(temperature, 1e-8)
            if greedy:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float("inf")
                nxt = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            idx = torch.cat((idx, nxt), dim=1)
        return idx


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy. ``reduction='none'`` keeps the (B, T) shape."""
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                           reduction=reduction)
    return loss.view(targets.shape) if reduction == "none" else loss


def token_nll_from_logprobs(logprobs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, T, V) log-probabilities and (B, T) targets -> (B, T) negative log-likelihood."""
    return -logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
