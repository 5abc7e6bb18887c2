"""Ways to combine specialists: prediction fusion (logits, probabilities, hard, uniform), weight
averaging, what a router reads (:data:`FEATURES`), and :class:`FusedModel`, the fused model itself.

Shapes: N specialists, router weights (B, N) per sequence or (B, T, N) per token, specialist
logits stacked as (N, B, T, V).
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import batched_crowns
from .device import autocast, resolve, to_device, to_host
from .model import GPT, token_nll_from_logprobs
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


# -- what a router reads ------------------------------------------------------------------------
# A feature maps (inputs, each specialist's trunk output, the specialists) to the router's input.
Feature = Callable[[torch.Tensor, Sequence[torch.Tensor], Sequence[GPT]], torch.Tensor]
SHARED_TRUNK = "trunk of base X"
FEATURES: dict[str, Feature] = {
    # the shared trunk; without a shared trunk (Break 1) it is the first model's, "base X"
    SHARED_TRUNK: lambda x, trunks, models: trunks[0],
    "concatenated trunks": lambda x, trunks, models: torch.cat(list(trunks), dim=-1),
    "embeddings of base X": lambda x, trunks, models: models[0].trunk(x, 0),
    # no model at all: each token id hashed into C buckets, one-hot; the causal router's decaying
    # average of them is a bag of recent tokens, so the router becomes a cheap domain classifier
    "token classifier (no model)": lambda x, trunks, models: F.one_hot(x % trunks[0].shape[-1],
                                                                        trunks[0].shape[-1]).to(trunks[0].dtype),
}


def feature_width(reads: str, specialists: Sequence[GPT]) -> int:
    """The width of the router input ``reads`` over these specialists."""
    c = specialists[0].config.n_embd
    return c * len(specialists) if reads == "concatenated trunks" else c


class FusedModel(nn.Module):
    """N specialists at freeze depth ``k``, combined by a router (Chapter 32, Steps 3 and 4).

    :meth:`forward` is the whole idea, top to bottom: the frozen trunk once, every crown on its
    output, the router's weights, the fusion rule, the token loss. ``shared=False`` (Break 1) runs
    each specialist's own trunk. ``reads`` names what the router reads (:data:`FEATURES`).
    ``batched`` runs the crowns in one batched pass (:class:`minigpt.stacked.StackedCrowns`)
    instead of one after another when no gradient must reach them: the same numbers up to float
    rounding, a speed-up (benchmarks/fused_inference.py); default ``$MINIGPT_BATCHED_CROWNS``, off.
    """

    def __init__(self, specialists: Sequence[GPT], k: int, router: nn.Module | None = None, fusion: str = "logits",
                 *, shared: bool = True, reads: str = SHARED_TRUNK, batched: bool | None = None) -> None:
        super().__init__()
        if fusion not in ("logits", "probs"):
            raise ValueError(f"unknown fusion {fusion!r}; choose 'logits' or 'probs'")
        if not specialists:
            raise ValueError("no specialists to fuse; pass at least one model")
        if reads not in FEATURES:
            raise ValueError(f"unknown router input {reads!r}; choose one of {', '.join(FEATURES)}")
        self.specialists = nn.ModuleList(specialists)
        self.k, self.router, self.fusion, self.shared, self.reads = k, router, fusion, shared, reads
        self.batched = batched_crowns() if batched is None else batched
        self._stacked = None  # the batched engine's copy of the crowns, built on first use; not in state_dict

    # -- the pieces, in the order forward runs them ------------------------------------------
    def trunks(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """(B, T) ids -> each specialist's trunk output (B, T, C): one computation when the trunk is shared."""
        if self.shared:
            return [self.specialists[0].trunk(idx, self.k)] * len(self.specialists)
        return [m.trunk(idx, self.k) for m in self.specialists]

    def crowns(self, trunks: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Trunk outputs -> every crown's final hidden state (N, B, T, C) and logits (N, B, T, V)."""
        engine = self.engine()
        if engine is not None:
            hidden = engine.hidden(trunks[0])
            return hidden, engine.head_logits(hidden)
        hidden = torch.stack([m.crown_hidden(h, self.k) for m, h in zip(self.specialists, trunks)])
        return hidden, torch.stack([m.lm_head(hd) for m, hd in zip(self.specialists, hidden)])

    def router_input(self, idx: torch.Tensor, trunks: Sequence[torch.Tensor]) -> torch.Tensor:
        return FEATURES[self.reads](idx, trunks, list(self.specialists))

    def weights(self, router_input: torch.Tensor) -> torch.Tensor:
        """The router's weights, (B, T, N) per token or (B, N) per sequence; equal weights without a router."""
        if self.router is None:
            return uniform_weights(router_input.shape[0], len(self.specialists)).to(router_input)
        return self.router(router_input)

    def fuse(self, weights: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The fusion rule: weighted logits, or a mixture of distributions -> log-probabilities (B, T, V)."""
        if self.fusion == "probs":
            return fuse_probs(weights, logits)
        return F.log_softmax(fuse_logits(weights, logits).float(), dim=-1)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T) ids -> (fused log-probabilities (B, T, V), mean token loss or None). ``weights``
        overrides the router (e.g. uniform weights)."""
        trunks = self.trunks(idx)  # the frozen trunk, once
        _, logits = self.crowns(trunks)  # (N, B, T, V): every crown on the same trunk output
        if weights is None:
            weights = self.weights(self.router_input(idx, trunks))  # (B, T, N): how much each crown counts
        logprobs = self.fuse(weights, logits)  # (B, T, V)
        loss = None if targets is None else token_nll_from_logprobs(logprobs, targets).mean()
        return logprobs, loss

    # -- for router training and decoding ----------------------------------------------------
    def expert_logits(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) ids -> (router input, every crown's logits (N, B, T, V)): what a router learns from."""
        trunks = self.trunks(idx)
        return self.router_input(idx, trunks), self.crowns(trunks)[1]

    @property
    def input_dim(self) -> int:
        """The width of what the router reads."""
        return feature_width(self.reads, self.specialists)

    def engine(self) -> StackedCrowns | None:
        """The batched engine, when switched on and usable: a shared trunk and no gradient to the crowns."""
        if not (self.batched and self.shared) or (torch.is_grad_enabled() and any(
                p.requires_grad for m in self.specialists for p in m.crown_parameters(self.k).values())):
            return None
        s = self._stacked
        if s is None or s.k != self.k or [id(m) for m in s.specialists] != [id(m) for m in self.specialists]:
            s = self._stacked = StackedCrowns(list(self.specialists), self.k)
        return s

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int,
                 return_weights: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding with the fused model (router weights, else uniform), on the device. No KV cache:
        every step reruns the model on the window. Returns the ids (B, T + new) on the CPU; with
        ``return_weights`` also the weights that chose each new token, (B, new, N)."""
        dev = resolve()
        to_device(self, dev)
        idx = to_device(idx, dev)
        T_max, chosen = self.specialists[0].config.block_size, []
        with autocast(dev):
            for _ in range(max_new_tokens):
                window = idx[:, -T_max:]
                trunks = self.trunks(window)
                w = self.weights(self.router_input(window, trunks))
                logprobs, _ = self(window, weights=w)
                idx = torch.cat((idx, logprobs[:, -1].argmax(-1, keepdim=True)), dim=1)
                chosen.append((w[:, -1] if w.dim() == 3 else w).float())  # (B, N): the weights of this token
        if not return_weights:
            return to_host(idx)
        weights = torch.stack(chosen, dim=1) if chosen else idx.new_zeros((idx.shape[0], 0, len(self.specialists)))
        return to_host((idx, weights.float()))
