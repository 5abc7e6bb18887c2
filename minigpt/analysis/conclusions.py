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


def target_comparison(accuracy: Mapping[str, float], fused_loss: Mapping[str, float]) -> str:
    """Notebook 3: do the router target types that route most accurately also fuse best?
    ``accuracy`` and ``fused_loss`` map a target type (domain, performance, ...) to its router's
    mean routing accuracy and fused mixed loss."""
    better_acc = max(accuracy, key=accuracy.get)
    better_loss = min(fused_loss, key=fused_loss.get)
    if better_acc == better_loss:
        margin = sorted(fused_loss.values())[1] - fused_loss[better_loss] if len(fused_loss) > 1 else 0.0
        return (f"The {better_acc}-target router wins on both counts (fused loss lower by {margin:.4f} nats than the "
                "next). Recognising the domain and picking the best predictor point the same way here, as expected "
                "where the own specialist is best on most windows (next answer).")
    return (f"Accuracy favours the {better_acc} targets but the fused loss favours the {better_loss} targets. "
            "Accuracy is scored against the domain label, while fusion needs weight on whichever specialist "
            "predicts the window best; the two coincide only where the own specialist is best.")


def misrouting_verdict(top_share: float, top_name: str, partial_fits: int, n_domains: int) -> str:
    """Notebook 3's confusion matrix: collapse (one specialist takes over 60 % of all windows), or
    confusion, cheap when the wrongly chosen specialist still beats the base on that text
    (``partial_fits`` of ``n_domains`` domains) and costly when it does not."""
    if top_share > 0.6:
        return f"Over all domains {top_share:.0%} of windows go to the {top_name}: that is collapse, not confusion."
    if partial_fits == n_domains:
        return ("Every domain's errors go to a specialist that still beats the base on that text: confusion between "
                "two plausible experts, and cheap confusion.")
    if partial_fits == 0:
        return ("Every domain's errors go to a specialist that is worse than the base on that text: wrong domains "
                "outright, and each costs loss.")
    return (f"{partial_fits} of {n_domains} domains err toward a specialist that partly fits (beats the base there); "
            "the others' errors go to a specialist worse than the base — a wrong domain.")


def bottleneck_diagnosis(headroom: float, captured: float) -> str:
    """Notebook 5: router or specialists? ``headroom`` is the per-window oracle's advantage over the
    best single specialist (nats), ``captured`` the share of it the fused model reaches."""
    if headroom <= 0:
        return ("The oracle has no headroom over the best specialist: the specialists are interchangeable on whole "
                "windows, so the bottleneck is the specialists; make them more different (more steps, a lower K).")
    if captured >= 0.7:
        return (f"The router already captures {captured:.0%} of what the specialists offer, so the gap is small and "
                "the bottleneck is the specialists: better crowns (more data or steps, a different K) would raise the "
                "ceiling; a better router could add little.")
    if captured >= 0.3:
        return (f"The router captures {captured:.0%} of the headroom: both sides matter. Try a stronger router first "
                "(more steps, per-token routing, LM-loss targets) since it is cheap, then better specialists.")
    return (f"The router captures only {captured:.0%} of the headroom, so the bottleneck is the router: the "
            "specialists hold value it does not reach. Train it longer, on balanced data, with performance or "
            "LM-loss targets, or route per token.")


def accuracy_loss_inversion(routers: Sequence[tuple[str, float, float]]) -> str:
    """Notebook 5: does a router with lower routing accuracy ever fuse better? ``routers`` are
    (name, accuracy, fused loss) triples."""
    for a in routers:
        for b in routers:
            if a[1] < b[1] and a[2] < b[2]:
                return (f"Yes: the {a[0]} has lower accuracy than the {b[0]} ({a[1]:.1%} vs {b[1]:.1%}) but a lower "
                        f"fused loss ({a[2]:.4f} vs {b[2]:.4f}).")
    return "Not in this run: a higher accuracy always comes with a lower fused loss here."


def fusion_rule_scale(spread: float, oracle_gap: float) -> tuple[str, str]:
    """Answer 4.1: how the spread between fusion rules (nats) compares with the oracle gap, as
    (comparison words, conclusion)."""
    if spread < 0.25 * abs(oracle_gap):
        return "small next to", ("So at this scale the rule is a second-order choice: how good the weights are "
                                 "matters more than how they are applied.")
    words = "comparable to" if spread < abs(oracle_gap) else "larger than"
    return words, "So the rule is not a detail here: it moves the loss about as much as better routing could."


def leak_by_position(first: float, last: float) -> str:
    """Answer 4.3: per-token minus last-token fused loss on the first and last positions of a window.
    The last-token router's leak is largest at the start; is its advantage?"""
    if first > last and first > 0:
        return ("The advantage is larger where the leak is larger, so at least that difference is the future talking; "
                + ("what remains at the end, where there is almost no future left to see, is a better summary."
                   if last > 0 else "at the end it is gone."))
    return ("The advantage is not larger at the start, where the leak is largest, so the leak does not explain it; "
            "the last token's state is simply a better summary than the causal router's average here.")


def best_target(accuracy: Mapping[str, float], fused_loss: Mapping[str, float]) -> str:
    """Notebook 3: which router target routes most accurately, and which fuses best. ``accuracy`` and
    ``fused_loss`` map a target type to its router's mean routing accuracy and fused mixed loss."""
    top_acc = max(accuracy, key=accuracy.get)
    top_loss = min(fused_loss, key=fused_loss.get)
    runner_up = min((v for t, v in fused_loss.items() if t != top_loss), default=fused_loss[top_loss])
    margin = f"{runner_up - fused_loss[top_loss]:.4f} nats below the next"
    if top_acc == top_loss:
        return (f"The {top_acc}-target router routes most accurately ({accuracy[top_acc]:.1%} on average) and also "
                f"gives the lowest fused loss ({margin}): here recognising the text and predicting it well agree.")
    return (f"The {top_acc}-target router routes most accurately ({accuracy[top_acc]:.1%} on average), but the "
            f"{top_loss}-target router gives the lowest fused loss ({margin}). Accuracy is scored against the domain "
            "label; fusion rewards weight on whichever specialist predicts the text best, and the two differ "
            "wherever the own specialist is not the best one.")


def rule_spread(per_rule: Mapping[str, float], oracle_gap: float) -> str:
    """Notebook 4: the fusion rules with one router (``per_rule``: rule -> mixed loss), and how their spread
    compares with the oracle gap (:func:`fusion_rule_scale`)."""
    best = min(per_rule, key=per_rule.get)
    spread = max(per_rule.values()) - min(per_rule.values())
    words, conclusion = fusion_rule_scale(spread, oracle_gap)
    return (f"With the per-token router the lowest mixed loss comes from {best}, at {per_rule[best]:.4f}. The "
            f"{len(per_rule)} rules span {spread:.4f} nats, {words} the oracle gap ({oracle_gap:+.4f} nats). {conclusion}")


def routers_on_hybrid(rows: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Notebook 4: which router fuses better on single-domain and on hybrid windows. ``rows`` =
    {kind of windows: {router: {"fused loss": ..., "routing accuracy": ...}}}."""
    parts, winners = [], set()
    for kind, by_router in rows.items():
        best = min(by_router, key=lambda r: by_router[r]["fused loss"])
        other = next(r for r in by_router if r != best)
        winners.add(best)
        parts.append(f"on {kind} windows the {best} router fuses better ({by_router[best]['fused loss']:.4f} against "
                     f"{by_router[other]['fused loss']:.4f}; routing accuracy {by_router[best]['routing accuracy']:.1%} "
                     f"against {by_router[other]['routing accuracy']:.1%})")
    text = "; ".join(parts)
    text = text[0].upper() + text[1:] + "."
    if len(winners) == 1:
        return text + (f" The {winners.pop()} router is ahead on both kinds of window, so a switch of domain inside the "
                       "window does not change which router to prefer here.")
    return text + (" The order flips between the two kinds of window: which router to prefer depends on whether the "
                   "text changes domain inside a window.")


def _mean(acc: Mapping[str, float]) -> float:
    return sum(acc.values()) / len(acc)


def memory_verdict(rep: Mapping, cold: str, memory: str, across: str) -> str:
    """Notebook 5: what carrying the router's state from the text before each window does
    (``rep`` is the document-memory report; ``cold``, ``memory`` and ``across`` name its rows: the cold
    start, memory stopped at document boundaries, and memory across them)."""
    m, c, r = rep["memory_vs_cold"], rep["rows"][cold], rep["rows"][memory]
    change = (f"memory changes the mixed loss by {m['delta']:+.4f} nats on the same windows (paired 95 % interval "
              f"{m['ci_low']:+.4f} to {m['ci_high']:+.4f})")
    across_note = (f" Remembering across document boundaries instead changes the mixed loss by "
                   f"{rep['rows'][across]['mixed_loss'] - r['mixed_loss']:+.4f} nats against stopping at them.")
    if m["verdict"] == "worse":
        return (f"Carrying the state hurts here: {change}. The router was trained on cold windows, and a prefix "
                "from the wrong context misleads it more than it helps." + across_note)
    if m["verdict"] != "better":
        return (f"No clear effect: {change}. The cold start is not what limits this router; what it can read from "
                "the trunk states is." + across_note)
    moved = {b: c["oracle_gap_by_position"][b] - v for b, v in r["oracle_gap_by_position"].items()}
    most = max(moved, key=moved.get)
    where = ("" if most == next(iter(moved)) else " The gain is not only at the start of the window.")
    reach = "at or below" if rep["memory_meets_target"] else "still above"
    share = rep["gap_closed_share"]
    why = (" Most of the cold router's gap was its cold start: at the first positions it had not read enough yet."
           if share >= 0.5 else " The cold start was the smaller part of the gap: most of it lies where both routers "
           "have read plenty, in what the router can tell from the trunk states.")
    return (f"Carrying the state helps: {change}. It closes {share:.0%} of the cold router's oracle gap, leaving "
            f"{r['oracle_gap_nats']:+.4f} nats, {reach} {rep['target_gap_nats']} nats. The gap falls most at positions "
            f"{most} ({moved[most]:+.4f} nats).{where}{why} Mean routing accuracy: {_mean(c['routing_accuracy']):.1%} "
            f"cold, {_mean(r['routing_accuracy']):.1%} with memory." + across_note)


def nothing_frozen_changes(sw: Mapping, specialist_rows: Sequence[str]) -> str:
    """Notebook 8: what freezing nothing changes against the smallest K of the freeze sweep ``sw``: how far
    the specialists diverge, the oracle gap, routing, how alike the crowns end, and the best specialist."""
    k0 = min(sw["ks"])
    d, nz, kz = sw["none_minus_smallest_k"], sw["per_k"]["none"], sw["per_k"][str(k0)]
    cka = sw["none_minus_smallest_k_crown_cka"]
    best = {name: min(r["mixed"][s] for s in specialist_rows) for name, r in (("none", nz), ("k0", kz))}
    return (f"Against K = {k0}, the specialists diverge {'more' if d['divergence_%'] > 0 else 'less'} "
            f"({d['divergence_%']:+.2f} points), the router's oracle gap {'widens' if d['oracle_gap'] > 0 else 'narrows'} "
            f"({d['oracle_gap']:+.4f} nats), routing accuracy moves {sw['none_minus_smallest_k_routing_accuracy']:+.1%}, "
            f"and the crowns' final hidden states grow {'less' if cka < 0 else 'more'} alike (CKA {cka:+.3f}). The best "
            f"single specialist is {'worse' if best['none'] > best['k0'] else 'better'} on mixed text than at K = {k0} "
            f"({best['none']:.4f} against {best['k0']:.4f} nats): a gain over the best specialist is measured against a "
            "bar that moves with the specialists, so compare the fused losses too.")


def nothing_frozen_methods(nz: Mapping, headline: str) -> str:
    """Notebook 8: hidden-state fusion and weight averaging once nothing is frozen (``nz``: the sweep's
    ``none`` point, ``headline``: its fused row)."""
    hidden_ok = nz["fused_hidden_gain_vs_best_specialist_%"] >= nz["fused_gain_vs_best_specialist_%"]
    wa, base = nz["mixed"]["weight average"], nz["mixed"]["base"]
    text = ("Hidden-state fusion keeps up with logit fusion" if hidden_ok else
            "Hidden-state fusion falls behind logit fusion") + " once the heads are no longer shared. "
    return text + ("Weight averaging " + ("beats" if nz["weight_average_gain_vs_best_specialist_%"] > 0 else
                                          "does not beat")
                   + f" the best specialist and is {'better' if wa < base else 'worse'} than the base ({wa:.4f} "
                   f"against {base:.4f} nats; fused {nz['mixed'][headline]:.4f}).")
