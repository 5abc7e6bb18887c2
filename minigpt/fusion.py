"""Ways to combine specialists: prediction fusion (logits, probabilities, hard, uniform) and
weight averaging, plus :class:`FusedModel`, which computes the shared trunk once.

Shapes: N specialists, router weights (B, N) per sequence or (B, T, N) per token, specialist
logits stacked as (N, B, T, V).
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .device import autocast, resolve, to_device, to_host
from .model import GPT
from .stacked import StackedCrowns


def _stack(logits_list: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    return logits_list if isinstance(logits_list, torch.Tensor) else torch.stack(list(logits_list))


def broadcast_weights(weights: torch.Tensor, n: int) -> torch.Tensor:
    """(B, N) or (B, T, N) router weights -> (N, B, 1, 1) or (N, B, T, 1), ready to scale logits."""
    if weights.shape[-1] != n:
        raise ValueError(f"router gives weights for {weights.shape[-1]} specialists but {n} are "
                         "being fused; train a router with n_experts equal to the number of specialists")
    w = weights.movedim(-1, 0)  # (N, B) or (N, B, T)
    return w.reshape(*w.shape, *([1] * (4 - w.dim())))


def fuse_logits(router_weights: torch.Tensor, logits_list) -> torch.Tensor:
    """The chapter's soft fusion (Step 4): a weighted sum of the specialists' logits -> (B, T, V)."""
    logits = _stack(logits_list)
    return (broadcast_weights(router_weights, logits.shape[0]) * logits).sum(0)


def fuse_probs(router_weights: torch.Tensor, logits_list) -> torch.Tensor:
    """Mixture of the specialists' next-token distributions, returned as log-probabilities.

    log sum_n w_n p_n, computed in log space so tiny probabilities do not underflow.
    """
    logits = _stack(logits_list)
    logw = broadcast_weights(router_weights, logits.shape[0]).clamp_min(1e-30).log()
    return torch.logsumexp(logw + F.log_softmax(logits.float(), dim=-1), dim=0)


def _weights_like_losses(router_weights: torch.Tensor, n: int) -> torch.Tensor:
    """(B, N) or (B, T, N) router weights -> (N, B, 1) or (N, B, T), to meet (N, B, T) token losses."""
    return broadcast_weights(router_weights, n).squeeze(-1)


def mixture_token_nll(router_weights: torch.Tensor, token_losses: torch.Tensor) -> torch.Tensor:
    """:func:`fuse_probs`'s loss at the targets only, from each specialist's (N, B, T) token losses.

    -log sum_n w_n p_n(y) needs only p_n(y) = exp(-loss_n): the same numbers :func:`fuse_probs`
    gathers from its (B, T, V) result, without the vocabulary-wide tensors.
    """
    logw = _weights_like_losses(router_weights, token_losses.shape[0]).clamp_min(1e-30).log()
    return -torch.logsumexp(logw - token_losses, dim=0)


def hard_token_nll(router_weights: torch.Tensor, token_losses: torch.Tensor) -> torch.Tensor:
    """Hard routing's (B, T) token losses: each token takes the loss of its argmax specialist, from
    (N, B, T) token losses. One-hot weights select that specialist's logits exactly, so this is
    ``token_nll(fuse_logits(hard_weights(w), logits), y)`` without fusing anything."""
    choice = _weights_like_losses(hard_weights(router_weights), token_losses.shape[0]).argmax(0)  # (B, 1) or (B, T)
    return token_losses.gather(0, choice.expand(token_losses.shape[1:]).unsqueeze(0))[0]


def hard_weights(router_weights: torch.Tensor) -> torch.Tensor:
    """One-hot on the argmax specialist (hard routing)."""
    return F.one_hot(router_weights.argmax(-1), router_weights.shape[-1]).to(router_weights.dtype)


def uniform_weights(batch: int, n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Equal weight on every specialist, ignoring the input (output averaging)."""
    return torch.full((batch, n), 1.0 / n, device=device)


def average_weights(models: Sequence[GPT], names: Sequence[str] | None = None) -> GPT:
    """A new model whose parameters ``names`` (default: all) are the mean of ``models``'.

    With a shared frozen trunk only the crowns differ, so averaging all parameters equals
    averaging the crowns.
    """
    avg = copy.deepcopy(models[0])
    states = [dict(m.named_parameters()) for m in models]
    with torch.no_grad():
        for name, p in avg.named_parameters():
            if names is None or name in names:
                p.copy_(torch.stack([s[name].detach() for s in states]).mean(0))
    return avg


class FusedModel(nn.Module):
    """N specialists sharing one frozen trunk, mixed by a router that reads the trunk output.

    The trunk runs once per batch. Without gradients to the crowns (inference, router training)
    the crowns run batched in one pass (:class:`minigpt.stacked.StackedCrowns`) and logit fusion
    applies the shared head once; otherwise each crown runs on the shared hidden state in turn.
    """

    def __init__(self, specialists: Sequence[GPT], k: int, router: nn.Module | None = None,
                 fusion: str = "logits") -> None:
        super().__init__()
        if fusion not in ("logits", "probs"):
            raise ValueError(f"unknown fusion {fusion!r}; choose 'logits' or 'probs'")
        self.specialists = nn.ModuleList(specialists)
        self.k, self.router, self.fusion = k, router, fusion
        self._stacked = None  # derived copy of the crowns, built on first use; not in state_dict

    def trunk(self, idx: torch.Tensor) -> torch.Tensor:
        return self.specialists[0].trunk(idx, self.k)  # identical in every specialist

    def stacked(self) -> StackedCrowns | None:
        """The batched crowns, or None when gradients must reach the crown parameters."""
        if torch.is_grad_enabled() and any(p.requires_grad for m in self.specialists
                                           for p in m.crown_parameters(self.k).values()):
            return None  # stacked copies are detached: keep the per-crown autograd graph
        s = self._stacked
        if s is None or s.k != self.k or [id(m) for m in s.specialists] != [id(m) for m in self.specialists]:
            s = self._stacked = StackedCrowns(list(self.specialists), self.k)
        return s

    def expert_logits(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) ids -> shared hidden (B, T, C) and stacked crown logits (N, B, T, V)."""
        h = self.trunk(idx)
        stacked = self.stacked()
        if stacked is not None:
            return h, stacked.logits(h)
        return h, torch.stack([m.crown(h, self.k) for m in self.specialists])

    def weights(self, h: torch.Tensor) -> torch.Tensor:
        """The router's weights on trunk states (B, T, C), or equal weights when there is no router."""
        if self.router is None:
            return uniform_weights(h.shape[0], len(self.specialists)).to(h)
        return self.router(h)

    def forward(self, idx: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Fused log-probabilities (B, T, V). ``weights`` overrides the router (e.g. uniform)."""
        stacked = self.stacked()
        if stacked is not None:
            h = self.trunk(idx)
            return _stacked_logprobs(stacked, stacked.hidden(h), self.weights(h) if weights is None else weights,
                                     self.fusion)
        h, logits = self.expert_logits(idx)
        if weights is None:
            weights = self.weights(h)
        if self.fusion == "probs":
            return fuse_probs(weights, logits)
        return F.log_softmax(fuse_logits(weights, logits).float(), dim=-1)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int,
                 return_weights: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding with the fused model (router weights, else uniform).

        No KV cache: every step reruns the trunk and the crowns on the whole window, but the
        head and the fusion only on the last position. Runs on the device (the model moves there
        once); returns the ids (B, T + new) on the CPU; with ``return_weights`` also the weights
        that chose each new token, (B, new, N).
        """
        dev = resolve()
        to_device(self, dev)
        idx = to_device(idx, dev)
        T_max = self.specialists[0].config.block_size
        stacked = self.stacked()  # under no_grad: always the batched crowns
        chosen = []
        with autocast(dev):
            for _ in range(max_new_tokens):
                h = self.trunk(idx[:, -T_max:])
                w = self.weights(h)
                if w.dim() == 3:
                    w = w[:, -1:]  # per-token weights: only the last position is decoded
                hidden = stacked.hidden(h)[:, :, -1:]  # (N, B, 1, C)
                scores = _stacked_logprobs(stacked, hidden, w, self.fusion)
                idx = torch.cat((idx, scores[:, -1].argmax(-1, keepdim=True)), dim=1)
                chosen.append(w.reshape(w.shape[0], -1).float())  # (B, N)
        if not return_weights:
            return to_host(idx)
        n = len(self.specialists)
        weights = torch.stack(chosen, dim=1) if chosen else idx.new_zeros((idx.shape[0], 0, n), dtype=torch.float)
        return to_host((idx, weights))


def _stacked_logprobs(stacked: StackedCrowns, hidden: torch.Tensor, weights: torch.Tensor,
                      fusion: str) -> torch.Tensor:
    """Fused log-probabilities from the crowns' final hidden states (N, B, T, C).

    Logit fusion with a shared head weights the hidden states and applies the head once:
    sum_n w_n (h_n W^T) = (sum_n w_n h_n) W^T, exact because the head is linear.
    """
    if fusion == "probs":
        return fuse_probs(weights, stacked.head_logits(hidden))
    if stacked.shared_head:
        logits = F.linear(fuse_logits(weights, hidden).to(stacked.head.dtype), stacked.head)
    else:
        logits = fuse_logits(weights, stacked.head_logits(hidden))
    return F.log_softmax(logits.float(), dim=-1)
