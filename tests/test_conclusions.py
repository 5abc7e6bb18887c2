"""Every branch of the conclusions the answer keys and the README draw (minigpt.analysis.conclusions):
each function is fed every outcome, not only the one the current run produced."""
import pytest

from minigpt.analysis.conclusions import (accuracy_loss_inversion, best_target, bottleneck_diagnosis, collapse_cost,
                                          comparison_sentence, coordinates_conclusion, fusion_rule_scale,
                                          headline_conclusion, leak_by_position, memory_verdict, misrouting_verdict,
                                          nothing_frozen_changes, nothing_frozen_methods, per_token_oracle_note,
                                          routers_on_hybrid, rule_spread, target_comparison)


def _iv(name, low, high, unit="%"):
    return {"comparison": name, "estimate": (low + high) / 2, "low": low, "high": high, "unit": unit}


@pytest.mark.parametrize("low, high, word", [(0.5, 1.5, "beats"), (-1.5, -0.5, "trails"),
                                             (-0.5, 0.5, "cannot be told apart")])
def test_comparison_sentence_follows_the_interval(low, high, word):
    text = comparison_sentence(_iv("vs monolithic", low, high))
    assert text.startswith(word) and "monolithic" in text and f"{low:+.2f}" in text


def test_headline_names_each_reference_with_its_own_outcome():
    text = headline_conclusion([_iv("vs best specialist", 1, 2), _iv("vs monolithic", -0.4, 0.3),
                                _iv("vs uniform mix", -2, -1), _iv("oracle gap", 0.01, 0.02, "nats")])
    assert "beats the best single specialist" in text
    assert "cannot be told apart from the monolithic model" in text
    assert "trails the uniform mix" in text and "oracle" not in text


def _contrasts(wa, hid):
    return [{"contrast": "weight averaging minus best specialist", "verdict": wa},
            {"contrast": "hidden-state fusion minus logit fusion", "verdict": hid},
            {"contrast": "fused logits minus best specialist", "verdict": "better"}]


@pytest.mark.parametrize("wa, hid, logits, expect", [
    ("worse", "worse", "survives", "are the ones that get worse"),
    ("worse", "worse", "degrades beyond base quality", "Everything gets worse"),
    ("worse", "no significant change", "not worse than the controls", "Not every method"),
    ("better", "no significant change", "degrades beyond base quality", "not explained by coordinates alone"),
])
def test_coordinates_conclusion_has_a_branch_per_outcome(wa, hid, logits, expect):
    text = coordinates_conclusion(_contrasts(wa, hid), logits)
    assert expect in text
    # a method that did not get worse is never listed among the failures
    if wa != "worse":
        assert "weight averaging (" + wa in text


@pytest.mark.parametrize("fused, expect", [(3.5, "even below the per-token oracle"), (4.1, "stays above it")])
def test_per_token_oracle_is_not_a_bound_on_logit_fusion(fused, expect):
    text = per_token_oracle_note(per_token_oracle=3.7, per_window_oracle=4.05, fused_soft=fused)
    assert "does not bound soft logit fusion" in text and expect in text and "0.3500" in text


@pytest.mark.parametrize("alone, expect", [
    ({"code specialist": 12.0, "medical specialist": 9.0, "legal specialist": 10.0}, "shows in the headline"),
    ({"code specialist": 12.0, "medical specialist": 0.8, "legal specialist": 10.0}, "A collapse onto medical"),
])
def test_collapse_cost_reads_each_specialist_alone_against_fused(alone, expect):
    text = collapse_cost(alone, tolerance_pct=1.0)
    assert expect in text and "+12.00%" in text


@pytest.mark.parametrize("acc, loss, expect", [
    ({"domain": 0.9, "performance": 0.8}, {"domain": 4.0, "performance": 4.1}, "domain-target router wins on both"),
    ({"domain": 0.9, "performance": 0.8}, {"domain": 4.1, "performance": 4.0},
     "Accuracy favours the domain targets but the fused loss favours the performance targets")])
def test_target_comparison_has_a_branch_per_outcome(acc, loss, expect):
    text = target_comparison(acc, loss)
    assert expect in text
    if "both" in expect:
        assert "0.1000 nats" in text


@pytest.mark.parametrize("top, partial, expect", [(0.7, 1, "collapse, not confusion"), (0.4, 3, "cheap confusion"),
                                                  (0.4, 0, "wrong domains outright"), (0.4, 2, "2 of 3 domains")])
def test_misrouting_verdict_has_a_branch_per_outcome(top, partial, expect):
    assert expect in misrouting_verdict(top, "code specialist", partial, 3)


@pytest.mark.parametrize("headroom, captured, expect", [(0.0, 0.9, "no headroom"), (0.1, 0.8, "bottleneck is the specialists"),
                                                        (0.1, 0.5, "both sides matter"), (0.1, 0.1, "bottleneck is the router")])
def test_bottleneck_diagnosis_has_a_branch_per_outcome(headroom, captured, expect):
    text = bottleneck_diagnosis(headroom, captured)
    assert expect in text and (headroom <= 0 or f"{captured:.0%}" in text)


def test_accuracy_loss_inversion_finds_one_or_says_there_is_none():
    consistent = [("a", 0.9, 4.0), ("b", 0.8, 4.1)]
    assert accuracy_loss_inversion(consistent).startswith("Not in this run")
    text = accuracy_loss_inversion(consistent + [("c", 0.7, 3.9)])
    assert text.startswith("Yes: the c has lower accuracy than the a")


@pytest.mark.parametrize("spread, words", [(0.001, "small next to"), (0.01, "comparable to"), (0.05, "larger than")])
def test_fusion_rule_scale_compares_with_the_oracle_gap(spread, words):
    got, conclusion = fusion_rule_scale(spread, oracle_gap=-0.02)
    assert got == words and ("second-order" in conclusion) == (words == "small next to")


@pytest.mark.parametrize("first, last, expect", [(0.03, 0.01, "future talking; what remains"),
                                                 (0.03, -0.01, "at the end it is gone"),
                                                 (0.01, 0.03, "does not explain it"), (-0.02, -0.03, "does not explain it")])
def test_leak_by_position_has_a_branch_per_outcome(first, last, expect):
    assert expect in leak_by_position(first, last)


@pytest.mark.parametrize("acc, loss, expect", [
    ({"domain": 0.9, "performance": 0.8, "lm": 0.5}, {"domain": 4.0, "performance": 4.1, "lm": 4.2},
     "The domain-target router routes most accurately (90.0% on average) and also gives the lowest fused loss "
     "(0.1000 nats below the next)"),
    ({"domain": 0.9, "performance": 0.8, "lm": 0.5}, {"domain": 4.1, "performance": 4.2, "lm": 4.05},
     "The domain-target router routes most accurately (90.0% on average), but the lm-target router gives the lowest "
     "fused loss (0.0500 nats below the next)")])
def test_best_target_names_the_winner_of_each_measure(acc, loss, expect):
    assert best_target(acc, loss).startswith(expect)


@pytest.mark.parametrize("spread, words", [(0.001, "small next to"), (0.01, "comparable to"), (0.05, "larger than")])
def test_rule_spread_reads_the_best_rule_and_compares_its_spread(spread, words):
    rules = {"logit fusion (soft)": 4.0 + spread, "probability mixture": 4.0, "hard (argmax only)": 4.0 + spread / 2}
    text = rule_spread(rules, oracle_gap=0.02)
    assert "comes from probability mixture, at 4.0000" in text and f"span {spread:.4f} nats, {words}" in text


def _hybrid(single_winner, hybrid_winner):
    def kind(winner):
        return {r: {"fused loss": 4.0 if r == winner else 4.1, "routing accuracy": 0.6 if r == winner else 0.5}
                for r in ("last-token", "per-token")}
    return {"single-domain": kind(single_winner), "hybrid": kind(hybrid_winner)}


@pytest.mark.parametrize("single, hybrid, expect", [("last-token", "last-token", "ahead on both kinds"),
                                                    ("per-token", "per-token", "ahead on both kinds"),
                                                    ("last-token", "per-token", "The order flips")])
def test_routers_on_hybrid_follows_each_kind_of_window(single, hybrid, expect):
    text = routers_on_hybrid(_hybrid(single, hybrid))
    assert text.startswith(f"On single-domain windows the {single} router fuses better (4.0000 against 4.1000")
    assert f"on hybrid windows the {hybrid} router fuses better" in text and expect in text
    if "both" in expect:
        assert f"The {single} router is ahead" in text


def _memory(verdict, *, closed=0.6, meets=True, most_first=True):
    gap = {"0-7": 0.05, "8-31": 0.03, "32-63": 0.02}
    moved = {"0-7": 0.03, "8-31": 0.01, "32-63": 0.0} if most_first else {"0-7": 0.0, "8-31": 0.02, "32-63": 0.0}
    cold = {"oracle_gap_by_position": gap, "routing_accuracy": {"code": 0.5, "medical": 0.5, "legal": 0.5},
            "mixed_loss": 4.0, "oracle_gap_nats": 0.04}
    mem = {"oracle_gap_by_position": {b: v - moved[b] for b, v in gap.items()}, "mixed_loss": 3.99,
           "routing_accuracy": {"code": 0.6, "medical": 0.6, "legal": 0.6}, "oracle_gap_nats": 0.03}
    return {"memory_vs_cold": {"delta": -0.01, "ci_low": -0.02, "ci_high": 0.0, "verdict": verdict},
            "rows": {"cold": cold, "memory": mem, "across": {**mem, "mixed_loss": 3.995}},
            "target_gap_nats": 0.01, "memory_meets_target": meets, "gap_closed_share": closed}


@pytest.mark.parametrize("kwargs, expect, absent", [
    ({"verdict": "worse"}, "Carrying the state hurts", "closes"),
    ({"verdict": "inconclusive"}, "No clear effect", "closes"),
    ({"verdict": "better"}, "Most of the cold router's gap was its cold start", "not only at the start"),
    ({"verdict": "better", "closed": 0.2}, "The cold start was the smaller part", "Most of the cold"),
    ({"verdict": "better", "most_first": False}, "The gain is not only at the start", "falls most at positions 0-7"),
    ({"verdict": "better", "meets": False}, "still above 0.01 nats", "at or below")])
def test_memory_verdict_has_a_branch_per_outcome(kwargs, expect, absent):
    text = memory_verdict(_memory(**kwargs), "cold", "memory", "across")
    assert expect in text and absent not in text
    assert "changes the mixed loss by +0.0050 nats against stopping at them" in text


def _sweep(sign):
    """A freeze-sweep report whose nothing-frozen point differs from K = 0 in the direction ``sign``."""
    k0 = {"mixed": {"code specialist": 4.2, "medical specialist": 4.3, "legal specialist": 4.4}}
    nz = {"mixed": {k: v + 0.1 * sign for k, v in k0["mixed"].items()}}
    return {"ks": [0, 1], "per_k": {"none": nz, "0": k0},
            "none_minus_smallest_k": {"divergence_%": 2.0 * sign, "oracle_gap": 0.01 * sign},
            "none_minus_smallest_k_routing_accuracy": 0.05 * sign, "none_minus_smallest_k_crown_cka": 0.1 * sign}


@pytest.mark.parametrize("sign, words", [(1, ("diverge more", "gap widens", "grow more alike", "is worse on mixed")),
                                         (-1, ("diverge less", "gap narrows", "grow less alike", "is better on mixed"))])
def test_nothing_frozen_changes_follows_each_difference(sign, words):
    text = nothing_frozen_changes(_sweep(sign), ["code specialist", "medical specialist", "legal specialist"])
    assert all(w in text for w in words), text
    assert f"routing accuracy moves {0.05 * sign:+.1%}" in text
    assert f"({4.2 + 0.1 * sign:.4f} against 4.2000 nats)" in text


@pytest.mark.parametrize("hidden, wa_gain, wa, expect", [
    (2.0, 1.0, 4.0, ("keeps up with", "beats the best", "better than the base")),
    (0.5, -1.0, 4.5, ("falls behind", "does not beat", "worse than the base"))])
def test_nothing_frozen_methods_has_a_branch_per_outcome(hidden, wa_gain, wa, expect):
    nz = {"fused_hidden_gain_vs_best_specialist_%": hidden, "fused_gain_vs_best_specialist_%": 1.0,
          "weight_average_gain_vs_best_specialist_%": wa_gain,
          "mixed": {"weight average": wa, "base": 4.2, "fused": 3.9}}
    text = nothing_frozen_methods(nz, "fused")
    assert all(e in text for e in expect) and "fused 3.9000" in text
