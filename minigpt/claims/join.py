"""Claims read off ``add_specialist.json``: what a specialist that joins later costs and buys."""
from __future__ import annotations

from typing import Mapping

from .core import Claim, reading, register, with_field

WAY_WORDS = {"scratch": "a four-way router retrained from scratch",
             "grown": "the old router grown by one output (only that output trained)",
             "prototype": "the old router grown by a prototype row (no gradient step)"}


def _iv(iv: Mapping) -> str:
    return f"{iv['estimate']:+.4f} nats [{iv['low']:+.4f}, {iv['high']:+.4f}]"


def _flip_old(way: str):
    def flip(rep: Mapping) -> Mapping:
        v = rep["old_domains"][way]["three old domains"]["verdict"]
        return with_field(rep, ("old_domains", way, "three old domains", "verdict"),
                          "lost" if v != "lost" else "nothing lost")
    return flip


def old_domains(rep: Mapping, way: str) -> Claim:
    """What joining costs the three old domains, with one way of growing the router."""
    per = rep["old_domains"][way]
    iv = per["three old domains"]
    each = "; ".join(f"{d} {_iv(v)}" for d, v in per.items() if d != "three old domains")
    head = f"With {WAY_WORDS.get(way, way)}, the old domains' fused loss moves by {_iv(iv)} ({each})"
    verdict, margin = iv["verdict"], rep["loss_margin_nats"]
    text = {"lost": head + ": joining costs the old domains something, and the interval says it is real.",
            "gained": head + ": the old domains even gain, the new crown helps on some of their text.",
            "nothing lost": head + f": nothing lost, within {margin} nats, as the whole interval says.",
            "inconclusive": head + f": these windows cannot rule out a loss larger than {margin} nats."}[verdict]
    return Claim(text, verdict, reading(rep, ("old_domains", way, "three old domains", "verdict")))


def _flip_new(rep: Mapping) -> Mapping:
    iv = rep["new_domain"]["scratch"]["vs the old three-expert model"]
    flipped = {k: -iv[k2] for k, k2 in (("estimate", "estimate"), ("low", "high"), ("high", "low"))}
    return with_field(rep, ("new_domain", "scratch", "vs the old three-expert model"), flipped)


@register("join.new_domain", "add_specialist.json", _flip_new)
def new_domain(rep: Mapping) -> Claim:
    """What joining buys the new domain: the grown system against the old one, the base and the crown alone."""
    n = rep["new_domain"]["scratch"]
    old, base, alone = n["vs the old three-expert model"], n["vs base"], n["vs the new specialist alone"]
    late = rep["late_domain"]
    nums = (f"On {late} text the four-expert model is {_iv(old)} from the old three-expert model, {_iv(base)} from "
            f"the base and {_iv(alone)} from the {late} crown alone")
    share = (f" The {late} crown alone is still better on its own text: the router leaves some weight on the other "
             "crowns there, the price of routing each token from what it has read so far."
             if alone["low"] > 0 else "")
    reads = reading(rep, ("new_domain", "scratch", "vs the old three-expert model"))
    if old["high"] < 0:
        return Claim(nums + ": joining pays where it should, on the new domain." + share, "gains", reads)
    return Claim(nums + ": the new crown does not make the system better on its own domain here." + share, "no gain", reads)


def _flip_mono(rep: Mapping) -> Mapping:
    t = rep["tables"]["after"]
    fused, mono = t["fused soft (scratch router)"]["mixed"], t["monolithic (four domains)"]["mixed"]
    return with_field(rep, ("tables", "after", "monolithic (four domains)", "mixed"), fused + (fused - mono))


@register("join.vs_monolithic", "add_specialist.json", _flip_mono)
def vs_monolithic(rep: Mapping) -> Claim:
    """The alternative a reader would weigh: retraining one crown on all four domains."""
    t, c = rep["tables"]["after"], rep["cost"]
    fused, mono = t["fused soft (scratch router)"]["mixed"], t["monolithic (four domains)"]["mixed"]
    cost = (f"joining trained one crown ({c['scratch']['crown']['steps']} steps) and a router "
            f"({c['scratch']['router_steps']} steps); the monolithic crown retrains {c['monolithic (four domains)']['crown']['steps']} "
            "steps on all four domains' text pooled in one place")
    if mono < fused:
        return Claim(f"Retraining one crown on all four domains gives a lower mixed loss ({mono:.4f} against {fused:.4f}), "
                     f"but {cost}: the case for joining is that nobody had to pool or retrain anything.",
                     "monolithic better", reading(rep, ("tables", "after", "monolithic (four domains)", "mixed")))
    return Claim(f"Joining even beats retraining one crown on all four domains ({fused:.4f} against {mono:.4f}), and "
                 f"{cost}.", "joining better", reading(rep, ("tables", "after", "monolithic (four domains)", "mixed")))


def _flip_other(rep: Mapping) -> Mapping:
    return with_field(rep, ("compat", "other_base_refusal"), None if rep["compat"]["other_base_refusal"] else "refused")


@register("join.other_base", "add_specialist.json", _flip_other)
def other_base(rep: Mapping) -> Claim:
    """The negative case: a fourth crown from another base."""
    refusal = rep["compat"]["other_base_refusal"]
    old = rep["other_base"]["old_domains"]["three old domains"]
    new = rep["other_base"]["new_domain"]["vs the old three-expert model"]
    nums = (f"Forced in, it moves the old domains by {_iv(old)} and the {rep['late_domain']} text by {_iv(new)} against "
            "the old three-expert model.")
    if refusal:
        return Claim(f"A {rep['late_domain']} crown fine-tuned from another base is refused by the compatibility "
                     f"check (\"{refusal.split(';')[0]}\"). {nums}", "refused",
                     reading(rep, ("compat", "other_base_refusal")))
    return Claim(f"The compatibility check lets a crown from another base through. {nums}", "accepted",
                 reading(rep, ("compat", "other_base_refusal")))


for _way in ("scratch", "grown", "prototype"):
    register(f"join.old_domains.{_way}", "add_specialist.json", _flip_old(_way))(lambda rep, _w=_way: old_domains(rep, _w))


def _flip_tokenizer(rep: Mapping) -> Mapping:
    late = rep["late_domain"]
    cpt = rep["chars_per_token_eval"]
    old = [v for d, v in cpt.items() if d != late]
    return with_field(rep, ("chars_per_token_eval", late), max(old) + 0.5 if cpt[late] < min(old) else min(old) - 0.5)


@register("join.tokenizer", "add_specialist.json", _flip_tokenizer)
def tokenizer(rep: Mapping) -> Claim:
    """What the pinned tokenizer does to text it never saw."""
    late, cpt = rep["late_domain"], rep["chars_per_token_eval"]
    old = {d: v for d, v in cpt.items() if d != late}
    nums = (f"A token carries {cpt[late]:.2f} characters of {late} text, against "
            + ", ".join(f"{v:.2f} on {d}" for d, v in old.items()))
    if cpt[late] < min(old.values()):
        return Claim(nums + (": the merges were learned without this domain, so its words are cut into more, shorter "
                             "pieces. A loss per token is then a loss per smaller piece of text, so compare domains per "
                             "character (or per byte), not per token."), "shorter tokens",
                     reading(rep, ("chars_per_token_eval", late)))
    return Claim(nums + ": the old merges happen to fit this text as well as the domains they were learned on.",
                 "fits", reading(rep, ("chars_per_token_eval", late)))


def _flip_way(rep: Mapping) -> Mapping:
    out = rep
    safe = [w for w, per in rep["old_domains"].items() if per["three old domains"]["verdict"] in ("nothing lost", "gained")]
    for w in rep["old_domains"]:
        out = with_field(out, ("old_domains", w, "three old domains", "verdict"), "lost" if safe else "nothing lost")
    return out


@register("join.which_way", "add_specialist.json", _flip_way)
def which_way(rep: Mapping) -> Claim:
    """Which way of growing the router to ship: the cheapest that loses nothing on the old domains."""
    order = sorted(rep["old_domains"], key=lambda w: rep["cost"][w]["router_steps"])
    safe = [w for w in order if rep["old_domains"][w]["three old domains"]["verdict"] in ("nothing lost", "gained")]
    best_new = min(rep["new_domain"], key=lambda w: rep["new_domain"][w]["vs the old three-expert model"]["estimate"])
    reads = reading(rep, *(("old_domains", w, "three old domains", "verdict") for w in order))
    if safe:
        return Claim(f"Ship {WAY_WORDS[safe[0]]}: it is the cheapest way that loses nothing on the old domains by its "
                     f"interval. On the new domain the best is {WAY_WORDS[best_new]}.", "a safe way", reads)
    return Claim(f"No way of growing the router keeps the old domains whole here: each costs them something by its "
                 f"interval. The choice is a trade: {WAY_WORDS[order[0]]} is the cheapest, {WAY_WORDS[best_new]} serves "
                 "the new domain best.", "no safe way", reads)
