"""A per-token router that remembers the document: the same trained router, its state carried in.

Every evaluation window starts the causal router cold, so its first positions route on a few
tokens of evidence, and that is where most of the oracle gap sits. A router reading a document in
use has the text before the window. This study runs the SAME trained per-token router
(``exp.router("per_token")``, no retraining) with its decaying average started on the trunk states
of the T tokens just before each window in the held-out stream (:func:`minigpt.router.with_memory`).

* The prefix of a window is the end of the previous window-sized slot of the stream. Its trunk
  states are computed on their own (a window of T tokens, like any other), then the router reads
  prefix and window as one sequence of 2T states and keeps the window's T weights.
* Memory stops at a document boundary: prefix positions up to and including the last end-of-document
  token are forgotten (:func:`minigpt.router.after_last_eos`), as a model reading one document would
  not have the previous one. The row ``memory-across-documents`` keeps them, to show what the rule
  changes. The first slot of each stream has no prefix: it starts cold (it starts a document, too).
* Scored with :func:`minigpt.scoring.score` on the same windows as the cold-start router.
  :class:`CarriedStateRouter` is what ``score`` calls: it takes the prefixes batch by batch, in the
  order ``score`` visits the windows, and refuses a batch whose trunk states are not the ones it
  expects.
"""
from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn as nn

from ..cache import cache_root, cached, config_key
from ..chapter import rounded
from ..checkpoint import model_fingerprint
from ..config import DOMAINS
from ..device import autocast, resolve, to_device
from ..evaluate import ORACLE, gap_by_position, gap_per_position, loss_table, routing_accuracy
from ..router import after_last_eos, memory_code_fingerprint, router_code_fingerprint, with_memory
from ..fusion import FusedModel
from ..scoring import ScoreRequest, fused_row, score
from ..tokenizer import eos_id
from ..intervals import domain_window_means
from .common import paired_interval, write_report

COLD, MEMORY, ACROSS = "per-token", "document-memory", "memory-across-documents"  # router names in the rows
TARGET_GAP_NATS = 0.01  # the aim: the memory row's oracle gap at or below this


def eval_prefixes(stream: np.ndarray, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each of the (n, T) inputs :func:`minigpt.streams.eval_windows` cut from ``stream``, the T
    tokens just before it -> prefix ids (n, T) and whether the window has one (n,); the first slot
    has none (its prefix is all zeros). Refuses windows that are not the ones eval_windows cuts."""
    n, T = windows.shape
    usable = stream.size // (T + 1)
    slots = np.linspace(0, usable - 1, n).round().astype(int)  # as eval_windows picks them
    cut = np.stack([stream[i * (T + 1):i * (T + 1) + T] for i in slots]).astype(np.int64)
    if not np.array_equal(cut, windows.numpy()):
        raise ValueError("these windows are not eval_windows of this stream; prefixes would not precede them")
    ids = np.zeros((n, T), dtype=np.int64)
    for row, i in enumerate(slots):
        if i > 0:
            ids[row] = stream[i * (T + 1) - T:i * (T + 1)]
    return torch.from_numpy(ids), torch.from_numpy(slots > 0)


class CarriedStateRouter(nn.Module):
    """A :class:`~minigpt.router.CausalRouter` with its state carried in, as :func:`score` calls a router.

    ``batches`` holds, in the order ``score`` visits the windows (domains in order, then batches),
    each batch's (prefix states (B, P, C), prefix mask (B, P), window states (B, T, C)). Each call
    takes the next one and checks that ``score``'s trunk states are that batch's window states.
    """

    def __init__(self, router: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
        super().__init__()
        self.router, self.batches = router, list(batches)

    def forward(self, shared_h: torch.Tensor) -> torch.Tensor:
        if not self.batches:
            raise RuntimeError("CarriedStateRouter was called for more batches than it holds prefixes for")
        prefix_h, keep, expect = self.batches.pop(0)
        if expect.shape != shared_h.shape or not torch.allclose(expect, shared_h, atol=1e-5, rtol=1e-4):
            raise RuntimeError("CarriedStateRouter got trunk states of other windows than its prefixes belong "
                               "to; score the eval sets in the order the prefixes were built")
        return with_memory(self.router, prefix_h, shared_h, keep)


@torch.no_grad()
def _memory_batches(exp, trunk, k: int, across_documents: bool) -> list[tuple]:
    """(prefix states, prefix mask, window states) per scoring batch of every domain, in order."""
    bs, eos, out, dev = exp.profile.eval_batch_size, eos_id(exp.tokenizer), [], resolve()
    to_device(trunk, dev)  # the states stay on the device, where score() runs the router on them
    for d, (x_all, _) in exp.eval_sets.items():
        ids, has = eval_prefixes(exp.streams.get(d, "eval"), x_all)
        for i in range(0, x_all.shape[0], bs):
            pre, x, has_b = to_device((ids[i:i + bs], x_all[i:i + bs], has[i:i + bs]), dev)
            keep = torch.ones(pre.shape, device=dev) if across_documents else after_last_eos(pre, eos)
            keep = keep * has_b.unsqueeze(1).float()  # no prefix: cold start
            with autocast(dev):
                out.append((trunk.trunk(pre, k), keep, trunk.trunk(x, k)))
    return out


def prefix_counts(exp) -> dict:
    """How many windows have no prefix, a prefix cut at a document boundary, or one wholly forgotten."""
    eos = eos_id(exp.tokenizer)
    out = {"n_windows": 0, "windows_without_prefix": 0, "windows_prefix_cut_at_eos": 0,
           "windows_prefix_fully_forgotten": 0, "mean_prefix_tokens_kept": 0.0}
    kept = []
    for d, (x_all, _) in exp.eval_sets.items():
        ids, has = eval_prefixes(exp.streams.get(d, "eval"), x_all)
        keep = after_last_eos(ids, eos) * has.unsqueeze(1).float()
        out["n_windows"] += int(x_all.shape[0])
        out["windows_without_prefix"] += int((~has).sum())
        out["windows_prefix_cut_at_eos"] += int(((ids == eos).any(1) & has).sum())
        out["windows_prefix_fully_forgotten"] += int((keep.sum(1) == 0).sum())
        kept.append(keep.sum(1))
    out["mean_prefix_tokens_kept"] = float(torch.cat(kept).mean())
    return out


def _row(scores, table, name: str) -> dict:
    """One router's fused (soft) loss, oracle gap overall / by position bucket / per position, routing accuracy."""
    row = fused_row("soft", name)
    return {"row": row, "mixed_loss": float(table.loc[row, "mixed"]),
            "loss": {d: float(table.loc[row, d]) for d in DOMAINS},
            "oracle_gap_nats": float(table.loc[row, "mixed"] - table.loc[ORACLE, "mixed"]),
            "oracle_gap_by_position": gap_by_position(scores.nll, row),
            "gap_per_position": [round(v, 6) for v in gap_per_position(scores.nll, row)],
            "routing_accuracy": routing_accuracy(scores.weights[name])}


def _measure(exp) -> dict:
    """Score the cold-start router and the same router with memory (both EOS rules) on the eval windows."""
    specs, k = exp.specialists(), exp.k
    cold = exp.router("per_token")
    routers = {COLD: cold, **{name: CarriedStateRouter(cold, _memory_batches(exp, specs[0], k, name == ACROSS))
                              for name in (MEMORY, ACROSS)}}
    scores = score(ScoreRequest(windows=exp.eval_sets, experts=FusedModel(specs, k), routers=routers, base=exp.base(),
                                batch_size=exp.profile.eval_batch_size))
    if any(r.batches for r in routers.values() if isinstance(r, CarriedStateRouter)):
        raise RuntimeError("score visited fewer batches than the prefixes were built for")
    table = loss_table(scores.nll)
    rows = {name: _row(scores, table, name) for name in routers}
    cold_w, mem_w = (domain_window_means(scores.nll[rows[n]["row"]]) for n in (COLD, MEMORY))
    return {"rows": rows, "oracle_mixed_loss": float(table.loc[ORACLE, "mixed"]),
            "memory_vs_cold": paired_interval(cold_w, mem_w)}


def document_memory(exp) -> dict:
    """The cold-start per-token router against the same router with document memory; writes
    ``document_memory.json``. Cached as JSON under ``<cache>/document_memory``, keyed by the router
    code, the memory code, the specialists, the router's weights and the evaluation set."""
    specs, k, p = exp.specialists(), exp.k, exp.profile
    router = exp.router("per_token")
    key = config_key("document-memory", router_code_fingerprint(), memory_code_fingerprint(),
                     [model_fingerprint(m) for m in specs], model_fingerprint(router), k, exp.seed,
                     exp.corpus_fingerprint, p.eval_chunks, p.model.block_size)
    path = cache_root() / "document_memory" / f"{key}.json"

    def build() -> dict:
        measured = _measure(exp)
        cold, mem = (measured["rows"][n]["oracle_gap_nats"] for n in (COLD, MEMORY))
        return rounded({
            "profile": p.name, "seed": exp.seed, "freeze_k": k, **exp.provenance(),
            "memory_code": memory_code_fingerprint(), "eval_chunks": p.eval_chunks, "block_size": p.model.block_size,
            "decay": router.decay, "prefix_tokens": p.model.block_size,
            "eos_rule": "memory stops at a document boundary: prefix positions up to and including the last "
                        "end-of-document token are forgotten (row memory-across-documents keeps them)",
            "first_window_rule": "the first slot of each stream has no prefix and starts cold",
            **prefix_counts(exp), **measured,
            "gap_closed_share": (cold - mem) / cold if cold > 0 else None,
            "target_gap_nats": TARGET_GAP_NATS, "memory_meets_target": bool(mem <= TARGET_GAP_NATS)})

    rep = cached(path, build, lambda obj, tmp: tmp.write_text(json.dumps(obj, indent=2)),
                 lambda q: json.loads(q.read_text()))
    return write_report(exp, rep, "document_memory")


def summarize(rep: dict) -> str:
    """A :func:`document_memory` report as text (the CLI's output)."""
    lines = [f"Per-token router, cold start vs document memory — profile {rep['profile']}, seed {rep['seed']}, "
             f"K={rep['freeze_k']}; {rep['n_windows']} windows, {rep['windows_without_prefix']} without a prefix "
             f"(cold), {rep['windows_prefix_cut_at_eos']} with a prefix cut at a document boundary",
             f"oracle (per sequence) mixed loss {rep['oracle_mixed_loss']:.4f}"]
    for name, r in rep["rows"].items():
        buckets = "  ".join(f"{b}: {v:+.4f}" for b, v in r["oracle_gap_by_position"].items())
        acc = " ".join(f"{d} {a:.1%}" for d, a in r["routing_accuracy"].items())
        lines.append(f"  {name:<24} mixed {r['mixed_loss']:.4f}  oracle gap {r['oracle_gap_nats']:+.4f}  "
                     f"[{buckets}]  routing {acc}")
    m, share = rep["memory_vs_cold"], rep["gap_closed_share"]
    share = "n/a (no cold gap)" if share is None else f"{share:.0%}"
    lines.append(f"memory − cold, mixed: {m['delta']:+.4f} ± {m['se']:.4f} nats ({m['verdict']}); "
                 f"share of the cold gap closed: {share}; "
                 f"gap ≤ {rep['target_gap_nats']} nats: {'yes' if rep['memory_meets_target'] else 'no'}")
    return "\n".join(lines)
