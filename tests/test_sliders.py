"""Sliders and dropdowns that compute (minigpt.notebook.controls, minigpt.live).

The fast tests check the pieces in this process: what a figure's data is, how a control chooses its
first value, one call when headless, a redraw per move when live. The slow ones start a real Jupyter
kernel with live widgets (MINIGPT_HEADLESS=0), run notebooks 3, 4 and 7 at the `ci` profile, then move
every slider and dropdown to another value inside the kernel and check that the data of the figures it
drew changed, for every figure it draws: not merely that a figure was drawn.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from conftest import require_extra  # noqa: E402
from minigpt import notebook  # noqa: E402
from minigpt.notebook import LIVE, Dropdown, Slider, controls, dropdown, figure_data, slider  # noqa: E402

CHAPTERS = Path(__file__).resolve().parent.parent / "chapters"


def _bars(heights, title="a"):
    fig, ax = plt.subplots()
    ax.bar(range(len(heights)), heights)
    ax.set_title(title)
    return fig


def _same(a, b) -> bool:
    """Equal data: ``a`` and ``b`` are one figure's arrays, or lists of them (one per figure)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a.shape == b.shape and bool((a == b).all())


def test_figure_data_sees_the_data_and_not_the_labels():
    a, b, c = _bars([1, 2]), _bars([1, 2], title="another title"), _bars([1, 3])
    assert _same(figure_data(a), figure_data(b)), "a new title alone is not new data"
    assert not _same(figure_data(a), figure_data(c)), "a changed bar is new data"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [2, 3])
    ax.imshow([[0.0, 1.0]])
    assert [d.shape for d in figure_data(fig)] == [(2, 2), (1, 2)]
    plt.close("all")


def test_dropdown_defaults_to_its_value_or_the_first_option_and_refuses_a_stranger():
    assert Dropdown({"one": 1, "two": 2}).default == 1
    assert Dropdown({"one": 1, "two": 2}, value=2).default == 2
    assert Dropdown([0.1, 1.0]).choices == [("0.1", 0.1), ("1.0", 1.0)]
    with pytest.raises(ValueError, match="not among the options"):
        Dropdown({"one": 1}, value=3, description="d").default
    with pytest.raises(ValueError, match="no options"):
        Dropdown({}).default


def test_headless_controls_draw_once_with_the_defaults_and_record_the_figure(monkeypatch):
    monkeypatch.setenv("MINIGPT_HEADLESS", "1")
    calls = []

    def draw(height, kind):
        calls.append((height, kind))
        _bars([height, 1.0])

    controls(draw, height=Slider(2.0, 0.0, 5.0, description="height"), kind=Dropdown({"a": "A", "b": "B"}, value="B"))
    assert calls == [(2.0, "B")]
    entry = LIVE["height · kind"]
    assert entry.widgets == {} and entry.calls == 1 and entry.error is None
    assert len(entry.drawn) == 1 and entry.drawn[0][0][3] == 2.0  # the first bar's height
    plt.close("all")


def test_a_failing_draw_is_recorded_and_raised(monkeypatch):
    monkeypatch.setenv("MINIGPT_HEADLESS", "1")

    def broken(x):
        raise RuntimeError("no data")

    with pytest.raises(RuntimeError):
        slider(broken, value=1, min=0, max=2, description="broken")
    assert LIVE["broken"].error == "RuntimeError: no data"


def test_live_controls_redraw_when_a_widget_moves(monkeypatch):
    require_extra("ipywidgets")
    monkeypatch.setenv("MINIGPT_HEADLESS", "0")
    monkeypatch.setattr(notebook, "running_headless", lambda: False)
    monkeypatch.setattr("IPython.display.display", lambda *a, **k: None)
    dropdown(lambda n: _bars([n, 1.0]), {"two": 2.0, "three": 3.0}, description="bars")
    entry = LIVE["bars"]
    first = entry.drawn
    assert entry.calls == 1 and set(entry.widgets) == {"n"}
    entry.widgets["n"].value = 3.0
    assert entry.calls == 2 and not _same(first, entry.drawn)
    plt.close("all")


# -- the notebooks, in a real kernel with live widgets --------------------------------------------------
# Kernel-side: move every registered widget to another value, one at a time, and report what changed.
MOVE_EVERY_WIDGET = r'''
import json, math
import ipywidgets as _w
import numpy as _np
from minigpt.notebook import LIVE as _LIVE

def _unchanged(a, b):
    """The figures (by position) whose data is the same before and after; none when their number changed."""
    if len(a) != len(b):
        return []
    return [i for i, (fa, fb) in enumerate(zip(a, b)) if len(fa) == len(fb) and all(
        x.shape == y.shape and _np.allclose(x, y, equal_nan=True) for x, y in zip(fa, fb))]

def _other(w):
    if isinstance(w, _w.Dropdown):
        return next(v for v in (o[1] if isinstance(o, tuple) else o for o in w.options) if v != w.value)
    if isinstance(w, _w.FloatLogSlider):  # min and max are exponents: go to the farther end
        now = math.log10(w.value)
        return 10 ** (w.min if now - w.min > w.max - now else w.max)
    return w.min if w.value != w.min else w.max

_report = {}
for _name, _c in _LIVE.items():
    for _param, _widget in _c.widgets.items():
        _before, _calls, _old = _c.drawn, _c.calls, _widget.value
        _widget.value = _other(_widget)
        _report[f"{_name}: {_param}"] = {"from": repr(_old), "to": repr(_widget.value), "error": _c.error,
                                         "redrawn": _c.calls > _calls, "figures": len(_c.drawn),
                                         "unchanged": _unchanged(_before, _c.drawn), "seconds": round(_c.seconds, 2)}
print("MOVED " + json.dumps(_report))
'''

EXPECTED = {"03_router": ["target temperature: temp"],
            "04_soft_fusion": ["hybrid window: i"],
            "07_break2_router_collapse": ["code share of router data · target temperature: code_share",
                                          "code share of router data · target temperature: temp",
                                          "curve point: name"]}


def run_with_live_widgets(name: str, monkeypatch) -> dict:
    """Execute chapter ``name`` in a fresh kernel with live widgets, then move every widget; the report."""
    nbformat, nbclient = require_extra("nbformat"), require_extra("nbclient")
    monkeypatch.setenv("MINIGPT_HEADLESS", "0")  # the kernel inherits it: live widgets despite pytest
    monkeypatch.setenv("MINIGPT_PROFILE", "ci")
    nb = nbformat.read(CHAPTERS / f"{name}.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(MOVE_EVERY_WIDGET))
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(CHAPTERS)}})
    client.execute()
    out = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    line = next((ln for ln in out.splitlines() if ln.startswith("MOVED ")), None)
    assert line is not None, f"{name}: the kernel printed no report: {out[-2000:]!r}"
    return json.loads(line.removeprefix("MOVED "))


@pytest.mark.slow
@pytest.mark.xdist_group("train")
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_control_recomputes_what_it_draws(name, monkeypatch):
    report = run_with_live_widgets(name, monkeypatch)
    assert sorted(report) == sorted(EXPECTED[name]), f"{name}: controls found: {sorted(report)}"
    for control, r in report.items():
        assert r["error"] is None, f"{name}, {control}: the redraw raised {r['error']}"
        assert r["redrawn"] and r["figures"] >= 1, f"{name}, {control}: moving it from {r['from']} to {r['to']} drew nothing"
        assert not r["unchanged"], (f"{name}, {control}: moving it from {r['from']} to {r['to']} left the data of "
                                    f"figure(s) {r['unchanged']} unchanged: every figure it draws must follow it")


def test_the_live_router_is_the_profile_router_and_leaves_the_cache_alone(mini_experiment):
    from minigpt.live import eval_subset, live_router, retrain_router

    exp = mini_experiment()
    cached = exp.router("per_token")  # trained on the pool and cached
    entries = lambda: sorted(p.name for p in (exp.router_path(["x"]).parent.parent).rglob("*"))  # noqa: E731
    before = entries()
    live = retrain_router(exp, exp.profile.router)
    for a, b in zip(cached.state_dict().values(), live.state_dict().values()):
        assert torch.equal(a, b), "the same pool and seeds must give the profile's router"
    r = live_router(exp, exp.profile.router, healthy_accuracy={d: 1.0 for d in exp.eval_sets}, per_domain=2)
    assert entries() == before, "a slider's router and scores must not be cached"
    assert all(w.shape[0] == min(2, exp.eval_sets[d][0].shape[0]) for d, w in r.weights.items())
    assert r.largest_routing_drop_pp >= 0 and 0 <= r.dominant_weight_elsewhere <= 1 and 0 < r.target_sharpness <= 1
    assert set(eval_subset(exp.eval_sets, 1)) == set(exp.eval_sets)


def test_code_mix_puts_the_share_on_code_and_splits_the_rest():
    from minigpt.live import code_mix

    assert code_mix(0.9) == pytest.approx((0.9, 0.05, 0.05)) and sum(code_mix(0.5)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        code_mix(1.0)
