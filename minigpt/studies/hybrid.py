"""Windows that switch domain part-way, and the last-token vs per-token routers measured on them.

On a single-domain window a per-window choice and a per-token choice look much the same. When
code is pasted into a legal text they part ways: one weight vector per window cannot be right on
both sides of the switch, and a last-token summary has read text that comes after the tokens it
is used to predict; the causal router only reads what came before each position.

* :func:`hybrid_windows` cuts 2-3 segments from different domains' held-out streams into one
  window and labels every token with its domain; :func:`single_domain_set` labels the usual windows.
* :func:`score_routers` scores routers on such a set with :func:`minigpt.scoring.score` and adds
  per-token routing accuracy, split by segment and by tokens since the last switch.
* :func:`run_hybrid` does it for an :class:`~minigpt.experiment.Experiment` and writes ``hybrid.json``.
* The rest reads a report back for the notebooks: tables, the windows themselves, switch lags.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from ..config import DOMAINS, derive_seed
from ..model import GPT
from ..fusion import FusedModel
from ..scoring import ORACLE_PER_TOKEN, ScoreRequest, fused_row, score
from .common import write_report

SINCE_SWITCH_BUCKETS = (0, 4, 16, 32)  # tokens since the last domain switch: [0,4), [4,16), [16,32), [32,..)
_SET = "windows"  # the one "domain" name a labelled set is scored under


@dataclass
class HybridSet:
    """Labelled windows. ``x``, ``y`` (n, T) inputs and next-token targets; ``labels`` (n, T) the
    domain index of each target y[t], i.e. what the router's weights at position t should pick;
    ``segments[i]`` one dict per segment of window i's T + 1 tokens (domain, stream_start,
    window_start, length)."""

    x: torch.Tensor
    y: torch.Tensor
    labels: torch.Tensor
    segments: list[list[dict]]


def _segment_lengths(k: int, total: int, min_len: int, gen: torch.Generator) -> list[int]:
    """A uniform random composition of ``total`` into ``k`` parts of at least ``min_len`` each."""
    extra = total - k * min_len
    cuts = sorted(torch.randint(0, extra + 1, (k - 1,), generator=gen).tolist())
    return [min_len + b - a for a, b in zip([0] + cuts, cuts + [extra])]


def hybrid_windows(streams: Mapping[str, np.ndarray], n: int, T: int, seed: int,
                   n_segments: Sequence[int] = (2, 3), min_len: int | None = None) -> HybridSet:
    """``n`` windows of T + 1 tokens, each made of 2-3 segments cut from different domains' streams.

    ``streams`` maps domain -> 1-D token array (e.g. the ``eval`` split). Each window's domains are
    distinct, in random order; every segment has at least ``min_len`` tokens (default
    (T + 1) // 8). Deterministic in ``seed``.
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
        pos, segs = 0, []
        for d, length in zip(order, _segment_lengths(k, T + 1, min_len, gen)):
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


def since_switch(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(segment index, tokens since that segment started) at every position of (n, T) labels.

    The first position of a window counts as the start of its first segment.
    """
    change = torch.zeros_like(labels, dtype=torch.bool)
    change[:, 1:] = labels[:, 1:] != labels[:, :-1]
    seg = change.long().cumsum(1)
    pos = torch.arange(labels.shape[1]).expand_as(labels)
    start = torch.where(change, pos, torch.zeros_like(pos)).cummax(1).values
    return seg, pos - start


def _accuracy_splits(correct: torch.Tensor, labels: torch.Tensor) -> dict:
    """Mean of (n, T) per-token hits overall, by segment (1, 2, 3) and by tokens since the last switch."""
    seg, since = since_switch(labels)
    T = labels.shape[1]
    edges = list(SINCE_SWITCH_BUCKETS) + [T + 1]
    buckets = {}
    for a, b in zip(edges[:-1], edges[1:]):
        inside = (since >= a) & (since < b)
        if inside.any():
            buckets[f"{a}-{b - 1}" if b <= T else f"{a}+"] = float(correct[inside].mean())
    return {"routing_accuracy": float(correct.mean()),
            "accuracy_by_segment": {str(s + 1): float(correct[seg == s].mean()) for s in range(int(seg.max()) + 1)},
            "accuracy_by_tokens_since_switch": buckets}


def score_routers(specialists: Sequence[GPT], k: int, routers: Mapping[str, nn.Module], data: HybridSet,
                  batch_size: int = 16) -> dict:
    """Fused (soft, logit) loss and per-token routing accuracy of each router on ``data``.

    Scored by :func:`minigpt.scoring.score` on the whole set at once; also the specialists' own
    losses, the per-token oracle, and each router's accuracy split by segment and by tokens
    since the last switch.
    """
    scores = score(ScoreRequest(windows={_SET: (data.x, data.y)}, experts=FusedModel(specialists, k), routers=routers,
                                batch_size=batch_size))
    seg, _ = since_switch(data.labels)
    out = {"n_windows": int(data.x.shape[0]), "n_tokens": int(data.y.numel()),
           "switches_per_window": float(seg[:, -1].double().mean()),
           "specialists": {row: float(scores.nll[row][_SET].mean()) for row in scores.specialist_rows},
           "oracle (per token)": float(scores.nll[ORACLE_PER_TOKEN][_SET].mean()), "routers": {}}
    for name in routers:
        correct = (scores.weights[name][_SET].argmax(-1) == data.labels).double()
        splits = _accuracy_splits(correct, data.labels)
        out["routers"][name] = {"fused_loss": float(scores.nll[fused_row("soft", name)][_SET].mean()), **splits}
    return out


def run_hybrid(exp, n: int | None = None, seed: int | None = None, out: Path | None = None) -> dict:
    """Last-token vs causal per-token router on single-domain and on hybrid held-out windows.

    ``n`` hybrid windows (default: as many as the single-domain set) from the ``eval`` streams,
    cut with ``seed`` (default: derived from the experiment seed). Writes ``hybrid.json``.
    """
    t0 = time.time()
    p = exp.profile
    n = n or len(DOMAINS) * p.study_windows
    seed = derive_seed(exp.seed, "hybrid") if seed is None else seed
    specs = exp.specialists()
    routers = {"last-token": exp.router("last_token"), "per-token": exp.router("per_token")}
    hybrid = hybrid_windows({d: exp.streams.get(d, "eval") for d in DOMAINS}, n, p.model.block_size, seed)
    report = {
        "profile": p.name, **exp.provenance(), "seed": exp.seed, "hybrid_seed": seed, "freeze_k": exp.k,
        "router_config": p.router,
        "label_convention": "a token's label is the domain of the target y[t] the router's weights at t predict",
        "single_domain": score_routers(specs, exp.k, routers, data=single_domain_set(exp.study_sets),
                                       batch_size=p.eval_batch_size),
        "hybrid": score_routers(specs, exp.k, routers, data=hybrid, batch_size=p.eval_batch_size),
    }
    report["wall_seconds"] = round(time.time() - t0, 1)
    return write_report(exp, report, "hybrid", out)


def summarize(rep: dict) -> str:
    """A :func:`run_hybrid` report as text (the CLI's output)."""
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
            lines.append(f"  {router:<11} fused loss {v['fused_loss']:.4f}  "
                         f"routing accuracy {v['routing_accuracy']:.1%}"
                         f"  by segment [{seg}]  by tokens since switch [{since}]")
    return "\n".join(lines)


# -- reading a report back (notebooks 4 and 6-8) ------------------------------------------------
def hybrid_set(exp, rep: dict) -> HybridSet:
    """The hybrid held-out windows a :func:`run_hybrid` report was measured on (same seed, same n)."""
    return hybrid_windows({d: exp.streams.get(d, "eval") for d in DOMAINS}, rep["hybrid"]["n_windows"],
                          exp.profile.model.block_size, rep["hybrid_seed"])


def hybrid_table(rep: dict) -> pd.DataFrame:
    """Fused loss and routing accuracy of each router on single-domain and on hybrid windows, next to
    the best single specialist and the per-token oracle on the same windows."""
    rows = {}
    for kind in ("single_domain", "hybrid"):
        r = rep[kind]
        best = min(r["specialists"], key=r["specialists"].get)
        for router, v in r["routers"].items():
            rows[(kind.replace("_", "-"), router)] = {
                "fused loss": v["fused_loss"], "routing accuracy": v["routing_accuracy"],
                "best specialist": r["specialists"][best], "oracle (per token)": r["oracle (per token)"],
                "gain vs best specialist": r["specialists"][best] - v["fused_loss"]}
    return pd.DataFrame(rows).T.rename_axis(["windows", "router"])


def accuracy_since_switch(rep: dict, kind: str = "hybrid") -> pd.DataFrame:
    """Routing accuracy by tokens since the last domain switch (rows: distance bucket, columns: router)."""
    return pd.DataFrame({router: v["accuracy_by_tokens_since_switch"]
                         for router, v in rep[kind]["routers"].items()}).rename_axis("tokens since switch")


def segment_snippets(tokenizer, hs: HybridSet, i: int, chars: int = 70) -> list[str]:
    """The start of each segment of window ``i`` of ``hs``, decoded: ``"[legal, 40 tokens] The licensee ..."``."""
    out, T = [], hs.x.shape[1]
    ids = torch.cat([hs.x[i], hs.y[i, -1:]]).tolist()  # the window's T + 1 tokens
    for seg in hs.segments[i]:
        a = seg["window_start"]
        text = tokenizer.decode(ids[a:min(a + seg["length"], T + 1)], skip_special_tokens=False)
        text = " ".join(text.split())
        out.append(f"[{seg['domain']}, {seg['length']} tokens] {text[:chars]}{'…' if len(text) > chars else ''}")
    return out


def generation_prompts(eval_sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]], n_tokens: int,
                       hybrid: tuple[str, str] = ("code", "legal")) -> dict[str, torch.Tensor]:
    """Prompts of ``n_tokens`` held-out tokens each: the start of every domain's first evaluation
    window, and one hybrid prompt whose first half comes from ``hybrid[0]``'s second window and the
    rest from ``hybrid[1]``'s."""
    out = {f"{d} prompt": eval_sets[d][0][0, :n_tokens] for d in DOMAINS}
    (a, b), half = hybrid, n_tokens // 2
    out[f"{a} then {b}"] = torch.cat([eval_sets[a][0][1, :half], eval_sets[b][0][1, :n_tokens - half]])
    return out


def routed_generations(fused: nn.Module, tokenizer, prompts: Mapping[str, torch.Tensor],
                       new_tokens: int) -> list[tuple[str, list[str], list[str], torch.Tensor]]:
    """Greedy continuations of equally long ``prompts`` by a :class:`minigpt.fusion.FusedModel`, one
    batch: per prompt (name, prompt tokens, generated tokens, each decoded alone, and the router
    weights (new_tokens, N) that chose each generated token)."""
    x = torch.stack(list(prompts.values()))
    ids, weights = fused.generate(x, new_tokens, return_weights=True)
    piece = lambda row: [tokenizer.decode([int(i)], skip_special_tokens=False) for i in row]  # noqa: E731
    return [(name, piece(x[i]), piece(ids[i, x.shape[1]:]), weights[i]) for i, name in enumerate(prompts)]


def switch_lag(weights: torch.Tensor, labels: torch.Tensor) -> list[int | None]:
    """One window's (T, N) weights and (T,) labels: after each domain switch, the number of tokens
    until the argmax first picks the new domain (None if it never does before the next switch)."""
    choice = weights.argmax(-1)
    starts = [0] + [t for t in range(1, len(labels)) if labels[t] != labels[t - 1]] + [len(labels)]
    lags = []
    for a, b in zip(starts[1:-1], starts[2:]):
        hit = (choice[a:b] == labels[a]).nonzero()
        lags.append(int(hit[0]) if len(hit) else None)
    return lags


def true_weight_by_distance(weights: torch.Tensor, labels: torch.Tensor, min_tokens: int = 30) -> pd.Series:
    """Mean weight on the true domain's specialist, by tokens since the last domain switch.

    ``weights`` (n, T, N) and ``labels`` (n, T) as in :class:`HybridSet`; distance 0 is the first
    target token of a segment (a window's start counts as a switch). Distances reached by fewer
    than ``min_tokens`` tokens are left out (only a few long segments get there).
    """
    _, since = since_switch(labels)
    on_true = weights.gather(-1, labels.unsqueeze(-1)).squeeze(-1).double()
    return pd.Series({int(d): float(on_true[since == d].mean()) for d in since.unique()
                      if int((since == d).sum()) >= min_tokens},
                     name="weight on the true domain").rename_axis("tokens since switch")
