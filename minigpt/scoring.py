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
from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import rows as R
from .config import DOMAINS
from .device import autocast, resolve, to_device, to_host
from .fusion import (FEATURES, SHARED_TRUNK, FusedModel, broadcast_weights, fuse_logits,  # noqa: F401
                     hard_token_nll, mixture_token_nll, uniform_weights)
from .heap import reuse_large_blocks
from .model import GPT, token_nll_from_logprobs
from .score_cache import remembered

SPECIALIST_ROWS = tuple(f"{d} specialist" for d in DOMAINS)
HEADLINE = "fused soft (per-token router)"
ORACLE = R.ORACLE.name
ORACLE_PER_TOKEN = R.ORACLE_PER_TOKEN.name

EvalSets = Mapping[str, tuple[torch.Tensor, torch.Tensor]]  # domain -> inputs (n, T), targets (n, T)


def fused_row(rule: str, router: str) -> str:
    """Row name of a fused model: ``rule`` is soft, hard, probs or hidden; ``router`` the router's name."""
    return R.fused(rule, router).name


def dispatch_row(router: str) -> str:
    return R.dispatch(router).name


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(..., V) logits and (...) targets -> (...) next-token loss in nats (computed in float32)."""
    return token_nll_from_logprobs(F.log_softmax(logits.float(), dim=-1), targets)


# -- what to score ---------------------------------------------------------------------------------
@dataclass
class Routed:
    """A router in a scoring request, and what it reads (a key of :data:`minigpt.fusion.FEATURES`)."""

    router: nn.Module
    reads: str = SHARED_TRUNK


@dataclass
class ScoreRequest:
    """One scoring pass: ``experts`` (a :class:`FusedModel`; its own router is not used) on ``windows``,
    with every named router, the base and any ``extra`` whole model beside them. ``hidden_head`` adds
    hidden-state fusion rows, ``calibration`` keeps top-1 confidence statistics of the experts and the
    soft-fused rows; ``names`` are the experts' row names, in order."""

    windows: EvalSets
    experts: FusedModel
    routers: Mapping[str, nn.Module | Routed] = field(default_factory=dict)
    base: GPT | None = None
    extra: Mapping[str, nn.Module] = field(default_factory=dict)
    hidden_head: nn.Module | None = None
    calibration: bool = False
    names: Sequence[str] = SPECIALIST_ROWS
    batch_size: int = 16

    def __post_init__(self) -> None:
        self.routers = {n: r if isinstance(r, Routed) else Routed(r) for n, r in self.routers.items()}
        n = len(self.experts.specialists)
        if len(self.names) < n:
            raise ValueError(f"{n} experts but {len(self.names)} row names; pass names= with one name per expert")


# -- the scores ------------------------------------------------------------------------------------
@dataclass
class Scores:
    """``nll[row][domain]`` (n, T) token losses; ``weights[router][domain]`` (n, T, N) routing weights
    (a per-sequence router's weights repeated over T); ``stats[row][domain]`` calibration statistics
    of the specialists and soft-fused rows when asked for."""

    nll: dict[str, dict[str, torch.Tensor]]
    weights: dict[str, dict[str, torch.Tensor]]
    stats: dict[str, dict[str, dict[str, torch.Tensor]]] = field(default_factory=dict)
    rows: dict[str, R.Row] = field(default_factory=dict)  # what each row of ``nll`` is (minigpt.rows)

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
    def from_tree(cls, tree: Mapping, rows: Mapping[str, R.Row] | None = None) -> "Scores":
        return cls(dict(tree["nll"]), dict(tree.get("weights", {})), dict(tree.get("stats", {})), dict(rows or {}))


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


def _router_rows(out: _Rows, domain: str, name: str, w: torch.Tensor, batch: "_Batch",
                 hidden_head: nn.Module | None) -> torch.Tensor:
    """The rows of one router on one batch; returns its weights as (B, T, N). Only the soft row
    needs the vocabulary: hard and probs rows come from the experts' token losses."""
    out.add(fused_row("soft", name), domain, token_nll(fuse_logits(w, batch.logits), batch.y))
    if w.dim() == 2:  # one specialist per sequence, the others never run
        out.add(dispatch_row(name), domain, hard_token_nll(w, batch.spec))
        return w.unsqueeze(1).expand(-1, batch.y.shape[1], -1)
    out.add(fused_row("hard", name), domain, hard_token_nll(w, batch.spec))
    out.add(fused_row("probs", name), domain, mixture_token_nll(w, batch.spec))
    if hidden_head is not None:
        mixed = (broadcast_weights(w, batch.logits.shape[0]) * batch.hidden).sum(0).to(batch.hidden.dtype)
        out.add(fused_row("hidden", name), domain, token_nll(hidden_head(mixed), batch.y))
    return w


def score(req: ScoreRequest) -> Scores:
    """Score every row of ``req`` on every domain's windows (the module docstring lists the rows). A
    request with the same models, windows and settings as an earlier one reads its scores back
    (:mod:`minigpt.score_cache`)."""
    ex = req.experts
    reads = {"windows": req.windows, "experts": list(ex.specialists), "k": ex.k, "shared": ex.shared, "batched": ex.batched,
             "routers": {n: r.router for n, r in req.routers.items()}, "base": req.base, "extra": req.extra,
             "batch_size": req.batch_size, "features": {n: r.reads for n, r in req.routers.items()},
             "hidden_head": req.hidden_head, "calibration": req.calibration, "names": list(req.names)}
    tree = remembered("score", reads, lambda: _score(req))
    return Scores.from_tree(tree, row_info(req, {n: bool(t) for n, t in tree.get("whole_window", {}).items()}))


def row_info(req: ScoreRequest, whole_window: Mapping[str, bool]) -> dict[str, R.Row]:
    """Every row ``req`` scores, as values: the models, the experts, the uniform mix, each router's rows
    (``whole_window[name]``: the router gives one weight per sequence), the oracles."""
    out = [R.model("base")] if req.base is not None else []
    out += [R.model(n) for n in req.extra] + [R.specialist(n) for n in req.names[:len(req.experts.specialists)]]
    out.append(R.UNIFORM)
    for name in req.routers:
        if whole_window[name]:
            out += [R.fused("soft", name, whole_window=True), R.dispatch(name)]
        else:
            out += [R.fused(rule, name) for rule in ("soft", "hard", "probs")]
            out += [R.fused("hidden", name)] if req.hidden_head is not None else []
    return {r.name: r for r in [*out, R.ORACLE, R.ORACLE_PER_TOKEN]}


@dataclass
class _Batch:
    """What every row of one batch is computed from: the experts' pass over the windows."""

    x: torch.Tensor
    y: torch.Tensor
    trunks: list
    hidden: torch.Tensor  # (N, B, T, C)
    logits: torch.Tensor  # (N, B, T, V)
    spec: torch.Tensor  # (N, B, T): each expert's token losses


@torch.no_grad()
def _score(req: ScoreRequest) -> dict:
    """:func:`score` itself: the experts, routers and windows on the device, batch by batch. Returns the
    tree :mod:`minigpt.score_cache` keeps: token losses, weights, statistics, and which routers gave one
    weight per sequence."""
    out = {key: _Rows.for_sets(req.windows) for key in ("nll", "weights", "stats")}
    out["per_sequence"] = {}
    dev = resolve()
    to_device([*req.experts.specialists, *(r.router for r in req.routers.values()), *req.extra.values(),
               *(m for m in (req.base, req.hidden_head) if m is not None)], dev)
    # every batch allocates the same tensors and keeps none of them (_Rows): safe to reuse (heap.py)
    with autocast(dev), reuse_large_blocks():
        for domain, (x_all, y_all) in req.windows.items():
            x_all, y_all = to_device((x_all, y_all), dev)
            for i in range(0, x_all.shape[0], req.batch_size):
                _score_batch(req, out, domain, x=x_all[i:i + req.batch_size], y=y_all[i:i + req.batch_size])
    stats = to_host(out["stats"].merged()) if req.calibration else {}
    per_sequence = {n: torch.tensor(out["per_sequence"].get(n, False)) for n in req.routers}
    return {**Scores(to_host(out["nll"].cat()), to_host(out["weights"].cat()), stats).tree(),  # read back once
            "whole_window": per_sequence}


def _score_batch(req: ScoreRequest, out: dict[str, _Rows], domain: str, x: torch.Tensor, y: torch.Tensor) -> None:
    """Every row of one batch of ``domain``'s windows."""
    nll, stats = out["nll"], out["stats"] if req.calibration else None
    if req.base is not None:
        nll.add("base", domain, token_nll(req.base(x)[0], y))
    for name, model in req.extra.items():
        nll.add(name, domain, token_nll(model(x)[0], y))
    ex = req.experts
    trunks = ex.trunks(x)  # the frozen trunk, once when it is shared
    hidden, logits = ex.crowns(trunks)  # every crown
    b = _Batch(x, y, trunks, hidden=hidden, logits=logits, spec=torch.stack([token_nll(lg, y) for lg in logits]))
    for j in range(len(ex.specialists)):
        nll.add(req.names[j], domain, b.spec[j])
        if stats is not None:
            stats.add(req.names[j], domain, _per_window(calibration_stats(logits[j], y), y))
    nll.add("uniform mix", domain, token_nll(fuse_logits(uniform_weights(x.shape[0], len(logits), x.device), logits), y))
    for name, routed in req.routers.items():
        w = routed.router(FEATURES[routed.reads](x, trunks, list(ex.specialists)))
        out["per_sequence"][name] = w.dim() == 2
        out["weights"].add(name, domain, _router_rows(nll, domain, name, w=w, batch=b, hidden_head=req.hidden_head))
        if stats is not None:
            stats.add(fused_row("soft", name), domain, _per_window(calibration_stats(fuse_logits(w, logits), y), y))
    add_oracles(nll, domain, b.spec)


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
