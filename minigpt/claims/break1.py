"""Claims read off ``break1.json``: which of the chapter's predictions held, what the headline shows,
and whether base quality could explain it."""
from __future__ import annotations

from typing import Mapping

from ..studies.break1.matched import PREDICTIONS
from .core import Claim, reading, register, with_field

OUTCOME_WORDS = {"held": "held", "reversed": "came out reversed", "inconclusive": "cannot be decided on these windows",
                 "mixed": "held against one kind of control and not the other"}


def _index(rep: Mapping, metric: str) -> int:
    return next(i for i, r in enumerate(rep["matched"]) if r["metric"] == metric)


def _flip_predictions(rep: Mapping) -> Mapping:
    """Every prediction held, or, when they all did, the first one reversed."""
    rows = rep["matched"]
    all_held = all(r["outcome"] == "held" for r in rows)
    out = rep
    for i in range(len(rows)):
        out = with_field(out, f"matched.{i}.outcome", "reversed" if all_held and i == 0 else "held")
    return out


@register("break1.predictions", "break1.json", _flip_predictions)
def predictions(rep: Mapping) -> Claim:
    """Which of the chapter's predictions held, which reversed, which the windows cannot decide."""
    by = {o: [r["metric"] for r in rep["matched"] if r["outcome"] == o] for o in OUTCOME_WORDS}
    parts = [f"{OUTCOME_WORDS[o]}: {', '.join(ms)}" for o, ms in by.items() if ms]
    n = len(rep["matched"])
    if len(by["held"]) == n:
        outcome, lead = "all held", f"All {n} of the chapter's predictions for different bases held at this scale"
    elif by["reversed"]:
        outcome, lead = "some reversed", (f"{len(by['held'])} of the chapter's {n} predictions held and "
                                          f"{len(by['reversed'])} came out the other way at this scale")
    elif by["held"]:
        outcome, lead = "some held", f"{len(by['held'])} of the chapter's {n} predictions held at this scale"
    else:
        outcome, lead = "none held", f"None of the chapter's {n} predictions held at this scale"
    return Claim(f"{lead} ({'; '.join(parts)}).", outcome,
                 reading(rep, *(f"matched.{i}.outcome" for i in range(n))))


def _flip_headline(rep: Mapping) -> Mapping:
    return with_field(rep, "headline.catches_it", not rep["headline"]["catches_it"])


@register("break1.headline", "break1.json", _flip_headline)
def headline(rep: Mapping) -> Claim:
    """Would a reader who looks only at the headline see the break?"""
    h = rep["headline"]
    iv = f"{h['estimate']:+.4f} nats [{h['low']:+.4f}, {h['high']:+.4f}]"
    if h["catches_it"]:
        text = (f"The headline does show it: the different-base system's mixed loss is worse than its matched "
                f"control's by {iv}.")
        return Claim(text, "catches it", reading(rep, "headline.catches_it"))
    missed = ", ".join(rep["missed_by_headline"]) or "nothing else either"
    text = (f"The headline alone would not show it: against its matched control the mixed loss moves by {iv}, "
            f"an interval that does not rule out no change. Missed with it: {missed}.")
    return Claim(text, "misses it", reading(rep, "headline.catches_it", "missed_by_headline"))


def _flip_confound(rep: Mapping) -> Mapping:
    return with_field(rep, "confound.confounded_by_base_quality", not rep["confound"]["confounded_by_base_quality"])


@register("break1.confound", "break1.json", _flip_confound)
def confound(rep: Mapping) -> Claim:
    """Could a difference in base quality alone explain the headline's change?"""
    c = rep["confound"]
    nums = (f"the bases differ by {c['base_quality_spread_nats']:.4f} nats in mixed loss, the headline moves by "
            f"{c['effect_nats']:+.4f} nats")
    if c["confounded_by_base_quality"]:
        return Claim(f"Base quality could explain the headline's change on its own ({nums}), so read the matched "
                     "metrics, each measured against the set's own base and specialists, not the raw losses.",
                     "confounded", reading(rep, "confound.confounded_by_base_quality"))
    return Claim(f"Base quality cannot explain it ({nums}): the bases are closer to each other than the change the "
                 "break makes.", "not confounded", reading(rep, "confound.confounded_by_base_quality"))


def _flip_metric(metric: str):
    def flip(rep: Mapping) -> Mapping:
        i = _index(rep, metric)
        return with_field(rep, f"matched.{i}.outcome", "reversed" if rep["matched"][i]["outcome"] == "held" else "held")
    return flip


def prediction(rep: Mapping, metric: str) -> Claim:
    """One prediction: what was measured on each set and what the interval says."""
    i = _index(rep, metric)
    r = rep["matched"][i]
    iv, ivm = r["vs_matched"], r["vs_mean_of_controls"]
    nums = (f"{r['different']:.4f} with different bases against {r['matched_control']:.4f} for the matched control "
            f"(change {iv['estimate']:+.4f} [{iv['low']:+.4f}, {iv['high']:+.4f}]; against the mean of the controls "
            f"{ivm['estimate']:+.4f} [{ivm['low']:+.4f}, {ivm['high']:+.4f}])")
    text = f"*{r['prediction'][0].upper() + r['prediction'][1:]}*: {OUTCOME_WORDS[r['outcome']]} — {r['metric']} {nums}."
    return Claim(text, r["outcome"], reading(rep, f"matched.{i}.outcome"))


for _metric in PREDICTIONS:
    register(f"break1.prediction.{_metric}", "break1.json", _flip_metric(_metric))(
        lambda rep, _m=_metric: prediction(rep, _m))


def _flip_geometry(rep: Mapping) -> Mapping:
    key = next(k for k in rep["representations"] if k.startswith("trunk output"))
    cos = rep["representations"][key]["mean_paired_cosine"]
    return with_field(rep, f"representations.{key}.mean_paired_cosine", 0.9 if abs(cos) < 0.2 else 0.0)


@register("break1.geometry", "break1.json", _flip_geometry)
def geometry(rep: Mapping) -> Claim:
    """CKA against paired cosine between the bases' trunks: related information, other coordinates?"""
    key = next(k for k in rep["representations"] if k.startswith("trunk output"))
    t = rep["representations"][key]
    nums = f"Between the bases, the trunk outputs have linear CKA {t['mean_cka']:.2f} and paired cosine {t['mean_paired_cosine']:+.2f}"
    if abs(t["mean_paired_cosine"]) < 0.2:
        return Claim(nums + (": related information in unrelated coordinates. Anything that adds coordinates across "
                             "models (weight averaging, mixing hidden states) should fail, while logit fusion, which "
                             "works in the shared vocabulary's coordinates, need not."),
                     "other coordinates", reading(rep, f"representations.{key}.mean_paired_cosine"))
    return Claim(nums + (": the coordinates themselves partly line up, so even methods that add coordinates across "
                         "models need not fail outright here."), "aligned coordinates",
                 reading(rep, f"representations.{key}.mean_paired_cosine"))


def _tokenizer_rows(rep: Mapping) -> tuple[Mapping, Mapping]:
    tm = rep["tokenizer_mismatch"]
    return tm["fused_mixed"], tm


def _flip_tokenizer(rep: Mapping) -> Mapping:
    fm, _ = _tokenizer_rows(rep)
    return with_field(rep, "tokenizer_mismatch.fused_mixed.retrained router",
                      fm["reused healthy router"] + (0.1 if fm["retrained router"] < fm["reused healthy router"] else -0.1))


@register("break1.tokenizer", "break1.json", _flip_tokenizer)
def tokenizer_case(rep: Mapping) -> Claim:
    """A specialist under another tokenizer: does a retrained router protect the fused model?"""
    fm, tm = _tokenizer_rows(rep)
    nums = (f"Fused mixed loss: healthy set {tm['healthy_fused_mixed']:.4f}; with the mismatched specialist and the healthy "
            f"router {fm['reused healthy router']:.4f}; with a router retrained around it {fm['retrained router']:.4f}.")
    w = tm["weight_on_mismatched"]
    if fm["retrained router"] < fm["reused healthy router"]:
        text = (nums + f" The retrained router limits the damage by routing around the broken expert (its weight on legal "
                f"text {w['retrained router']['legal']:.2f} against {w['reused healthy router']['legal']:.2f}), which "
                "means the set has effectively lost its legal specialist: the check is the real protection.")
        return Claim(text, "router protects", reading(rep, "tokenizer_mismatch.fused_mixed"))
    return Claim(nums + " Retraining the router does not help: nothing it reads tells it which expert misreads the ids.",
                 "router does not protect", reading(rep, "tokenizer_mismatch.fused_mixed"))


# -- why each prediction came out as it did ---------------------------------------------------------------
# Each reason reads the matched control ("shared", the set on base X) beside the different-base set and
# states the terms the metric is made of, so the reason is arithmetic on the same JSON, not a guess.
FUSED, ORACLE_ROW = "fused soft (trunk of base X router)", "oracle (per sequence)"


def _terms(s: Mapping) -> dict[str, float]:
    """One set's mixed losses: its router's base, its best specialist, the fused model, the oracle."""
    m = s["mixed"]
    return {"base": m["base"], "best": m[s["best_specialist"]], "fused": m[FUSED], "oracle": m[ORACLE_ROW]}


def _two(rep: Mapping) -> tuple[dict, dict]:
    return _terms(rep["different"]), _terms(rep["shared"])


def _lead(outcome: str, held: str, reversed_: str, undecided: str) -> str:
    return {"held": held, "reversed": reversed_}.get(outcome, undecided)


def _why_gain_over_base(rep: Mapping, outcome: str) -> str:
    d, s = _two(rep)
    spec = (d["base"] - d["best"]) - (s["base"] - s["best"])  # change in the specialists' lead over base X
    fus = (d["best"] - d["fused"]) - (s["best"] - s["fused"])  # change in what fusion adds over the best specialist
    by = ("the best specialist's lead over base X" if abs(spec) >= abs(fus)
          else "what fusion adds on top of the best specialist")
    nums = (f"gain over base X = (base X - best specialist) + (best specialist - fused): "
            f"{d['base'] - d['best']:+.4f} {d['best'] - d['fused']:+.4f} nats with different bases, "
            f"{s['base'] - s['best']:+.4f} {s['best'] - s['fused']:+.4f} in the matched control")
    return _lead(outcome, f"It shrinks mostly through {by} ({nums}).", f"It grows mostly through {by} ({nums}).",
                 f"The two terms move by {spec:+.4f} and {fus:+.4f} nats ({nums}).")


def _why_gain_over_best(rep: Mapping, outcome: str) -> str:
    d, s = _two(rep)
    db, df = d["best"] - s["best"], d["fused"] - s["fused"]
    nums = (f"the best specialist's mixed loss moves by {db:+.4f} nats against the matched control, "
            f"the fused model's by {df:+.4f}")
    return _lead(outcome, f"The fused model loses more than the best specialist does ({nums}).",
                 f"The best specialist loses more than the fused model does ({nums}), so it is easier to beat.",
                 f"Both move by about as much ({nums}).")


def _why_routing(rep: Mapping, outcome: str) -> str:
    acc_d = rep["different"]["routing_accuracy"]["trunk of base X"]
    acc_s = rep["shared"]["routing_accuracy"]["trunk of base X"]
    drop = {dom: acc_s[dom] - acc_d[dom] for dom in acc_d}
    worst = max(drop, key=drop.get)
    on_x = rep["base_seeds"][list(acc_d).index(worst)] == rep["base_x_seed"]
    where = ("whose crown sits on base X like the router's input" if on_x
             else "whose crown sits on another base than the trunk the router reads")
    nums = ", ".join(f"{dom} {acc_d[dom]:.1%} vs {acc_s[dom]:.1%}" for dom in acc_d)
    return _lead(outcome, f"The largest drop is on {worst} text, {where} ({nums}).",
                 f"Routing improves most on {min(drop, key=drop.get)} text ({nums}): the router reads the domain off "
                 "base X's trunk whichever base a crown came from.",
                 f"Per domain: {nums}.")


def _why_oracle_gap(rep: Mapping, outcome: str) -> str:
    d, s = _two(rep)
    nums = (f"oracle gap = (fused - best specialist) + (best specialist - oracle): "
            f"{d['fused'] - d['best']:+.4f} {d['best'] - d['oracle']:+.4f} nats with different bases, "
            f"{s['fused'] - s['best']:+.4f} {s['best'] - s['oracle']:+.4f} in the matched control")
    head = (d["best"] - d["oracle"]) - (s["best"] - s["oracle"])
    src = ("the oracle's own headroom over the best specialist" if abs(head) >= abs(
        (d["fused"] - d["best"]) - (s["fused"] - s["best"])) else "the fused model's distance from the best specialist")
    return _lead(outcome, f"It grows mostly through {src} ({nums}).",
                 f"It shrinks through {src} ({nums}): a smaller gap here means less to win by choosing per window, "
                 "not a better router.", f"The terms: {nums}.")


def _why_calibration(rep: Mapping, outcome: str) -> str:
    def over(s: Mapping) -> float:  # mean confidence minus accuracy of the fused outputs
        c = s["calibration"][FUSED]["all"]
        return c["mean_max_prob"] - c["accuracy"]
    d, s = rep["different"], rep["shared"]
    nums = (f"confidence minus accuracy {over(d):+.4f} with different bases against {over(s):+.4f}; the "
            f"specialists' logit scales differ by a factor {d['logit_scale_ratio']:.2f} against "
            f"{s['logit_scale_ratio']:.2f}")
    return _lead(outcome, f"The fused outputs drift further from their accuracy ({nums}).",
                 f"The fused outputs sit closer to their accuracy ({nums}): mixing experts that disagree more "
                 "spreads the probability mass.", f"The difference is within noise ({nums}).")


def _why_weight_average(rep: Mapping, outcome: str) -> str:
    key = next(k for k in rep["representations"] if k.startswith("trunk output"))
    cos = rep["representations"][key]["mean_paired_cosine"]
    nums = f"paired cosine between the bases' trunk outputs {cos:+.2f}"
    return _lead(outcome, f"Averaging weights adds parameters whose coordinates do not line up ({nums}).",
                 f"The bases' coordinates line up well enough for averaging to survive ({nums}).",
                 f"Averaging is about as good or bad as in the matched control ({nums}).")


WHY = {"fused gain over its router's base": _why_gain_over_base, "fused gain over its best specialist": _why_gain_over_best,
       "routing accuracy": _why_routing, "oracle gap": _why_oracle_gap, "fused calibration error": _why_calibration,
       "weight averaging minus output averaging": _why_weight_average}


def why(rep: Mapping, metric: str) -> Claim:
    """Why one prediction came out as it did: the terms of its metric, read from both sets."""
    i = _index(rep, metric)
    out = rep["matched"][i]["outcome"]
    return Claim(WHY[metric](rep, out), out, reading(rep, f"matched.{i}.outcome"))


for _metric in PREDICTIONS:
    register(f"break1.why.{_metric}", "break1.json", _flip_metric(_metric))(lambda rep, _m=_metric: why(rep, _m))
