"""What the book reads from the committed reference instead of training it: the freeze sweep, Break 1's
tokenizer case, joining's alternatives. Each is read only when it was measured on the same corpus,
tokenizer and router code, and holds the part asked for; otherwise it is computed here."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from minigpt.studies import add_specialist as join_mod
from minigpt.studies import break1 as break1_mod
from minigpt.studies import common, freeze_sweep

PROVENANCE = {"corpus_fingerprint": "c" * 8, "tokenizer_fingerprint": "t" * 8, "router_code": "r" * 8}


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A fake repository root and results folder, and a run whose provenance is PROVENANCE."""
    monkeypatch.setattr(common, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setattr(freeze_sweep, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setenv("MINIGPT_RESULTS_DIR", str(tmp_path / "results"))
    exp = SimpleNamespace(profile=SimpleNamespace(name="cpu"), seed=0, provenance=lambda: dict(PROVENANCE))
    return SimpleNamespace(exp=exp, reference=tmp_path / "repo" / "results" / "reference" / "cpu" / "seed-0")


def _commit(folder, name: str, report: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(report))


def _refuse_to_run(*_args, **_kwargs):
    raise AssertionError("computed although a matching committed report was there")


def test_committed_with_reads_a_matching_report_that_holds_the_part(repo):
    _commit(repo.reference, "break1", {**PROVENANCE, "tokenizer_mismatch": {"domain": "legal"}})
    assert common.committed_with(repo.exp, "break1", "tokenizer_mismatch")["tokenizer_mismatch"] == {"domain": "legal"}
    assert common.committed_with(repo.exp, "break1", "other_part") is None
    assert common.committed_with(repo.exp, "break2", "tokenizer_mismatch") is None  # nothing committed


def test_committed_with_ignores_a_report_from_another_corpus(repo):
    _commit(repo.reference, "break1", {**PROVENANCE, "corpus_fingerprint": "other", "tokenizer_mismatch": {}})
    assert common.committed_with(repo.exp, "break1", "tokenizer_mismatch") is None


def test_with_tokenizer_case_prefers_the_run_then_the_reference_then_computes(repo, monkeypatch):
    monkeypatch.setattr(break1_mod, "tokenizer_mismatch", lambda exp: {"measured": "here"})
    ran = {"headline": 1, "tokenizer_mismatch": {"measured": "in the run"}}
    assert break1_mod.with_tokenizer_case(repo.exp, ran) == ran
    assert break1_mod.with_tokenizer_case(repo.exp, {"headline": 1}) == {"headline": 1,
                                                                        "tokenizer_mismatch": {"measured": "here"}}
    _commit(repo.reference, "break1", {**PROVENANCE, "tokenizer_mismatch": {"measured": "committed"}})
    monkeypatch.setattr(break1_mod, "tokenizer_mismatch", _refuse_to_run)
    assert break1_mod.with_tokenizer_case(repo.exp, {"headline": 1})["tokenizer_mismatch"] == {"measured": "committed"}


def test_with_alternatives_prefers_the_run_then_the_reference_then_runs_everything(repo, monkeypatch):
    monkeypatch.setattr(join_mod, "add_specialist", lambda exp: {"other_base": "measured here"})
    assert join_mod.with_alternatives(repo.exp, {"other_base": "in the run"}) == {"other_base": "in the run"}
    assert join_mod.with_alternatives(repo.exp, {})["other_base"] == "measured here"
    _commit(repo.reference, "add_specialist", {**PROVENANCE, "other_base": "committed"})
    monkeypatch.setattr(join_mod, "add_specialist", _refuse_to_run)
    assert join_mod.with_alternatives(repo.exp, {})["other_base"] == "committed"


def test_saved_or_run_reads_a_matching_sweep_and_trains_otherwise(repo, monkeypatch, capsys):
    monkeypatch.setattr(freeze_sweep, "freeze_sweep", lambda exp: {"trained": True})
    _commit(repo.reference, "freeze_sweep", {**PROVENANCE, "router_code": "older code", "ks": [0, 1, 2]})
    assert freeze_sweep.saved_or_run(repo.exp) == {"trained": True}  # committed with other router code
    assert "training it here" in capsys.readouterr().out
    _commit(repo.reference, "freeze_sweep", {**PROVENANCE, "ks": [0, 1, 2]})
    monkeypatch.setattr(freeze_sweep, "freeze_sweep", _refuse_to_run)
    assert freeze_sweep.saved_or_run(repo.exp)["ks"] == [0, 1, 2]
    assert "read from" in capsys.readouterr().out
