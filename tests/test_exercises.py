"""The reader's exercises (``minigpt.exercises``, notebooks 2-7 and 9).

On real ``ci`` data every check fails on the notebook's stub and on a planted wrong answer, and
passes on the answer key's solution, printing exactly one line each time. And the notebooks are
wired up: each exercise cell has one solution in the answer keys and its check right after it,
which is what ``tools/solved.py`` relies on to build the notebooks ``make test`` executes.
"""
from __future__ import annotations

import ast
import copy
import importlib.util
from pathlib import Path

import jupytext
import nbformat
import pytest
import torch

from minigpt.checkpoint import model_fingerprint
from minigpt.exercises import CHECKS
from minigpt.router import performance_targets, router_loss

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
ANSWERS = CHAPTERS / "answers"

_spec = importlib.util.spec_from_file_location("solved_tool", ROOT / "tools" / "solved.py")
solved = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(solved)


def _tagged(paths: list[Path], tag: str) -> list[tuple[Path, int, object]]:
    """(source file, cell index, cell) of every cell tagged ``tag`` in the py:percent ``paths``."""
    return [(p, i, c) for p in paths for i, c in enumerate(jupytext.read(p).cells) if tag in solved.tags(c)]


CHAPTER_SOURCES = sorted(CHAPTERS.glob("*.py"))
ANSWER_SOURCES = sorted(ANSWERS.glob("*.py"))
EXERCISES = {c.metadata.get("exercise"): (p, i, c) for p, i, c in _tagged(CHAPTER_SOURCES, solved.EXERCISE)}


def _function(source: str, name: str):
    """The function ``my_<name>`` that a cell's ``source`` defines, executed in a fresh namespace."""
    namespace: dict = {}
    exec(compile(source, f"<{name} cell>", "exec"), namespace)  # noqa: S102 - the repository's own cells
    return namespace[f"my_{name}"]


def stub(name: str):
    return _function(EXERCISES[name][2].source, name)


def solution(name: str):
    (path, _, cell), = [t for t in _tagged(ANSWER_SOURCES, solved.SOLUTION) if t[2].metadata.get("exercise") == name]
    return _function(cell.source, name)


# -- planted wrong answers: the mistakes a reader is likely to make --------------------------------
def crown_of_the_first(specialists, k):  # no averaging at all
    return {n: p.detach().clone() for n, p in specialists[0].crown_parameters(k).items()}


def crown_and_trunk(specialists, k):  # every parameter, not only the crown
    params = [dict(m.named_parameters()) for m in specialists]
    return {n: torch.stack([p[n].detach() for p in params]).mean(0) for n in params[0]}


def targets_without_temperature(losses, temp):
    return torch.softmax(-losses, dim=-1)


def targets_with_the_sign_flipped(losses, temp):  # more weight on the worst specialist
    return torch.softmax(losses / temp, dim=-1)


def _loop(router, pool, cfg, gen, *, targets=performance_targets, step=True):
    opt = torch.optim.Adam(router.parameters(), lr=cfg.lr)
    history = []
    for _ in range(cfg.steps):
        h, losses, _ = pool.batch(cfg.batch_size, gen, cfg.domain_mix)
        loss = router_loss(router(h), targets(losses, cfg.temp))
        opt.zero_grad()
        loss.backward()
        if step:
            opt.step()
        history.append(float(loss.detach()))
    return history


def router_without_temperature(router, pool, cfg, gen):
    return _loop(router, pool, cfg, gen, targets=targets_without_temperature)


def router_with_the_sign_flipped(router, pool, cfg, gen):
    return _loop(router, pool, cfg, gen, targets=targets_with_the_sign_flipped)


def router_without_optimiser_step(router, pool, cfg, gen):
    return _loop(router, pool, cfg, gen, step=False)


def router_on_other_batches(router, pool, cfg, gen):  # right loop, its own generator: passes on tolerance
    return _loop(router, pool, cfg, torch.Generator().manual_seed(12345))


def _broadcast(w, logits):
    while w.dim() < logits.dim():
        w = w.unsqueeze(-1)
    return w


def fusion_with_weights_transposed(weights, logits):  # the specialists' weights in reverse order
    return (_broadcast(weights.movedim(-1, 0).flip(0), logits) * logits).sum(0)


def fusion_of_probabilities(weights, logits):  # the mixture rule, not logit fusion
    return (_broadcast(weights.movedim(-1, 0), logits) * logits.softmax(-1)).sum(0).log()


def fusion_for_per_token_weights_only(weights, logits):  # fails (raises) on the last-token router's (B, N)
    return torch.einsum("btn,nbtv->btv", weights, logits)


def oracle_choosing_the_worst(spec_nll, fused_nll):  # the wrong window's specialist
    choice = spec_nll.mean(-1).argmax(0)
    oracle = spec_nll[choice, torch.arange(spec_nll.shape[1])]
    return choice, oracle, float(fused_nll.mean() - oracle.mean())


def oracle_gap_with_the_sign_flipped(spec_nll, fused_nll):
    choice = spec_nll.mean(-1).argmin(0)
    oracle = spec_nll[choice, torch.arange(spec_nll.shape[1])]
    return choice, oracle, float(oracle.mean() - fused_nll.mean())


def oracle_per_token(spec_nll, fused_nll):  # the per-token oracle's losses, not the per-window one's
    return spec_nll.mean(-1).argmin(0), spec_nll.min(0).values, float(fused_nll.mean() - spec_nll.min(0).values.mean())


def compatible_always(specialists, k):  # checks nothing
    return True


def compatible_by_tokenizer_only(specialists, k):  # a shared tokenizer is not a shared base
    return len({m.manifest["tokenizer_fingerprint"] for m in specialists}) == 1


def compatible_by_fingerprints_only(specialists, k):  # misses a trunk trained after the fact
    return all(len({m.manifest[key] for m in specialists}) == 1 for key in ("tokenizer_fingerprint", "base_fingerprint"))


def accuracy_against_the_first_expert(weights):  # every domain scored against expert 0
    acc = {d: float((w.argmax(-1) == 0).double().mean()) for d, w in weights.items()}
    return acc, 0, 0.0


def weight_on_all_domains(weights):  # the dominant expert's own domain counted as "elsewhere"
    from minigpt.config import DOMAINS
    acc = {d: float((w.argmax(-1) == DOMAINS.index(d)).double().mean()) for d, w in weights.items()}
    mean = torch.stack([w.reshape(-1, w.shape[-1]).double().mean(0) for w in weights.values()])
    dom = int(mean.mean(0).argmax())
    return acc, dom, float(mean[:, dom].mean())


def grown_without_the_new_bias(old, new_row, new_bias, shared_h):
    from minigpt.studies.add_specialist.growth import summaries
    s = summaries(old, shared_h)
    return torch.softmax(torch.cat([old.proj(s), (s @ new_row).unsqueeze(-1)], -1), -1)


def grown_on_raw_states(old, new_row, new_bias, shared_h):  # the new row reads h, not the rows' summary
    from minigpt.studies.add_specialist.growth import summaries
    s = summaries(old, shared_h)
    return torch.softmax(torch.cat([old.proj(s), (shared_h @ new_row + new_bias).unsqueeze(-1)], -1), -1)


WRONG = {
    "compatible": [compatible_always, compatible_by_tokenizer_only, compatible_by_fingerprints_only],
    "collapse_signs": [accuracy_against_the_first_expert, weight_on_all_domains],
    "grow_router": [grown_without_the_new_bias, grown_on_raw_states],
    "average_crowns": [crown_of_the_first, crown_and_trunk],
    "performance_targets": [targets_without_temperature, targets_with_the_sign_flipped],
    "train_router": [router_without_temperature, router_with_the_sign_flipped, router_without_optimiser_step],
    "fuse_logits": [fusion_with_weights_transposed, fusion_of_probabilities, fusion_for_per_token_weights_only],
    "oracle_gap": [oracle_choosing_the_worst, oracle_gap_with_the_sign_flipped, oracle_per_token],
}


def _one_line(capsys) -> str:
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, f"a check prints exactly one line, this one printed {lines}"
    return lines[0]


# -- the checks, on real ci data -------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.xdist_group("train")
@pytest.mark.parametrize("name", list(CHECKS))
def test_the_stub_is_reported_as_not_written(name, ci_experiment, capsys):
    assert CHECKS[name](stub(name), ci_experiment) is False
    line = _one_line(capsys)
    assert line.startswith(f"… {name}: not written yet — hint: "), line


@pytest.mark.slow
@pytest.mark.xdist_group("train")
@pytest.mark.parametrize("name, wrong", [(n, w) for n, ws in WRONG.items() for w in ws],
                         ids=[f"{n}-{w.__name__}" for n, ws in WRONG.items() for w in ws])
def test_a_wrong_answer_fails(name, wrong, ci_experiment, capsys):
    assert CHECKS[name](wrong, ci_experiment) is False
    assert _one_line(capsys).startswith(f"✗ {name}: "), wrong.__name__


@pytest.mark.slow
@pytest.mark.xdist_group("train")
@pytest.mark.parametrize("name", list(CHECKS))
def test_the_answer_keys_solution_passes(name, ci_experiment, capsys):
    assert CHECKS[name](solution(name), ci_experiment) is True
    assert _one_line(capsys).startswith(f"✓ {name}: matches the package ("), name


@pytest.mark.slow
@pytest.mark.xdist_group("train")
def test_a_router_loop_on_other_batches_passes_on_tolerance(ci_experiment, capsys):
    assert CHECKS["train_router"](router_on_other_batches, ci_experiment) is True
    assert "your batches differ from the package's" in _one_line(capsys)


@pytest.mark.slow
@pytest.mark.xdist_group("train")
@pytest.mark.parametrize("name", list(CHECKS))
def test_a_check_never_raises_on_the_readers_mistakes(name, ci_experiment, capsys):
    def raises(*args):
        raise ValueError("a bug in the reader's code")

    assert CHECKS[name](raises, ci_experiment) is False
    line = _one_line(capsys)
    assert line.startswith(f"✗ {name}: your function raised ValueError: a bug in the reader's code (in raises"), line
    assert CHECKS[name](lambda *args: None, ci_experiment) is False  # returns nothing useful
    assert _one_line(capsys).startswith(f"✗ {name}: ")


# -- the notebooks are wired up ------------------------------------------------------------------
def _defined(source: str) -> set[str]:
    return {n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}


def test_every_check_has_one_exercise_cell_in_the_chapters():
    cells = _tagged(CHAPTER_SOURCES, solved.EXERCISE)
    names = [c.metadata.get("exercise") for _, _, c in cells]
    assert sorted(names) == sorted(CHECKS), f"exercise cells {names} against checks {sorted(CHECKS)}"
    assert not _tagged(ANSWER_SOURCES, solved.EXERCISE), "exercise cells belong in the chapters, not the answer keys"


@pytest.mark.parametrize("name", list(CHECKS))
def test_an_exercise_has_its_check_next_and_one_solution(name):
    path, i, cell = EXERCISES[name]
    cells = jupytext.read(path).cells
    assert i + 1 < len(cells) and solved.CHECK in solved.tags(cells[i + 1]), f"{path.name}: no check cell after {name}"
    assert cells[i + 1].source.strip() == solved.check_source(name), f"{path.name}: the check cell of {name}"
    sols = [c for _, _, c in _tagged(ANSWER_SOURCES, solved.SOLUTION) if c.metadata.get("exercise") == name]
    assert len(sols) == 1, f"{len(sols)} solution cells for {name} in the answer keys; keep exactly one"
    assert _defined(cell.source) == _defined(sols[0].source) == {f"my_{name}"}, name
    assert 'raise NotImplementedError("hint: ' in cell.source, f"{name}'s stub must raise NotImplementedError('hint: ...')"


@pytest.mark.parametrize("name", list(CHECKS))
def test_the_ipynb_keeps_the_exercise_metadata(name):
    path, i, _ = EXERCISES[name]
    cell = nbformat.read(path.with_suffix(".ipynb"), as_version=4).cells[i]
    assert cell.metadata.get("exercise") == name and solved.EXERCISE in solved.tags(cell), path.name


def test_solved_copies_put_each_solution_after_its_stub():
    nb = nbformat.read(EXERCISES["fuse_logits"][0].with_suffix(".ipynb"), as_version=4)
    i = EXERCISES["fuse_logits"][1]
    sols = solved.solutions(sorted(ANSWERS.glob("*.ipynb")))
    for book, tags in ((False, ["solution"]), (True, ["solution", "hide-input"])):
        cells = solved.solve(copy.deepcopy(nb), sols, book=book).cells
        assert [solved.tags(c) for c in cells[i:i + 4]] == [["exercise"], tags, ["check"], ["remove-cell"]]
        assert cells[i + 1].source == sols["fuse_logits"] and cells[i + 3].source.startswith("assert passed")
    with pytest.raises(ValueError, match="has no cell tagged solution"):
        solved.solve(copy.deepcopy(nb), {}, book=False)


@pytest.mark.slow
@pytest.mark.xdist_group("train")
def test_a_reader_writing_into_its_inputs_changes_nothing_else(ci_experiment, capsys):
    before = [model_fingerprint(m) for m in ci_experiment.specialists()]

    def zero_everything(specialists, k):
        for m in specialists:
            for p in m.parameters():
                p.data.zero_()
        return {}

    assert CHECKS["average_crowns"](zero_everything, ci_experiment) is False
    assert [model_fingerprint(m) for m in ci_experiment.specialists()] == before
    assert CHECKS["average_crowns"](solution("average_crowns"), ci_experiment) is True
    capsys.readouterr()


@pytest.mark.slow
@pytest.mark.xdist_group("train")
def test_a_nan_gap_fails(ci_experiment, capsys):
    right = solution("oracle_gap")
    assert CHECKS["oracle_gap"](lambda s, f: (*right(s, f)[:2], float("nan")), ci_experiment) is False
    assert _one_line(capsys).startswith("✗ oracle_gap: choices and token losses match, but your gap")
