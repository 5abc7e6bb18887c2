"""Conclusions that follow the numbers: every sentence the answer keys and the README draw from a
result, with one branch per outcome. Tests feed each function every outcome, so a branch that the
current run does not take is still checked.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from ..intervals import format_interval, interval_verdict

REFERENCE_WORDS = {"vs best specialist": "the best single specialist", "vs monolithic": "the monolithic model",
                   "vs uniform mix": "the uniform mix", "vs base": "the base", "vs weight average": "weight averaging"}


def comparison_sentence(iv: Mapping) -> str:
    """"The fused model beats / trails / cannot be told apart from X (Δ [low, high])", from the interval."""
    who = REFERENCE_WORDS.get(iv["comparison"], iv["comparison"])
    outcome = interval_verdict(iv["low"], iv["high"])
    text = {"holds": f"beats {who}", "fails": f"trails {who}",
            "inconclusive": f"cannot be told apart from {who} on these windows"}[outcome]
    return f"{text} ({format_interval(iv)})"


def headline_conclusion(intervals: Sequence[Mapping]) -> str:
    """One sentence on the fused model against the best specialist, the monolithic model and the
    uniform mix, each read off its paired interval."""
    ivs = {iv["comparison"]: iv for iv in intervals}
    parts = [comparison_sentence(ivs[c]) for c in ("vs best specialist", "vs monolithic", "vs uniform mix") if c in ivs]
    return "The fused model " + "; it ".join(parts) + "."


def coordinates_conclusion(contrasts: Sequence[Mapping], logit_fusion: str) -> str:
    """Break 1: do the methods that add up the models' internal coordinates (weight averaging,
    hidden-state fusion) fail while prediction-level fusion holds? ``contrasts`` are Break 1's
    within-set contrasts (``contrast``, ``verdict``); ``logit_fusion`` is its fusion verdict
    (``survives``, ``not worse than the controls``, or a degradation)."""
    coord = [c for c in contrasts if c["contrast"].startswith(("weight averaging", "hidden-state"))]
    worse = [c["contrast"].split(" minus")[0] for c in coord if c["verdict"] == "worse"]
    held = [f"{c['contrast'].split(' minus')[0]} ({c['verdict']})" for c in coord if c["verdict"] != "worse"]
    logits_hold = logit_fusion in ("survives", "not worse than the controls")
    if coord and not held and logits_hold:
        return ("Here the methods that need the models' internal coordinates to agree are the ones that get worse "
                f"({', '.join(worse)}), while combining predictions does not: logit fusion only needs every model's "
                "vocabulary to mean the same thing, which the shared tokenizer guarantees.")
    if coord and not held:
        return (f"Everything gets worse here: the coordinate-based methods ({', '.join(worse)}) and logit fusion alike, "
                "so these numbers do not single out shared coordinates as what breaks.")
    if logits_hold:
        return ("Not every method that mixes internal coordinates gets significantly worse here: "
                f"{', '.join(held) or 'none was measured'}. The claim that only coordinate-based methods fail is not "
                "supported at this scale; logit fusion holds, but so does some of what should break.")
    return (f"Logit fusion degrades while some coordinate-based methods do not ({', '.join(held)}): at this scale the "
            "break is not explained by coordinates alone.")


def per_token_oracle_note(per_token_oracle: float, per_window_oracle: float, fused_soft: float) -> str:
    """What the per-token oracle bounds: routing that picks ONE specialist per token, not logit
    fusion, which can produce a distribution no single specialist gives."""
    room = per_window_oracle - per_token_oracle
    base = (f"The per-token oracle is {room:.4f} nats below the per-window one: the best specialist changes inside "
            "windows. It bounds any router that picks one specialist per token (hard per-token routing), and only "
            "with hindsight; it does not bound soft logit fusion, whose mixed logits can beat every single specialist "
            "on a token.")
    if fused_soft < per_token_oracle:
        return base + (f" Here logit fusion ({fused_soft:.4f}) is even below the per-token oracle "
                       f"({per_token_oracle:.4f}): mixing, not choosing, is doing the work.")
    return base + (f" Here logit fusion ({fused_soft:.4f}) stays above it ({per_token_oracle:.4f}), so most of that "
                   "room is still unclaimed.")


def collapse_cost(alone_vs_fused_pct: Mapping[str, float], tolerance_pct: float) -> str:
    """Break 2: how much a router that collapses onto one specialist can cost, from each
    specialist ALONE against the healthy fused model (Δ%, positive = worse than fused)."""
    hidden = {s: v for s, v in alone_vs_fused_pct.items() if abs(v) <= tolerance_pct}
    listed = ", ".join(f"{s.split()[0]} {v:+.2f}%" for s, v in alone_vs_fused_pct.items())
    if not hidden:
        return (f"Each specialist alone is worse than the healthy fused model by more than the {tolerance_pct:g}% the "
                f"headline would tolerate ({listed}), so a full collapse onto any one of them shows in the headline; "
                "only a partial lean can stay hidden.")
    names = ", ".join(s.split()[0] for s in hidden)
    return (f"A collapse onto {names} would cost no more than the {tolerance_pct:g}% the headline tolerates "
            f"(each specialist alone against the healthy fused model: {listed}), so the headline alone cannot "
            "rule it out: check per-domain routing.")
