"""Claims read off ``break2.json``: is a collapsed router silent or loud, and why."""
from __future__ import annotations

from typing import Mapping

from .core import Claim, reading, register, with_field

SET_WORDS = {"specialists": "the three specialists", "generalist": "the set whose code slot holds a generalist"}


def _points(s: Mapping, names) -> str:
    """Curve points as a reader says them: "60 % code at temperature 0.1"."""
    return ", ".join(f"{s['points'][n]['domain_mix'][0]:.0%} code at temperature {s['points'][n]['temp']:g}"
                     for n in names)


def _flip_happened(rep: Mapping) -> Mapping:
    """Make every silent point loud, or, when none is silent, the first loud (else any) point silent."""
    out = rep
    for name, s in rep["sets"].items():
        if s["silent"]:
            out = with_field(out, f"sets.{name}.loud", s["loud"] + s["silent"])
            out = with_field(out, f"sets.{name}.silent", [])
    if any(s["silent"] for s in rep["sets"].values()):
        return out
    name, s = next(iter(rep["sets"].items()))
    first = (s["loud"] or list(s["points"]))[0]
    return with_field(with_field(out, f"sets.{name}.silent", [first]), f"sets.{name}.loud",
                      [p for p in s["loud"] if p != first])


@register("break2.what_happened", "break2.json", _flip_happened)
def what_happened(rep: Mapping) -> Claim:
    """Where the collapse is silent, where it is loud, where nothing collapses."""
    sets = rep["sets"]
    silent = {n: s["silent"] for n, s in sets.items() if s["silent"]}
    loud = {n: s["loud"] for n, s in sets.items() if s["loud"]}
    paths = [f"sets.{n}.{k}" for n in sets for k in ("silent", "loud")]
    if silent:
        where = "; ".join(f"with {SET_WORDS.get(n, n)}: {_points(sets[n], p)}" for n, p in silent.items())
        text = (f"**The headline hides a collapse here** ({where}). At these points a domain's routing drops by 20 "
                "points or more, or one expert takes half the weight on the other domains' text, and yet the mixed "
                "loss does not rise above the band that retraining the healthy router spans.")
        louder = [f"With {SET_WORDS.get(n, n)} the collapse is loud at {_points(sets[n], p)}."
                  for n, p in loud.items() if n not in silent]
        return Claim(" ".join([text, *louder]), "silent somewhere", reading(rep, *paths))
    if loud:
        where = "; ".join(f"with {SET_WORDS.get(n, n)}: {_points(sets[n], p)}" for n, p in loud.items())
        text = ("**Nothing collapses silently at this scale.** Routers do collapse as their training data tilts toward "
                f"code ({where}), but every one of them lifts the mixed loss above the band, so the headline alone "
                "would have raised the alarm.")
        return Claim(text, "loud only", reading(rep, *paths))
    return Claim("**No router collapses here**: no point of the curve loses its routing or hands another domain's text "
                 "to one expert, so there is nothing for the headline to hide.", "no collapse", reading(rep, *paths))


def _flip_precondition(name: str):
    def flip(rep: Mapping) -> Mapping:
        path = f"sets.{name}.precondition.collapse_can_be_silent"
        return with_field(rep, path, not rep["sets"][name]["precondition"]["collapse_can_be_silent"])
    return flip


def precondition(rep: Mapping, name: str) -> Claim:
    """Why: how far the dominant expert alone sits from the healthy fused model, against the band."""
    s = rep["sets"][name]
    pre, band = s["precondition"], s["band"]
    iv = pre["dominant_alone_minus_healthy_nats"]
    head = (f"With {SET_WORDS.get(name, name)}, the {pre['dominant_expert']} alone is "
            f"{iv['estimate']:+.4f} nats [{iv['low']:+.4f}, {iv['high']:+.4f}] from the healthy fused model, against "
            f"a band of ±{pre['band_half_width_nats']:.4f} nats")
    if pre["collapse_can_be_silent"]:
        text = head + (": a router that handed it everything would stay inside the band. That is the chapter's "
                       "precondition: the expert a router collapses onto must be good at everything.")
        outcome = "can be silent"
    else:
        text = head + (": even a complete collapse onto it would leave the band, because off its own domain it is "
                       "worse than the mix by more than retraining the router ever moves the headline.")
        outcome = "cannot be silent"
    return Claim(text, outcome, reading(rep, f"sets.{name}.precondition.collapse_can_be_silent"))


for _name in ("specialists", "generalist"):
    register(f"break2.precondition.{_name}", "break2.json", _flip_precondition(_name))(
        lambda rep, _n=_name: precondition(rep, _n))
