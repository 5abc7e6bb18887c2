"""Remembered scores (minigpt.score_cache): read back only for the same content, bit for bit.

Each test counts how often the scoring loop itself runs (``scoring._score`` and friends), so a
cache that returned old numbers for changed inputs, or never stored anything, fails here.
"""
from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn as nn

import minigpt.scoring as scoring
from minigpt import score_cache
from minigpt.config import GPTConfig
from minigpt.fusion import FusedModel
from minigpt.model import GPT
from minigpt.router import CausalRouter
from minigpt.scoring import ScoreRequest, model_nll, per_window_losses, score

CFG = GPTConfig(vocab_size=37, block_size=16, n_layer=3, n_head=2, n_embd=16)
K = 1


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MINIGPT_SCORE_CACHE", raising=False)


@pytest.fixture
def runs(monkeypatch):
    """How many times each scoring loop really ran."""
    counts = {"score": 0, "model_nll": 0, "window_losses": 0}
    for name, key in (("_score", "score"), ("_model_nll", "model_nll"), ("_per_window_losses", "window_losses")):
        real = getattr(scoring, name)

        def counted(*a, _real=real, _key=key, **kw):
            counts[_key] += 1
            return _real(*a, **kw)
        monkeypatch.setattr(scoring, name, counted)
    return counts


def _specialists() -> list[GPT]:
    torch.manual_seed(0)
    base = GPT(CFG)
    specs = []
    for i in range(3):
        m = GPT(CFG)
        m.load_state_dict(base.state_dict())
        with torch.no_grad():
            for p in m.transformer.h[K:].parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
        m.manifest = {"domain": f"d{i}", "train_losses": [4.2, 3.9], "config": {"n_layer": 3}}  # as loaded models carry
        specs.append(m)
    return specs


def _windows(seed: int = 1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {d: (torch.randint(0, CFG.vocab_size, (3, CFG.block_size), generator=gen),
                torch.randint(0, CFG.vocab_size, (3, CFG.block_size), generator=gen)) for d in ("code", "legal")}


def _score(specs, router, sets=None) -> scoring.Scores:
    return score(ScoreRequest(windows=sets or _windows(), experts=FusedModel(specs, K), routers={"r": router},
                              batch_size=2, calibration=True))


def _equal(a: scoring.Scores, b: scoring.Scores) -> bool:
    trees = (score_cache._flatten(a.tree()), score_cache._flatten(b.tree()))
    return [p for p, _ in trees[0]] == [p for p, _ in trees[1]] and all(
        (x is None and y is None) or (torch.equal(x, y) and x.dtype == y.dtype) for (_, x), (_, y) in zip(*trees))


def test_a_repeated_call_is_read_back_bit_for_bit(runs):
    specs, router = _specialists(), CausalRouter(CFG.n_embd, 3)
    first = _score(specs, router)
    again = _score(_specialists(), CausalRouter(CFG.n_embd, 3))  # new objects, same content
    assert runs["score"] == 1
    assert _equal(first, again)
    assert list(again.nll) == list(first.nll) and list(again.stats) == list(first.stats)  # row order kept


def test_a_call_without_routers_is_read_back_with_its_rows(runs):
    """Its tree holds an empty mapping (no router gave one weight per sequence); it must come back, or the
    read-back loses the rows' description."""
    def plain():
        return score(ScoreRequest(windows=_windows(), experts=FusedModel(_specialists(), K), batch_size=2))
    first, again = plain(), plain()
    assert runs["score"] == 1 and _equal(first, again) and again.rows == first.rows


def test_empty_mappings_survive_storage_and_old_entries_still_load(tmp_path):
    tree = {"nll": {"a": {"code": torch.ones(2)}}, "whole_window": {}, "stats": {}}
    score_cache.save_tree(tree, tmp_path / "new")
    back = score_cache.load_tree(tmp_path / "new")
    assert back["whole_window"] == {} and back["stats"] == {} and torch.equal(back["nll"]["a"]["code"], torch.ones(2))
    (tmp_path / "new" / "index.json").write_text('[["nll", "a", "code"]]')  # the format before empties were kept
    assert torch.equal(score_cache.load_tree(tmp_path / "new")["nll"]["a"]["code"], torch.ones(2))


@pytest.mark.parametrize("change", ["router weight", "router setting", "expert weight", "one token", "batch size"])
def test_any_change_in_what_is_scored_scores_again(runs, change):
    specs, router, sets, batch = _specialists(), CausalRouter(CFG.n_embd, 3), _windows(), 2
    first = score(ScoreRequest(windows=sets, experts=FusedModel(specs, K), routers={"r": router}, batch_size=batch))
    with torch.no_grad():
        if change == "router weight":
            router.proj.bias[0] += 1.0
        elif change == "router setting":
            router.decay = 0.5
        elif change == "expert weight":
            specs[2].transformer.h[K].mlp.c_fc.weight[0, 0] += 1.0
        elif change == "one token":
            sets["legal"][0][1, 3] = (sets["legal"][0][1, 3] + 1) % CFG.vocab_size
        else:
            batch = 3
    second = score(ScoreRequest(windows=sets, experts=FusedModel(specs, K), routers={"r": router}, batch_size=batch))
    assert runs["score"] == 2
    if change != "batch size":  # the same numbers in another batch shape may agree; the rest must not
        assert not _equal(first, second)


def test_model_nll_and_window_losses_are_remembered_too(runs):
    specs, sets = _specialists(), _windows()
    a, b = model_nll(specs[0], sets, 2), model_nll(specs[0], sets, 2)
    assert runs["model_nll"] == 1 and all(torch.equal(a[d], b[d]) for d in a)
    x, y = sets["code"]
    first = per_window_losses(FusedModel(specs, K), x, y, 2)
    assert torch.equal(first, per_window_losses(FusedModel(_specialists(), K), x, y, 2))
    assert runs["window_losses"] == 1
    per_window_losses(FusedModel(specs, K), x, y.flip(0), 2)
    assert runs["window_losses"] == 2


class _WithHiddenState(nn.Module):
    """A router whose output depends on a tensor that is neither a parameter nor a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(CFG.n_embd, 3)
        self.offset = torch.zeros(3)

    def forward(self, h):
        return torch.softmax(self.proj(h) + self.offset, -1)


def test_state_the_key_cannot_see_is_scored_every_time(runs):
    specs, router = _specialists(), _WithHiddenState()
    first = _score(specs, router)
    router.offset = torch.tensor([5.0, 0.0, 0.0])
    second = _score(specs, router)
    assert runs["score"] == 2
    assert not _equal(first, second)


def test_turned_off_by_the_environment(runs, monkeypatch):
    monkeypatch.setenv("MINIGPT_SCORE_CACHE", "0")
    specs, router = _specialists(), CausalRouter(CFG.n_embd, 3)
    _score(specs, router), _score(specs, router)
    assert runs["score"] == 2


def test_not_remembered_inside_the_block_only(runs):
    specs, router = _specialists(), CausalRouter(CFG.n_embd, 3)
    with score_cache.not_remembered():
        _score(specs, router)
        _score(specs, router)
    assert runs["score"] == 2 and not (score_cache.cache_root() / score_cache.FOLDER).exists()
    _score(specs, router), _score(specs, router)
    assert runs["score"] == 3


def test_editing_the_scoring_code_changes_the_key(tmp_path, monkeypatch):
    src = tmp_path / "fake_scorer.py"
    src.write_text("def compute():\n    return {}\n")
    mod = types.ModuleType("fake_scorer")
    mod.__file__ = str(src)
    monkeypatch.setitem(sys.modules, "fake_scorer", mod)

    def compute():
        return {}
    compute.__module__ = "fake_scorer"
    reads = {"windows": _windows()}
    before = score_cache.score_key("t", reads, compute)
    assert score_cache.score_key("t", reads, compute) == before
    src.write_text("def compute():\n    return {'changed': 1}\n")
    assert score_cache.score_key("t", reads, compute) != before


def test_a_damaged_entry_is_scored_again(runs):
    specs, router = _specialists(), CausalRouter(CFG.n_embd, 3)
    first = _score(specs, router)
    stored = next((score_cache.cache_root() / score_cache.FOLDER).glob("score-*/tensors.safetensors"))
    stored.write_bytes(stored.read_bytes()[:-8])
    with pytest.warns(UserWarning, match="damaged"):
        again = _score(specs, router)
    assert runs["score"] == 2 and _equal(first, again)


@pytest.mark.slow
def test_the_chapter_table_is_scored_once_across_experiments(mini_experiment, runs):
    # the real objects (loaded checkpoints with their manifests, trained routers, the weight average,
    # the monolithic model) must be keyable, or every notebook would silently score again
    from minigpt.chapter import chapter_table

    first = chapter_table(mini_experiment())
    scored = runs["score"]
    again = chapter_table(mini_experiment())  # a new Experiment: models and routers loaded from disk
    assert scored >= 1 and runs["score"] == scored, "chapter_table scored again: something it reads has state the key cannot see"
    assert again["table"].equals(first["table"])
    assert all(torch.equal(first["nll"][r][d], again["nll"][r][d]) for r in first["nll"] for d in first["nll"][r])


def test_nothing_is_keyed_on_the_meta_device(monkeypatch):
    # the device-leak test runs the scoring code on `meta` with real weights: shapes only, never stored
    monkeypatch.setenv("MINIGPT_DEVICE", "meta")
    with pytest.raises(score_cache.Unkeyable):
        score_cache.score_key("score", {"windows": _windows()}, _score)
