"""The book's prefetch plan trains exactly the language models the chapter's run and the studies load:
none missing (a notebook would then train it alone, on one core) and none extra (wasted minutes).
Both sides are recorded from the calls themselves (every model goes through Experiment.checkpoint),
so a study that starts using a new model fails this test until the plan names it."""
from __future__ import annotations

import pytest

from minigpt.chapter import run
from minigpt.experiment import Experiment
from minigpt.studies.add_specialist import add_specialist
from minigpt.studies.break1 import break1
from minigpt.studies.freeze_sweep import freeze_sweep
from minigpt.studies.prefetch import CALLS, book_plan, prefetch

pytestmark = [pytest.mark.xdist_group("train"), pytest.mark.slow]


def _recording(monkeypatch, paths: set) -> None:
    original = Experiment.checkpoint

    def spy(self, kind, key_parts, *args, **kwargs):
        paths.add(self.checkpoint_path(kind, key_parts).name)
        return original(self, kind, key_parts, *args, **kwargs)

    monkeypatch.setattr(Experiment, "checkpoint", spy)


@pytest.fixture(scope="module")
def asked(ci_experiment, tmp_path_factory) -> dict[str, set]:
    """Checkpoint names asked for by the studies, and by the plan's calls (after the studies: loads only)."""
    out = tmp_path_factory.mktemp("results")
    studies, plan = set(), set()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINIGPT_RESULTS_DIR", str(out))
        _recording(mp, studies)
        exp = Experiment("ci", seed=0)
        for study in (run, break1, freeze_sweep, add_specialist):
            study(exp, out=out / study.__name__)
    with pytest.MonkeyPatch.context() as mp:
        _recording(mp, plan)
        bases, crowns = book_plan("ci", 0)
        for job in [*bases, *crowns]:
            CALLS[job.kind](Experiment("ci", job.seed), job.arg)
    return {"studies": studies, "plan": plan}


def test_the_plan_trains_every_model_the_studies_load(asked):
    assert asked["studies"] - asked["plan"] == set()


def test_the_plan_trains_nothing_the_studies_do_not_load(asked):
    assert asked["plan"] - asked["studies"] == set()


def test_prefetch_refuses_zero_workers():
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        prefetch("ci", jobs=0)
