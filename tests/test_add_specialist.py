"""Adding a specialist later: growing a router by one output keeps the old rows exactly, a prototype row
scores its own domain's prototype like the old rows score theirs, and taking an expert away renormalises
the rest; the late domain's documents split without a pretrain share; the CLI at ci keeps the tokenizer,
the base and the three crowns as they were."""
from __future__ import annotations

import json

import pytest
import torch

from minigpt import late_domain
from minigpt.router import CausalRouter
from minigpt.studies.add_specialist.growth import GrownRouter, Without, prototype_row, summaries, with_row
from minigpt.studies.add_specialist.measure import LOSS_MARGIN, old_domain_verdict

C, T = 8, 6


def _router(seed: int = 0) -> CausalRouter:
    torch.manual_seed(seed)
    r = CausalRouter(C, 3, decay=0.8)
    with torch.no_grad():
        r.proj.weight.normal_()
        r.proj.bias.normal_()
    return r.eval()


def test_a_grown_router_keeps_the_old_rows_and_starts_almost_silent():
    old, h = _router(), torch.randn(2, T, C)
    grown = GrownRouter(old)
    w = grown(h)
    assert w.shape == (2, T, 4) and float(w[..., 3].detach().max()) < 1e-3
    with torch.no_grad():
        grown.new.bias.fill_(-1e4)  # no weight on the newcomer at all: exactly the old router
    assert torch.allclose(grown(h)[..., :3], old(h), atol=1e-6)
    assert [n for n, p in grown.named_parameters() if p.requires_grad] == ["new.weight", "new.bias"]


def test_the_new_output_takes_weight_only_from_the_softmax_share():
    old, h = _router(), torch.randn(2, T, C)
    grown = GrownRouter(old)
    with torch.no_grad():
        grown.new.bias.fill_(0.5)
    w = grown(h)
    ratio_old, ratio_new = old(h)[..., 0] / old(h)[..., 1], w[..., 0] / w[..., 1]
    assert torch.allclose(ratio_old, ratio_new, rtol=1e-5)  # the old experts keep their relative weights
    assert torch.allclose(w.sum(-1), torch.ones(2, T), atol=1e-6)


def test_prototype_row_scores_the_new_prototype_like_the_old_rows_score_theirs():
    old = _router()
    gen = torch.Generator().manual_seed(1)
    feats = {d: torch.randn(4, T, C, generator=gen) + 3 * torch.eye(C)[i] for i, d in enumerate(["a", "b", "c", "new"])}
    row, bias = prototype_row(old, feats, "new")
    with torch.no_grad():
        proto = {d: summaries(old, h).mean((0, 1)) for d, h in feats.items()}
        own = torch.stack([old.proj.weight[i] @ proto[d] + old.proj.bias[i] for i, d in enumerate("abc")]).mean()
    assert float(row @ proto["new"] + bias) == pytest.approx(float(own), abs=1e-5)
    assert bias == pytest.approx(float(old.proj.bias.detach().mean()))
    grown = with_row(old, row, bias)
    assert torch.allclose(grown.new.weight[0], row)


def test_without_drops_one_expert_and_renormalises():
    old, h = _router(), torch.randn(2, T, C)
    w, w1 = old(h), Without(old, 1)(h)
    assert torch.all(w1[..., 1] == 0) and torch.allclose(w1.sum(-1), torch.ones(2, T), atol=1e-6)
    assert torch.allclose(w1[..., 0] / w1[..., 2], w[..., 0] / w[..., 2], rtol=1e-5)


@pytest.mark.parametrize("low, high, want", [(0.001, 0.002, "lost"), (-0.003, -0.001, "gained"),
                                             (-0.002, LOSS_MARGIN, "nothing lost"), (-0.002, LOSS_MARGIN + 1e-4, "inconclusive")])
def test_nothing_lost_only_where_the_interval_allows_it(low, high, want):
    assert old_domain_verdict({"estimate": (low + high) / 2, "low": low, "high": high}) == want


def test_late_domain_splits_skip_pretraining_and_are_stable():
    ids = [f"plays:x:{i:03d}" for i in range(400)]
    splits = [late_domain.split_of(i) for i in ids]
    assert set(splits) == set(late_domain.LATE_SPLITS) and "pretrain" not in splits
    assert splits == [late_domain.split_of(i) for i in ids]
    with pytest.raises(ValueError, match="never took part in pretraining"):
        late_domain.texts([], "pretrain")


def test_scenes_cut_at_headings_and_keep_the_act():
    md = "# A Play\n\n## ACT I\n\n### SCENE I. A heath\n\nBERNARDO\nWho's there?\n\n### SCENE II. A room\n\n**KING**\nWell.\n"
    docs = late_domain._scenes("a-play", md)
    assert [d["doc_id"] for d in docs] == ["plays:a-play:001", "plays:a-play:002"]
    assert docs[0]["text"].startswith("A Play. Act I, SCENE I. A heath\n\nBERNARDO") and "**" not in docs[1]["text"]


@pytest.mark.slow
@pytest.mark.xdist_group("train")
def test_add_specialist_cli_keeps_what_was_there(tmp_path, monkeypatch, capsys):
    from minigpt.cli import main
    from minigpt.data import MissingWheelsError

    monkeypatch.setenv("MINIGPT_RESULTS_DIR", str(tmp_path))
    try:
        code = main(["add-specialist", "--profile", "ci", "--seed", "0"])
    except MissingWheelsError as err:
        pytest.skip(f"corpus unavailable: {err}")
    assert code == 0
    rep = json.loads((tmp_path / "ci" / "seed-0" / "add_specialist.json").read_text())
    assert rep["fingerprints_unchanged"] and rep["compat"]["joined"]
    assert "base fingerprint" in rep["compat"]["other_base_refusal"]
    assert set(rep["routing_accuracy"]["scratch"]) == {"code", "medical", "legal", "plays"}
    after = rep["tables"]["after"]
    for way, per in rep["old_domains"].items():  # each verdict follows its interval
        for iv in per.values():
            assert iv["verdict"] == old_domain_verdict(iv) and iv["low"] <= iv["high"]
    assert after["oracle (per sequence)"]["mixed"] <= min(after[f"{d} specialist"]["mixed"] for d in rep["domains"]) + 1e-9
    assert rep["cost"]["prototype"]["router_steps"] == 0 < rep["cost"]["grown"]["router_steps"]
    # as the book runs it: the same joining, without the alternatives' models and rows
    from minigpt.experiment import Experiment
    from minigpt.studies.add_specialist import add_specialist

    book = add_specialist(Experiment("ci", seed=0), out=tmp_path / "book", alternatives=False)
    assert "other_base" not in book and "other base" not in book["tables"]
    assert "monolithic (four domains)" not in book["tables"]["after"] and "monolithic (four domains)" not in book["cost"]
    assert book["old_domains"] == rep["old_domains"] and book["removal"] == rep["removal"]
