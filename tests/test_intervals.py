"""Paired bootstrap intervals (minigpt.intervals) and the verdicts read off them."""
import pytest
import torch

from minigpt.config import DOMAINS
from minigpt.evaluate import litmus, loss_table
from minigpt.intervals import COMPARISONS, by_name, comparison_intervals, format_interval, interval_verdict
from minigpt.scoring import HEADLINE, ORACLE, SPECIALIST_ROWS


def _nll(rows: dict, n: int, T: int = 4, seed: int = 0) -> dict:
    """``rows``: name -> function(domain index, window noise (n, 1)) -> (n, T) token losses."""
    gen = torch.Generator().manual_seed(seed)
    noise = {d: 3 + torch.randn(n, 1, generator=gen) for d in DOMAINS}  # window difficulty, shared by rows
    return {r: {d: f(i, noise[d]).expand(n, T).clone() for i, d in enumerate(DOMAINS)} for r, f in rows.items()}


def _rows(fused_offset: float, spread: float = 0.0, seed: int = 1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    own = lambda x: spread * torch.randn(x.shape, generator=gen)  # noqa: E731  (row-specific window noise)
    rows = {s: (lambda i, x: x + 0.2 + own(x)) for s in SPECIALIST_ROWS}
    rows.update({"base": lambda i, x: x + 0.3, "monolithic": lambda i, x: x + 0.1, "uniform mix": lambda i, x: x + 0.15,
                 "weight average": lambda i, x: x + 0.25, ORACLE: lambda i, x: x + 0.05,
                 HEADLINE: lambda i, x: x + 0.2 - fused_offset + own(x)})
    return rows


def test_a_constant_paired_difference_has_no_width():
    # every window's loss varies a lot, but the fused row is the oracle + 0.1 on every window: pairing
    # cancels the shared difficulty, so the oracle gap's interval is the point itself
    nll = _nll(_rows(fused_offset=0.05), n=50)
    gap = by_name(comparison_intervals(nll))["oracle gap"]
    assert gap["estimate"] == pytest.approx(0.1, abs=1e-6)
    assert gap["low"] == pytest.approx(0.1, abs=1e-6) and gap["high"] == pytest.approx(0.1, abs=1e-6)
    # unpaired, the same windows' spread would make the mixed loss alone uncertain by far more
    assert float(torch.cat([v.mean(-1) for v in nll[HEADLINE].values()]).std()) > 0.5


def test_interval_holds_the_estimate_and_narrows_with_more_windows():
    widths = {}
    for n in (64, 1024):
        ivs = by_name(comparison_intervals(_nll(_rows(0.05, spread=0.3), n=n)))
        iv = ivs["vs monolithic"]
        assert iv["low"] <= iv["estimate"] <= iv["high"]
        widths[n] = iv["high"] - iv["low"]
    # 16x the windows: about 1/4 the width (sampling noise allowed)
    assert 0.15 < widths[1024] / widths[64] < 0.4


def test_every_comparison_is_reported_with_its_unit_and_method():
    ivs = comparison_intervals(_nll(_rows(0.05, spread=0.1), n=32))
    assert [iv["comparison"] for iv in ivs] == list(COMPARISONS)
    for iv in ivs:
        assert iv["unit"] == COMPARISONS[iv["comparison"]][1] and "paired bootstrap" in iv["method"]
    # a row that was not scored drops its comparison instead of failing
    nll = _nll(_rows(0.05, spread=0.1), n=32)
    del nll["monolithic"]
    assert "vs monolithic" not in by_name(comparison_intervals(nll))


def test_estimate_matches_the_table():
    nll = _nll(_rows(0.05, spread=0.2), n=40)
    table, ivs = loss_table(nll), by_name(comparison_intervals(nll))
    for ref in ("best specialist", "monolithic", "uniform mix", "base"):
        assert ivs[f"vs {ref}"]["estimate"] == pytest.approx(table.loc[HEADLINE, f"Δ% vs {ref}"], abs=1e-4)
    assert ivs["oracle gap"]["estimate"] == pytest.approx(table.loc[HEADLINE, "mixed"] - table.loc[ORACLE, "mixed"], abs=1e-6)


def test_same_seed_same_interval_other_seed_other_resamples():
    nll = _nll(_rows(0.02, spread=0.3), n=64)
    a, b, c = (comparison_intervals(nll, seed=s) for s in (0, 0, 1))
    assert a == b and a != c


@pytest.mark.parametrize("low, high, want", [(0.1, 0.5, "holds"), (-0.5, -0.1, "fails"), (-0.1, 0.3, "inconclusive")])
def test_verdict_reads_the_interval(low, high, want):
    assert interval_verdict(low, high) == want


@pytest.mark.parametrize("offset, want", [(0.15, "holds"), (-0.15, "fails"), (0.0, "inconclusive")])
def test_litmus_reads_fused_vs_specialists_off_the_interval(offset, want):
    # fused better, worse, or level with the specialists: the Step 8 check follows the interval
    nll = _nll(_rows(offset, spread=0.3), n=64)
    ivs = comparison_intervals(nll)
    check = litmus(loss_table(nll), ivs)[5]
    assert check["verdict"] == want and check["holds"] == (want == "holds")
    assert format_interval(by_name(ivs)["vs best specialist"]) in check["evidence"]
