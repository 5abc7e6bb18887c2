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
    """Checkpoint names asked for by each study, and by the plan's calls with and without the freeze
    sweep (after the studies: loads only)."""
    out = tmp_path_factory.mktemp("results")
    names = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINIGPT_RESULTS_DIR", str(out))
        exp = Experiment("ci", seed=0)
        for study in (run, break1, freeze_sweep, add_specialist):
            names[study.__name__] = set()
            with pytest.MonkeyPatch.context() as inner:
                _recording(inner, names[study.__name__])
                study(exp, out=out / study.__name__)
    for sweep in (False, True):
        names[f"plan, sweep={sweep}"] = set()
        with pytest.MonkeyPatch.context() as mp:
            _recording(mp, names[f"plan, sweep={sweep}"])
            bases, crowns = book_plan("ci", 0, sweep=sweep)
            for job in [*bases, *crowns]:
                CALLS[job.kind](Experiment("ci", job.seed), job.arg)
    return names


# the book's plan: what the notebooks train (the freeze sweep is read from the committed reference)
BOOK = ("run", "break1", "add_specialist")


@pytest.mark.parametrize("sweep", [False, True], ids=["book", "with the sweep"])
def test_the_plan_trains_every_model_the_studies_load(asked, sweep):
    studies = set().union(*(asked[s] for s in (*BOOK, *(("freeze_sweep",) if sweep else ()))))
    assert studies - asked[f"plan, sweep={sweep}"] == set()


@pytest.mark.parametrize("sweep", [False, True], ids=["book", "with the sweep"])
def test_the_plan_trains_nothing_the_studies_do_not_load(asked, sweep):
    studies = set().union(*(asked[s] for s in (*BOOK, *(("freeze_sweep",) if sweep else ()))))
    assert asked[f"plan, sweep={sweep}"] - studies == set()


def test_prefetch_refuses_zero_workers():
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        prefetch("ci", jobs=0)
