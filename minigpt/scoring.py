"""One scoring pass (Chapter 32, Steps 6-8): every row of every table, on the same held-out windows.

The chapter's table, Break 1, Break 2, the freeze sweep, the routing ceiling and the hybrid windows
all call :func:`score`. Per batch it runs the base and any extra model, then the trunk once (or,
for specialists from different bases, each model's own trunk), every crown, and every router, and
keeps each row's per-token loss. The rows and their names:

* ``base``, each ``"<domain> specialist"``, every extra model by its name (``weight average``,
  ``monolithic``), and ``uniform mix`` (equal weights, no router);
* per router ``R``: ``fused soft (R router)`` (logit fusion, Step 4), ``fused hard (R router)``
  (argmax only), ``fused probs (R router)`` (a mixture of the next-token distributions) and, when a
  ``hidden_head`` is given, ``fused hidden (R router)`` (the crowns' final hidden states mixed, then
  that head). A per-sequence router gets ``single dispatch (R router)`` instead of hard/probs;
* ``oracle (per sequence)`` (the best specialist for each window, chosen with hindsight) and
  ``oracle (per token)`` (the best specialist for each token).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import DOMAINS
from .device import autocast, resolve, to_device, to_host
from .fusion import broadcast_weights, fuse_logits, hard_token_nll, mixture_token_nll, uniform_weights
from .heap import reuse_large_blocks
from .model import GPT, token_nll_from_logprobs
from .score_cache import remembered

SPECIALIST_ROWS = tuple(f"{d} specialist" for d in DOMAINS)
HEADLINE = "fused soft (per-token router)"
ORACLE = "oracle (per sequence)"
ORACLE_PER_TOKEN = "oracle (per token)"

EvalSets = Mapping[str, tuple[torch.Tensor, torch.Tensor]]  # domain -> inputs (n, T), targets (n, T)


def fused_row(rule: str, router: str) -> str:
    """Row name of a fused model: ``rule`` is soft, hard, probs or hidden; ``router`` the router's name."""
    return f"fused {rule} ({router} router)"


def dispatch_row(router: str) -> str:
    return f"single dispatch ({router} router)"


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(..., V) logits and (...) targets -> (...) next-token loss in nats (computed in float32)."""
    return token_nll_from_logprobs(F.log_softmax(logits.float(), dim=-1), targets)


# -- what a router reads -------------------------------------------------------------------------
# A feature maps (inputs, each specialist's trunk output, the specialists) to the router's input.
Feature = Callable[[torch.Tensor, Sequence[torch.Tensor], Sequence[GPT]], torch.Tensor]
FEATURES: dict[str, Feature] = {
    # the shared trunk; without a shared trunk (Break 1) it is the first model's, "base X"
    "trunk of base X": lambda x, trunks, models: trunks[0],
    "concatenated trunks": lambda x, trunks, models: torch.cat(list(trunks), dim=-1),
    "embeddings of base X": lambda x, trunks, models: models[0].trunk(x, 0),
    # no model at all: each token id hashed into C buckets, one-hot; the causal router's decaying
    # average of them is a bag of recent tokens, so the router becomes a cheap domain classifier
    "token classifier (no model)": lambda x, trunks, models: F.one_hot(x % trunks[0].shape[-1],
                                                                        trunks[0].shape[-1]).to(trunks[0].dtype),
}
SHARED_TRUNK = "trunk of base X"


@dataclass
class Experts:
    """N specialists at freeze depth ``k``. With ``shared`` the trunk runs once; otherwise each model
    runs its own trunk (the only honest option when the bases differ, Break 1)."""

    models: Sequence[GPT]
    k: int
    shared: bool = True

    def __post_init__(self) -> None:
        self.models = list(self.models)
        if not self.models:
            raise ValueError("no specialists to score; pass at least one model")

    def trunks(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.shared:
            return [self.models[0].trunk(x, self.k)] * len(self.models)
        return [m.trunk(x, self.k) for m in self.models]

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """(B, T) ids -> trunks (list of (B, T, C)), final hidden (N, B, T, C), logits (N, B, T, V)."""
        trunks = self.trunks(x)
        hidden = torch.stack([m.crown_hidden(h, self.k) for m, h in zip(self.models, trunks)])
        logits = torch.stack([m.lm_head(hd) for m, hd in zip(self.models, hidden)])
        return trunks, hidden, logits

    def feature_dim(self, feature: str) -> int:
        c = self.models[0].config.n_embd
        return c * len(self.models) if feature == "concatenated trunks" else c

    def router_inputs(self, feature: str = SHARED_TRUNK) -> Callable[[torch.Tensor], tuple]:
        """``x -> (router input, logits (N, B, T, V))``: what router training needs from the experts."""
        def fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            trunks = self.trunks(x)
            logits = torch.stack([m.crown(h, self.k) for m, h in zip(self.models, trunks)])
            return FEATURES[feature](x, trunks, self.models), logits
        return fn


# -- the scores ------------------------------------------------------------------------------------
@dataclass
class Scores:
    """``nll[row][domain]`` (n, T) token losses; ``weights[router][domain]`` (n, T, N) routing weights
    (a per-sequence router's weights repeated over T); ``stats[row][domain]`` calibration statistics
    of the specialists and soft-fused rows when asked for."""

    nll: dict[str, dict[str, torch.Tensor]]
    weights: dict[str, dict[str, torch.Tensor]]
    stats: dict[str, dict[str, dict[str, torch.Tensor]]] = field(default_factory=dict)

    @property
    def specialist_rows(self) -> list[str]:
        return [r for r in SPECIALIST_ROWS if r in self.nll]

    def spec_nll(self, domain: str) -> torch.Tensor:
        """(N, n, T) token losses of every specialist on ``domain``'s windows."""
        return torch.stack([self.nll[r][domain] for r in self.specialist_rows])

    def domains(self) -> list[str]:
        return list(next(iter(self.nll.values())))

    def tree(self) -> dict:
        """The three dicts as one tree of tensors, as :mod:`minigpt.score_cache` stores it."""
        return {"nll": self.nll, "weights": self.weights, "stats": self.stats}

    @classmethod
    def from_tree(cls, tree: Mapping) -> "Scores":
        return cls(dict(tree["nll"]), dict(tree.get("weights", {})), dict(tree.get("stats", {})))


class _Rows:
    """Every row's per-token values, written batch by batch into one buffer per row and domain
    (allocated at the row's first batch, ``sizes[domain]`` windows long). After the first batch the
    scoring loop keeps nothing it allocates, so each batch reuses the previous one's memory and the
    heap cannot fragment (minigpt/heap.py). A dict value (calibration statistics) gets a buffer per key."""

    def __init__(self, sizes: Mapping[str, int]) -> None:
        self.sizes = sizes
        self.bufs: dict[tuple, torch.Tensor] = {}
        self.filled: dict[tuple, int] = {}

    @classmethod
    def for_sets(cls, eval_sets: EvalSets) -> "_Rows":
        """Buffers as long as each domain's windows."""
        return cls({d: x.shape[0] for d, (x, _) in eval_sets.items()})

    def add(self, row: str, domain: str, value: torch.Tensor | Mapping[str, torch.Tensor]) -> None:
        for key, v in (value.items() if isinstance(value, Mapping) else [(None, value)]):
            self._write((row, domain, key), v)

    def _write(self, key: tuple, value: torch.Tensor) -> None:
        if key not in self.bufs:
            self.bufs[key] = value.new_empty((self.sizes[key[1]], *value.shape[1:]))
            self.filled[key] = 0
        start = self.filled[key]
        self.bufs[key][start:start + value.shape[0]] = value
        self.filled[key] = start + value.shape[0]

    def _done(self) -> dict[tuple, torch.Tensor]:
        return {k: b[:self.filled[k]] for k, b in self.bufs.items()}

    def cat(self) -> dict[str, dict[str, torch.Tensor]]:
        out: dict[str, dict[str, torch.Tensor]] = {}
        for (row, domain, _), buf in self._done().items():
            out.setdefault(row, {})[domain] = buf
        return out

    def merged(self) -> dict[str, dict[str, dict[str, torch.Tensor]]]:
        """Dict values, flattened: ``{row: {domain: {key: (n * T,)}}}``."""
        out: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
        for (row, domain, key), buf in self._done().items():
            out.setdefault(row, {}).setdefault(domain, {})[key] = buf.flatten()
        return out


def calibration_stats(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-token top-1 confidence, correctness and logit scale from (..., V) logits and (...) targets."""
    logits = logits.float()
    conf, pred = F.softmax(logits, dim=-1).max(dim=-1)
    return {"confidence": conf.flatten(), "correct": (pred == targets).flatten().float(),
            "logit_std": logits.std(dim=-1, unbiased=False).flatten()}


def _per_window(stats: Mapping[str, torch.Tensor], y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Flat per-token statistics back to (B, T), so each batch's rows land in place (_Rows)."""
    return {k: v.view(y.shape) for k, v in stats.items()}


def add_oracles(rows: _Rows, domain: str, spec: torch.Tensor) -> None:
    """Both oracles from the specialists' token losses (N, B, T), chosen with hindsight."""
    best = spec.mean(-1).argmin(0)  # (B,): the best specialist for each window
    rows.add(ORACLE, domain, spec.gather(0, best.view(1, -1, 1).expand(1, *spec.shape[1:]))[0])
    rows.add(ORACLE_PER_TOKEN, domain, spec.min(0).values)


def _router_rows(rows: _Rows, domain: str, name: str, w: torch.Tensor, logits: torch.Tensor, spec: torch.Tensor,
                 hidden: torch.Tensor, y: torch.Tensor, hidden_head: nn.Module | None) -> torch.Tensor:
    """The rows of one router on one batch; returns its weights as (B, T, N). Only the soft row
    needs the vocabulary: hard and probs rows come from the specialists' token losses ``spec``."""
    rows.add(fused_row("soft", name), domain, token_nll(fuse_logits(w, logits), y))
    if w.dim() == 2:  # one specialist per sequence, the others never run
        rows.add(dispatch_row(name), domain, hard_token_nll(w, spec))
        return w.unsqueeze(1).expand(-1, y.shape[1], -1)
    rows.add(fused_row("hard", name), domain, hard_token_nll(w, spec))
    rows.add(fused_row("probs", name), domain, mixture_token_nll(w, spec))
    if hidden_head is not None:
        mixed = (broadcast_weights(w, logits.shape[0]) * hidden).sum(0).to(hidden.dtype)  # the head's dtype
        rows.add(fused_row("hidden", name), domain, token_nll(hidden_head(mixed), y))
    return w


def score(eval_sets: EvalSets, experts: Experts, routers: Mapping[str, nn.Module] | None = None, *,
          base: GPT | None = None, extra: Mapping[str, nn.Module] | None = None, batch_size: int = 16,
          features: Mapping[str, str] | None = None, hidden_head: nn.Module | None = None,
          calibration: bool = False, names: Sequence[str] = SPECIALIST_ROWS) -> Scores:
    """Score every row on every domain's windows (see the module docstring for the rows).

    ``routers`` maps a name to a router; ``features[name]`` says what it reads (a key of
    :data:`FEATURES`, default the shared trunk). ``calibration`` keeps top-1 confidence statistics
    of the specialists and of every soft-fused row (Break 1's calibration comparison). ``names``
    are the experts' row names, in order (more than three experts need more names, e.g. a
    generalist beside the specialists); the oracles choose among all experts. A call with the same
    models, windows and settings as an earlier one reads its scores back (:mod:`minigpt.score_cache`).
    """
    routers, features, extra = routers or {}, features or {}, extra or {}
    n = len(experts.models)
    if len(names) < n:
        raise ValueError(f"{n} experts but {len(names)} row names; pass names= with one name per expert")
    reads = {"windows": eval_sets, "experts": experts.models, "k": experts.k, "shared": experts.shared,
             "routers": routers, "base": base, "extra": extra, "batch_size": batch_size, "features": features,
             "hidden_head": hidden_head, "calibration": calibration, "names": list(names)}
    tree = remembered("score", reads, lambda: _score(eval_sets, experts, routers, base, extra, batch_size,
                                                      features, hidden_head, calibration, names).tree())
    return Scores.from_tree(tree)


@torch.no_grad()
def _score(eval_sets: EvalSets, experts: Experts, routers: Mapping[str, nn.Module], base: GPT | None,
           extra: Mapping[str, nn.Module], batch_size: int, features: Mapping[str, str],
           hidden_head: nn.Module | None, calibration: bool, names: Sequence[str]) -> Scores:
    """:func:`score` itself: the experts, routers and windows on the device, batch by batch."""
    rows, weights, stats = _Rows.for_sets(eval_sets), _Rows.for_sets(eval_sets), _Rows.for_sets(eval_sets)
    dev = resolve()
    to_device([*experts.models, *routers.values(), *extra.values(),
               *(m for m in (base, hidden_head) if m is not None)], dev)
    # every batch allocates the same tensors and keeps none of them (_Rows): safe to reuse (heap.py)
    with autocast(dev), reuse_large_blocks():
        for domain, (x_all, y_all) in eval_sets.items():
            x_all, y_all = to_device((x_all, y_all), dev)
            for i in range(0, x_all.shape[0], batch_size):
                x, y = x_all[i:i + batch_size], y_all[i:i + batch_size]
                _score_batch(rows, weights, stats if calibration else None, domain, x, y, experts, routers,
                             base, extra, features, hidden_head, names)
    # read back once, to be reported
    return Scores(to_host(rows.cat()), to_host(weights.cat()), to_host(stats.merged()) if calibration else {})


def _score_batch(rows: _Rows, weights: _Rows, stats: _Rows | None, domain: str, x: torch.Tensor, y: torch.Tensor,
                 experts: Experts, routers: Mapping[str, nn.Module], base: GPT | None, extra: Mapping[str, nn.Module],
                 features: Mapping[str, str], hidden_head: nn.Module | None, names: Sequence[str]) -> None:
    """Every row of one batch of ``domain``'s windows (``stats`` None: no calibration statistics)."""
    if base is not None:
        rows.add("base", domain, token_nll(base(x)[0], y))
    for name, model in extra.items():
        rows.add(name, domain, token_nll(model(x)[0], y))
    trunks, hidden, logits = experts.forward(x)
    spec = torch.stack([token_nll(l, y) for l in logits])  # (N, B, T)
    n = len(experts.models)
    for j in range(n):
        rows.add(names[j], domain, spec[j])
        if stats is not None:
            stats.add(names[j], domain, _per_window(calibration_stats(logits[j], y), y))
    rows.add("uniform mix", domain, token_nll(fuse_logits(uniform_weights(x.shape[0], n, x.device), logits), y))
    for name, router in routers.items():
        w = router(FEATURES[features.get(name, SHARED_TRUNK)](x, trunks, experts.models))
        weights.add(name, domain, _router_rows(rows, domain, name, w, logits, spec, hidden, y, hidden_head))
        if stats is not None:
            stats.add(fused_row("soft", name), domain, _per_window(calibration_stats(fuse_logits(w, logits), y), y))
    add_oracles(rows, domain, spec)


def model_nll(model: nn.Module, eval_sets: EvalSets, batch_size: int = 16) -> dict[str, torch.Tensor]:
    """One whole model's token losses ``{domain: (n, T)}`` (a base alone, a specialist on other text);
    remembered like :func:`score`."""
    reads = {"model": model, "windows": eval_sets, "batch_size": batch_size}
    return remembered("model-nll", reads, lambda: _model_nll(model, eval_sets, batch_size))


@torch.no_grad()
def _model_nll(model: nn.Module, eval_sets: EvalSets, batch_size: int) -> dict[str, torch.Tensor]:
    dev = resolve()
    to_device(model, dev)
    rows = _Rows.for_sets(eval_sets)  # filled in place (heap.py)
    with autocast(dev), reuse_large_blocks():
        for d, (x, y) in eval_sets.items():
            x, y = to_device((x, y), dev)
            for i in range(0, x.shape[0], batch_size):
                rows.add("model", d, token_nll(model(x[i:i + batch_size])[0], y[i:i + batch_size]))
    return to_host(rows.cat()["model"])


def per_window_losses(fused, x: torch.Tensor, y: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Each expert's mean loss on each window: (n, T) ids and targets -> (n, N), what performance
    targets are made from. ``fused`` is a :class:`minigpt.fusion.FusedModel` (its crowns run batched);
    remembered like :func:`score`."""
    reads = {"fused": fused, "x": x, "y": y, "batch_size": batch_size}
    return remembered("window-losses", reads, lambda: {"loss": _per_window_losses(fused, x, y, batch_size)})["loss"]


@torch.no_grad()
def _per_window_losses(fused, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    dev = resolve()
    to_device(fused, dev)
    x, y = to_device((x, y), dev)
    out = _Rows({"all": x.shape[0]})  # filled in place: each batch reuses the last one's memory (heap.py)
    with autocast(dev), reuse_large_blocks():
        for i in range(0, x.shape[0], batch_size):
            _, logits = fused.expert_logits(x[i:i + batch_size])  # (N, B, T, V)
            out.add("loss", "all", token_nll(logits, y[i:i + batch_size].expand(logits.shape[0], -1, -1)).mean(-1).T)
    return to_host(out.cat()["loss"]["all"])
