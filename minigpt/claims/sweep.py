"""Claims read off ``freeze_sweep.json``: where the freeze-depth boundary is."""
from __future__ import annotations

from typing import Mapping

from .core import Claim, reading, register, with_field


def _iv(iv: Mapping) -> str:
    return f"{iv['estimate']:+.4f} nats [{iv['low']:+.4f}, {iv['high']:+.4f}]"


def _flip_boundary(rep: Mapping) -> Mapping:
    return with_field(rep, "boundary.best_beats_neighbours", not rep["boundary"]["best_beats_neighbours"])


@register("sweep.boundary", "freeze_sweep.json", _flip_boundary)
def boundary(rep: Mapping) -> Claim:
    """Where the fused loss is lowest, and whether its neighbours' intervals make that decisive."""
    b = rep["boundary"]
    steps = "; ".join(f"K = {st['from_k']} → {st['to_k']} changes it by {_iv(st['change_nats'])}" for st in b["steps"])
    ks = sorted({st["from_k"] for st in b["steps"]} | {st["to_k"] for st in b["steps"]})
    where = "inside" if ks[0] < b["best_k"] < ks[-1] else "at an edge"
    if b["best_beats_neighbours"] and where == "inside":
        text = (f"The fused loss is lowest at K = {b['best_k']}, and the depths on either side are worse by their "
                f"paired intervals ({steps}): freezing fewer blocks lets the crowns drift apart more than it helps "
                "them adapt, freezing more leaves them too little to adapt with. The boundary is there.")
        outcome = "decisive"
    elif b["best_beats_neighbours"]:
        text = (f"The fused loss is lowest at K = {b['best_k']}, the edge of the depths tried, and the next depth is "
                f"worse by its paired interval ({steps}): within this range the boundary is the edge itself.")
        outcome = "decisive at the edge"
    else:
        text = (f"The fused loss is lowest at K = {b['best_k']}, but a neighbouring depth cannot be told apart from "
                f"it on these windows ({steps}): the boundary is a range, not a single depth.")
        outcome = "a range"
    return Claim(text, outcome, reading(rep, "boundary.best_k", "boundary.best_beats_neighbours"))


def _flip_gain(rep: Mapping) -> Mapping:
    other = rep["boundary"]["best_k"] if str(rep["best_k_by_fused_gain"]) != str(rep["boundary"]["best_k"]) else \
        next(k for k in rep["ks"] if k != rep["boundary"]["best_k"])
    return with_field(rep, "best_k_by_fused_gain", str(other))


@register("sweep.gain_column", "freeze_sweep.json", _flip_gain)
def gain_column(rep: Mapping) -> Claim:
    """The second column: does gain over the best specialist point at the same depth as the fused loss?"""
    g, b = int(rep["best_k_by_fused_gain"]), rep["boundary"]["best_k"]
    if g == b:
        text = (f"Gain over the best specialist points at the same depth (K = {g}), but read it with care: "
                "it is measured against a reference that itself gets worse as fewer layers are frozen.")
        outcome = "agrees"
    else:
        text = (f"Gain over the best specialist would pick K = {g} instead. That column flatters small K: with fewer "
                "layers frozen each specialist forgets more of the other domains, the best single specialist gets worse "
                "on mixed text, and beating it gets easier, while the fused model itself is not better there.")
        outcome = "disagrees"
    return Claim(text, outcome, reading(rep, "best_k_by_fused_gain", "boundary.best_k"))


def _flip_none(rep: Mapping) -> Mapping:
    iv = rep["none_minus_best_k"]
    shift = -(iv["high"] + 0.01) if iv["low"] > 0 else (-iv["low"] + 0.01)
    return with_field(rep, "none_minus_best_k", {k: iv[k] + shift for k in ("estimate", "low", "high")})


@register("sweep.nothing_frozen", "freeze_sweep_every_depth.json", _flip_none)
def nothing_frozen(rep: Mapping) -> Claim:
    """Freezing nothing (embeddings trained, heads untied) against the best K, on the same windows."""
    iv, k = rep["none_minus_best_k"], rep["boundary"]["best_k"]
    nums = f"{iv['estimate']:+.4f} nats [{iv['low']:+.4f}, {iv['high']:+.4f}] against K = {k}"
    if iv["low"] > 0:
        return Claim(f"Freezing nothing costs loss: the fused model is {nums}. Without a shared trunk and head the "
                     "specialists are no easier to combine, and the set no longer passes the compatibility check.",
                     "costs", reading(rep, "none_minus_best_k"))
    if iv["high"] < 0:
        return Claim(f"Freezing nothing gives a lower fused loss ({nums}): the extra room to adapt outweighs the lost "
                     "shared interface here, at the price of three embedding tables and heads and a set the "
                     "compatibility check refuses.", "helps", reading(rep, "none_minus_best_k"))
    return Claim(f"Freezing nothing cannot be told apart from the best K ({nums}), but it gives up the shared trunk, "
                 "three times the embeddings to serve, and the compatibility check.", "no difference",
                 reading(rep, "none_minus_best_k"))
