"""Claims read off ``table.json``: the chapter's questions 1, 2 and 5 (notebook 8 and its answers)."""
from __future__ import annotations

from typing import Mapping

from ..config import DOMAINS
from ..scoring import HEADLINE, ORACLE, SPECIALIST_ROWS
from .core import Claim, reading, register, with_field

BASELINES = ("base", "weight average", "monolithic", "uniform mix", *SPECIALIST_ROWS)


def _mixed(tab: Mapping, row: str) -> float:
    return tab["table"][row]["mixed"]


def _flip_baselines(tab: Mapping) -> Mapping:
    """Move the monolithic row to the other side of the headline."""
    h, m = _mixed(tab, HEADLINE), _mixed(tab, "monolithic")
    return with_field(tab, "table.monolithic.mixed", h + (h - m) + (0.01 if m == h else 0.0))


@register("table.baselines", "table.json", _flip_baselines)
def baselines(tab: Mapping) -> Claim:
    """Question 1: which baselines the fused model beats, which still beat it, and what weight averaging says."""
    h = _mixed(tab, HEADLINE)
    rows = [r for r in BASELINES if r in tab["table"]]
    beaten = [r for r in rows if _mixed(tab, r) > h]
    ahead = [r for r in rows if _mixed(tab, r) <= h]
    router_add = _mixed(tab, "uniform mix") - h
    text = (f"The fused model ({h:.4f}) beats {', '.join(beaten) or 'no baseline'}; "
            + (f"still ahead of it: {', '.join(f'{r} ({_mixed(tab, r):.4f})' for r in ahead)}." if ahead
               else "no baseline is ahead of it."))
    if "weight average" in ahead:
        text += (f" Weight averaging wins, on the very same specialists: the router's weights add only {router_add:+.4f} "
                 "nats over equal weights, less than merging the crowns, so the router is not using their differences.")
    else:
        text += f" Weight averaging is behind, and the router adds {router_add:+.4f} nats over equal weights."
    if "monolithic" in ahead:
        text += (" The monolithic crown, trained on all three domains with the same total steps, is still ahead: at this "
                 "budget one shared crown uses the compute better, and fusion's case rests on modularity, not on loss.")
        outcome = "monolithic ahead"
    else:
        text += " It also beats the monolithic crown trained on all three domains with the same compute."
        outcome = "beats monolithic"
    return Claim(text, outcome, reading(tab, f"table.{HEADLINE}.mixed", "table.monolithic.mixed",
                                        "table.weight average.mixed"))


def _headroom(tab: Mapping) -> tuple[float, float, str]:
    best = min(SPECIALIST_ROWS, key=lambda r: _mixed(tab, r))
    headroom = _mixed(tab, best) - _mixed(tab, ORACLE)
    captured = (_mixed(tab, best) - _mixed(tab, HEADLINE)) / headroom if headroom > 0 else float("nan")
    return headroom, captured, best


def _flip_oracle(tab: Mapping) -> Mapping:
    """Move the headline to the far side of 70 % of the headroom (or give the oracle headroom)."""
    headroom, captured, best = _headroom(tab)
    if headroom <= 0:
        return with_field(tab, f"table.{ORACLE}.mixed", _mixed(tab, best) - 0.1)
    share = 0.1 if captured >= 0.7 else 0.9
    return with_field(tab, f"table.{HEADLINE}.mixed", _mixed(tab, best) - share * headroom)


@register("table.oracle", "table.json", _flip_oracle)
def oracle(tab: Mapping) -> Claim:
    """Question 2: is the bottleneck the router or the specialists?"""
    headroom, captured, best = _headroom(tab)
    gap = _mixed(tab, HEADLINE) - _mixed(tab, ORACLE)
    nums = (f"The oracle gap is {gap:+.4f} nats; the oracle's headroom over the best specialist ({best}) is "
            f"{headroom:.4f} nats")
    if headroom <= 0:
        text, outcome = (nums + ": none. The specialists are interchangeable on whole windows, so the bottleneck is the "
                         "specialists: make them more different (more crown steps, a lower K) before touching the router."
                         ), "specialists"
    elif captured >= 0.7:
        text, outcome = (nums + f", and the router captures {captured:.0%} of it: the bottleneck is the specialists. "
                         "Only better or more distinct crowns can raise the ceiling."), "specialists"
    elif captured >= 0.3:
        text, outcome = (nums + f", and the router captures {captured:.0%} of it: both matter. Improve the router "
                         "first (more steps, LM-loss targets), it is cheaper, then the specialists."), "both"
    else:
        text, outcome = (nums + f", and the router captures only {captured:.0%} of it: the bottleneck is the router. "
                         "Train it longer, on balanced data, or let it react faster within a window."), "router"
    gp = tab["oracle_gap_by_position"]
    first, last = next(iter(gp)), list(gp)[-1]
    text += (f" The gap is {gp[first]:+.4f} nats at positions {first} and {gp[last]:+.4f} at {last}: "
             + ("part of it is the price of routing causally, since the router has seen little at the start."
                if gp[first] > gp[last] else "it does not shrink along the window, so it is not the causal router's slow start."))
    return Claim(text, outcome, reading(tab, f"table.{HEADLINE}.mixed", f"table.{ORACLE}.mixed"))


def _flip_mistakes(tab: Mapping) -> Mapping:
    """Make every domain's mistakes near-ties, or, when they all are, confident ones."""
    mis = tab["misrouting"]
    torn = all(_torn(v) for v in mis.values())
    out = tab
    for d in mis:
        out = with_field(out, f"misrouting.{d}.median_margin", 0.5 if torn else 0.01)
        out = with_field(out, f"misrouting.{d}.own_is_second", 0.9)
    return out


def _torn(v: Mapping) -> bool:
    """A near-tie: the median weight margin below 0.1 with the own specialist usually second."""
    return v["median_margin"] < 0.1 and v["own_is_second"] > 0.5


@register("table.mistakes", "table.json", _flip_mistakes)
def mistakes(tab: Mapping) -> Claim:
    """Question 5: confident picks of an unrelated specialist, or near-ties between two that both fit?"""
    mis = {d: tab["misrouting"][d] for d in DOMAINS if d in tab["misrouting"]}
    torn = sum(_torn(v) for v in mis.values())
    fits = sum(v["it_beats_the_base_here"] for v in mis.values())
    parts = "; ".join(f"{d}: {v['misrouted']:.0%} misrouted, mostly to the {v['most_frequent_wrong_choice']}, median "
                      f"margin {v['median_margin']:.2f}" for d, v in mis.items())
    if torn == len(mis):
        kind, outcome = ("Mostly hesitation between two specialists: the misrouted tokens are near-ties with the own "
                         "specialist a close second. The fix is better evidence (a longer context for the router, more "
                         "router steps); soft fusion already blunts the cost of a near-tie."), "near-ties"
    elif torn == 0:
        kind, outcome = ("Mostly confident mistakes: the router commits to the wrong specialist by a clear margin. That "
                         "calls for changing what it learns (balanced data, softer targets), not more evidence."), "confident"
    else:
        kind, outcome = (f"Mixed: {torn} of {len(mis)} domains err by near-ties, the others by clear margins."), "mixed"
    fit = (f" In {fits} of {len(mis)} domains the usual wrong choice still beats the base on that text, so those "
           "mistakes are between specialists that both partly fit." if fits else
           " In no domain does the usual wrong choice beat the base on that text.")
    return Claim(f"{parts}. {kind}{fit}", outcome,
                 reading(tab, *(f"misrouting.{d}.{f}" for d in mis for f in ("median_margin", "own_is_second"))))
