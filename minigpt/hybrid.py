"""Hybrid windows (code pasted into a legal text, ...) and the two routers compared on them.

The chapter's router reads the last token and gives one weight vector per window; the causal
router gives weights per position from the tokens seen so far (DESIGN.md §5). On single-domain
windows the two look alike. A window that switches domain part-way is where they differ: a
per-window choice cannot be right on both sides of the switch, and the last token's summary has
seen text that comes after the tokens it is used to predict.

:func:`hybrid_windows` builds such windows from the held-out streams: 2-3 segments from different
domains, with the domain of every token. :func:`score_routers` measures fused loss and per-token
routing accuracy for any set of routers; :func:`run_hybrid` does it for an :class:`Experiment`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import DOMAINS
from .fusion import fuse_logits
from .model import GPT, token_nll_from_logprobs

SINCE_SWITCH_BUCKETS = (0, 4, 16, 32)  # tokens since the last domain switch: [0,4), [4,16), [16,32), [32,..)


@dataclass
class HybridSet:
    """``x``, ``y`` (n, T); ``labels`` (n, T) = domain index of each *target* token y[t] (what the
    router at position t should pick); ``segments[i]`` = list of dicts (domain, stream_start,
    window_start, length) describing window i's T + 1 tokens."""

    x: torch.Tensor
    y: torch.Tensor
    labels: torch.Tensor
    segments: list[list[dict]]


def hybrid_windows(streams: Mapping[str, np.ndarray], n: int, T: int, seed: int,
                   n_segments: Sequence[int] = (2, 3), min_len: int | None = None) -> HybridSet:
    """``n`` windows of T + 1 tokens, each 2-3 segments cut from different domains' streams.

    Segment domains are distinct and in random order; lengths are a uniform random composition of
    T + 1 with every segment at least ``min_len`` (default (T + 1) // 8) tokens. Deterministic in
    ``seed``. ``streams`` maps domain -> 1-D token array (e.g. the ``eval`` split).
    """
    domains = list(streams)
    min_len = max(1, (T + 1) // 8) if min_len is None else min_len
    if max(n_segments) > len(domains):
        raise ValueError(f"{max(n_segments)} segments from different domains need at least that many "
                         f"domains; got {len(domains)}")
    if max(n_segments) * min_len > T + 1:
        raise ValueError(f"{max(n_segments)} segments of at least {min_len} tokens do not fit in {T + 1}")
    gen = torch.Generator().manual_seed(seed)
    windows = torch.empty(n, T + 1, dtype=torch.long)
    labs = torch.empty(n, T + 1, dtype=torch.long)
    segments: list[list[dict]] = []
    for i in range(n):
        k = n_segments[int(torch.randint(len(n_segments), (1,), generator=gen))]
        order = torch.randperm(len(domains), generator=gen)[:k].tolist()
        extra = T + 1 - k * min_len
        cuts = sorted(torch.randint(0, extra + 1, (k - 1,), generator=gen).tolist())
        lengths = [min_len + b - a for a, b in zip([0] + cuts, cuts + [extra])]
        pos, segs = 0, []
        for d, length in zip(order, lengths):
            stream = streams[domains[d]]
            if stream.size < length:
                raise ValueError(f"{domains[d]} stream has {stream.size} tokens, fewer than a segment of {length}")
            start = int(torch.randint(0, stream.size - length + 1, (1,), generator=gen))
            windows[i, pos:pos + length] = torch.from_numpy(stream[start:start + length].astype(np.int64))
            labs[i, pos:pos + length] = DOMAINS.index(domains[d]) if domains[d] in DOMAINS else d
            segs.append({"domain": domains[d], "stream_start": start, "window_start": pos, "length": length})
            pos += length
        segments.append(segs)
    return HybridSet(windows[:, :-1], windows[:, 1:], labs[:, 1:], segments)


def single_domain_set(eval_sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> HybridSet:
    """The usual held-out windows as one labelled set (every token labelled with its window's domain)."""
    xs, ys, labs, segs = [], [], [], []
    for domain, (x, y) in eval_sets.items():
        xs.append(x)
        ys.append(y)
        labs.append(torch.full_like(y, DOMAINS.index(domain)))
        segs += [[{"domain": domain, "window_start": 0, "length": x.shape[1] + 1}]] * x.shape[0]
    return HybridSet(torch.cat(xs), torch.cat(ys), torch.cat(labs), segs)


def _since_switch(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(segment index, tokens since the segment started) for every position of (n, T) labels."""
    change = torch.zeros_like(labels, dtype=torch.bool)
    change[:, 1:] = labels[:, 1:] != labels[:, :-1]
    seg = change.long().cumsum(1)
    pos = torch.arange(labels.shape[1]).expand_as(labels)
    start = torch.where(change, pos, torch.zeros_like(pos)).cummax(1).values
    return seg, pos - start


@torch.no_grad()
def score_routers(specialists: Sequence[GPT], k: int, routers: Mapping[str, nn.Module], data: HybridSet,
                  batch_size: int = 16) -> dict:
    """Fused (logit) loss and per-token routing accuracy of each router on ``data``.

    Also the specialists' own losses and the per-token oracle, and the routing accuracy split by
    segment (first, second, third) and by tokens since the last switch.
    """
    nll = {name: [] for name in routers}
    correct = {name: [] for name in routers}
    spec_nll = []
    for i in range(0, data.x.shape[0], batch_size):
        x, y, lab = data.x[i:i + batch_size], data.y[i:i + batch_size], data.labels[i:i + batch_size]
        h = specialists[0].trunk(x, k)
        logits = torch.stack([m.crown(h, k) for m in specialists])
        spec_nll.append(torch.stack([token_nll_from_logprobs(F.log_softmax(l.float(), -1), y) for l in logits]))
        for name, router in routers.items():
            w = router(h)
            nll[name].append(token_nll_from_logprobs(F.log_softmax(fuse_logits(w, logits).float(), -1), y))
            if w.dim() == 2:
                w = w.unsqueeze(1).expand(-1, x.shape[1], -1)
            correct[name].append((w.argmax(-1) == lab).double())
    spec = torch.cat(spec_nll, 1)  # (N, n, T)
    seg, since = _since_switch(data.labels)
    edges = list(SINCE_SWITCH_BUCKETS) + [data.x.shape[1] + 1]
    out = {"n_windows": int(data.x.shape[0]), "n_tokens": int(data.y.numel()),
           "switches_per_window": float((seg[:, -1]).double().mean()),
           "specialists": {f"{DOMAINS[j]} specialist": float(spec[j].mean()) for j in range(spec.shape[0])},
           "oracle (per token)": float(spec.min(0).values.mean()), "routers": {}}
    for name in routers:
        c = torch.cat(correct[name])
        out["routers"][name] = {
            "fused_loss": float(torch.cat(nll[name]).mean()),
            "routing_accuracy": float(c.mean()),
            "accuracy_by_segment": {str(s + 1): float(c[seg == s].mean()) for s in range(int(seg.max()) + 1)},
            "accuracy_by_tokens_since_switch": {(f"{a}-{b - 1}" if b <= data.x.shape[1] else f"{a}+"):
                                                float(c[(since >= a) & (since < b)].mean())
                                                for a, b in zip(edges[:-1], edges[1:]) if ((since >= a) & (since < b)).any()},
        }
    return out


def run_hybrid(exp, n: int | None = None, seed: int | None = None, out_dir: Path | None = None) -> dict:
    """Last-token vs causal per-token router on single-domain and hybrid held-out windows."""
    from .cache import write_json
    from .experiment import derive_seed, results_root

    t0 = time.time()
    p = exp.profile
    n = n or len(DOMAINS) * p.eval_chunks  # as many windows as the single-domain set
    seed = derive_seed(exp.seed, "hybrid") if seed is None else seed
    specs = exp.specialists()
    routers = {"last-token": exp.router("last_token"), "per-token": exp.router("per_token")}
    hybrid = hybrid_windows({d: exp.streams.get(d, "eval") for d in DOMAINS}, n, p.model.block_size, seed)
    report = {
        "profile": p.name, **exp.provenance(), "seed": exp.seed, "hybrid_seed": seed, "freeze_k": exp.k,
        "router_config": p.router,
        "label_convention": "a token's label is the domain of the target y[t] the router's weights at t predict",
        "single_domain": score_routers(specs, exp.k, routers, single_domain_set(exp.eval_sets), p.eval_batch_size),
        "hybrid": score_routers(specs, exp.k, routers, hybrid, p.eval_batch_size),
    }
    report["wall_seconds"] = round(time.time() - t0, 1)
    out_dir = Path(out_dir or results_root() / p.name / f"seed-{exp.seed}")
    write_json(out_dir / "hybrid.json", report)
    report["out_path"] = str(out_dir / "hybrid.json")
    return report


def summarize_hybrid(rep: dict) -> str:
    lines = [f"Routers on single-domain vs hybrid windows — profile {rep['profile']}, seed {rep['seed']} "
             f"(hybrid seed {rep['hybrid_seed']})"]
    for name in ("single_domain", "hybrid"):
        r = rep[name]
        lines.append(f"\n{name.replace('_', '-')}: {r['n_windows']} windows, {r['switches_per_window']:.2f} switches "
                     f"per window; oracle (per token) {r['oracle (per token)']:.4f}; specialists "
                     + ", ".join(f"{k.split()[0]} {v:.4f}" for k, v in r["specialists"].items()))
        for router, v in r["routers"].items():
            seg = " ".join(f"{k}:{a:.0%}" for k, a in v["accuracy_by_segment"].items())
            since = " ".join(f"{k}:{a:.0%}" for k, a in v["accuracy_by_tokens_since_switch"].items())
            lines.append(f"  {router:<11} fused loss {v['fused_loss']:.4f}  routing accuracy {v['routing_accuracy']:.1%}"
                         f"  by segment [{seg}]  by tokens since switch [{since}]")
    return "\n".join(lines)
