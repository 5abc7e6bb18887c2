"""The book's prefetch plan trains exactly the language models the chapter's run and the studies load:
none missing (a notebook would then train it alone, on one core) and none extra (wasted minutes).
Both sides are recorded from the calls themselves (every model goes through Experiment.checkpoint),
so a study that starts using a new model fails this test until the plan names it."""
from __future__ import annotations

from functools import partial

import pytest

from minigpt.chapter import run
from minigpt.experiment import Experiment
from minigpt.studies.add_specialist import add_specialist
from minigpt.studies.break1 import break1
from minigpt.studies.freeze_sweep import freeze_sweep
from minigpt.studies.prefetch import CALLS, book_plan, prefetch

pytestmark = [pytest.mark.xdist_group("train"), pytest.mark.slow]

STUDIES = {"run": run, "break1": break1, "freeze_sweep": freeze_sweep, "add_specialist": add_specialist,
           "break1 as the book runs it": partial(break1, tokenizer_case=False),
           "add_specialist as the book runs it": partial(add_specialist, alternatives=False)}


def _recording(monkeypatch, paths: set) -> None:
    original = Experiment.checkpoint

    def spy(self, kind, key_parts, *args, **kwargs):
        paths.add(self.checkpoint_path(kind, key_parts).name)
        return original(self, kind, key_parts, *args, **kwargs)

    monkeypatch.setattr(Experiment, "checkpoint", spy)


@pytest.fixture(scope="module")
def asked(ci_experiment, tmp_path_factory) -> dict[str, set]:
    """Checkpoint names asked for by each study (whole, and as the book runs it), and by the plan's calls
    for the book and for everything (after the studies: loads only)."""
    out = tmp_path_factory.mktemp("results")
    names = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINIGPT_RESULTS_DIR", str(out))
        exp = Experiment("ci", seed=0)
        for name, study in STUDIES.items():
            names[name] = set()
            with pytest.MonkeyPatch.context() as inner:
                _recording(inner, names[name])
                study(exp, out=out / name)
    for everything in (False, True):
        names[f"plan, everything={everything}"] = set()
        with pytest.MonkeyPatch.context() as mp:
            _recording(mp, names[f"plan, everything={everything}"])
            bases, crowns = book_plan("ci", 0, everything=everything)
            for job in [*bases, *crowns]:
                CALLS[job.kind](Experiment("ci", job.seed), job.arg)
    return names


# what the book asks for (the rest it reads from the committed reference), and everything
RUNS = {False: ("run", "break1 as the book runs it", "add_specialist as the book runs it"),
        True: ("run", "break1", "freeze_sweep", "add_specialist")}


@pytest.mark.parametrize("everything", [False, True], ids=["book", "everything"])
def test_the_plan_trains_every_model_the_studies_load(asked, everything):
    studies = set().union(*(asked[s] for s in RUNS[everything]))
    assert studies - asked[f"plan, everything={everything}"] == set()


@pytest.mark.parametrize("everything", [False, True], ids=["book", "everything"])
def test_the_plan_trains_nothing_the_studies_do_not_load(asked, everything):
    studies = set().union(*(asked[s] for s in RUNS[everything]))
    assert asked[f"plan, everything={everything}"] - studies == set()


def test_prefetch_refuses_zero_workers():
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        prefetch("ci", jobs=0)
