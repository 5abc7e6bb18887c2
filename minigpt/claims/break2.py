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
    pre = s["precondition"]
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


def _curve(s: Mapping, temp: float) -> list[tuple[str, Mapping]]:
    return sorted(((n, p) for n, p in s["points"].items() if p["temp"] == temp), key=lambda x: x[1]["domain_mix"][0])


def _flip_first(name: str):
    def flip(rep: Mapping) -> Mapping:
        s = rep["sets"][name]
        temp = rep["healthy_temp"]
        collapsed = any(p["status"] in ("silent", "loud") for _, p in _curve(s, temp))
        out = rep
        for n, p in _curve(s, temp):
            out = with_field(out, ("sets", name, "points", n, "status"), "healthy" if collapsed else "loud")
        return out
    return flip


def first_collapse(rep: Mapping, name: str) -> Claim:
    """Along the curve at the profile's temperature: the first code share at which the router counts as
    collapsed, and which sign showed first."""
    s, temp = rep["sets"][name], rep["healthy_temp"]
    curve = _curve(s, temp)
    paths = [("sets", name, "points", n, "status") for n, _ in curve]
    first = next(((n, p) for n, p in curve if p["status"] in ("silent", "loud")), None)
    if first is None:
        top = curve[-1][1]
        return Claim(f"With {SET_WORDS.get(name, name)} at temperature {temp:g}, no point of the curve collapses: even at "
                     f"{top['domain_mix'][0]:.0%} code the worst routing drop is {top['largest_routing_drop_pp']:.0f} points "
                     f"and the dominant expert takes {top['dominant_weight_elsewhere']:.2f} of the other domains' weight.",
                     "never", reading(rep, *paths))
    n, p = first
    drop, lean = p["largest_routing_drop_pp"] >= 20, p["dominant_weight_elsewhere"] >= 0.5
    sign = ("both signs at once" if drop and lean else
            "routing falls first" if drop else "one expert takes over the other domains' text first")
    return Claim(f"With {SET_WORDS.get(name, name)} at temperature {temp:g}, the router first counts as collapsed at "
                 f"{p['domain_mix'][0]:.0%} code ({sign}: worst routing drop {p['largest_routing_drop_pp']:.0f} points, "
                 f"dominant expert's weight elsewhere {p['dominant_weight_elsewhere']:.2f}); it is {p['status']} there.",
                 "collapses", reading(rep, *paths))


def _flip_cold(rep: Mapping) -> Mapping:
    name, p = _cold_balanced_point(rep)
    return with_field(rep, ("sets", "specialists", "points", name, "status"),
                      "healthy" if p["status"] in ("silent", "loud") else "loud")


def _cold_balanced_point(rep: Mapping) -> tuple[str, Mapping]:
    pts = rep["sets"]["specialists"]["points"]
    cold = min(p["temp"] for p in pts.values())
    return next((n, p) for n, p in pts.items() if p["temp"] == cold and max(p["domain_mix"]) - min(p["domain_mix"]) < 1e-6)


@register("break2.cold_balanced", "break2.json", _flip_cold)
def cold_balanced(rep: Mapping) -> Claim:
    """Does a one-hot target collapse a router trained on balanced data, or only sharpen it?"""
    name, p = _cold_balanced_point(rep)
    nums = (f"worst routing drop {p['largest_routing_drop_pp']:.0f} points, dominant expert's weight elsewhere "
            f"{p['dominant_weight_elsewhere']:.2f}, headline {p['vs_healthy_nats']['estimate']:+.4f} nats from healthy")
    if p["status"] in ("silent", "loud"):
        return Claim(f"On balanced data a one-hot target (temperature {p['temp']:g}) collapses the router on its own "
                     f"({nums}).", "collapses", reading(rep, ("sets", "specialists", "points", name, "status")))
    return Claim(f"On balanced data a one-hot target (temperature {p['temp']:g}) does not collapse the router ({nums}): "
                 "it sharpens each decision without choosing a side; imbalance is what chooses the side.",
                 "sharpens", reading(rep, ("sets", "specialists", "points", name, "status")))


def _largest(rep: Mapping) -> tuple[str, str, Mapping]:
    return max(((s, n, p) for s, st in rep["sets"].items() for n, p in st["points"].items()),
               key=lambda x: x[2]["dominant_weight_elsewhere"])


def _flip_largest(rep: Mapping) -> Mapping:
    s, n, p = _largest(rep)
    return with_field(rep, ("sets", s, "points", n, "above_band"), not p["above_band"])


@register("break2.largest_lean", "break2.json", _flip_largest)
def largest_lean(rep: Mapping) -> Claim:
    """The chapter's 0.92 example against the largest lean measured here, and what its headline did."""
    s, n, p = _largest(rep)
    where = f"{p['domain_mix'][0]:.0%} code at temperature {p['temp']:g}, {SET_WORDS.get(s, s)}"
    iv = p["vs_healthy_nats"]
    head = (f"The largest weight a dominant expert takes on other domains' text here is {p['dominant_weight_elsewhere']:.2f} "
            f"({where}; the chapter's example is 0.92), and its headline is {iv['estimate']:+.4f} nats "
            f"[{iv['low']:+.4f}, {iv['high']:+.4f}] from the healthy router")
    if p["above_band"]:
        return Claim(head + ": above the band, so this lean shows.", "shows", reading(rep, ("sets", s, "points", n, "above_band")))
    return Claim(head + ": not above the band, so this lean does not show in the headline.", "hidden",
                 reading(rep, ("sets", s, "points", n, "above_band")))


for _name in ("specialists", "generalist"):
    register(f"break2.first_collapse.{_name}", "break2.json", _flip_first(_name))(
        lambda rep, _n=_name: first_collapse(rep, _n))
