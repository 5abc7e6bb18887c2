"""Every branch of the conclusions the answer keys and the README draw (minigpt.analysis.conclusions):
each function is fed every outcome, not only the one the current run produced."""
import pytest

from minigpt.analysis.conclusions import (accuracy_loss_inversion, bottleneck_diagnosis, collapse_cost,
                                          comparison_sentence, coordinates_conclusion, fusion_rule_scale,
                                          headline_conclusion, leak_by_position, misrouting_verdict,
                                          per_token_oracle_note, target_comparison)


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
