"""What every chapter notebook needs around the science: the set-up banner, where we are running,
the package's own source shown in place, markdown, and sliders and dropdowns that redraw (one static
run when nobody can move them).

Measurements live in the module of their concept (:mod:`minigpt.analysis`, :mod:`minigpt.studies`),
so the reader's notebooks and the instructor's answer key compute the same numbers the same way.
"""
from __future__ import annotations

import functools
import inspect
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from .cache import cache_root
from .config import automated_run, env, get_profile
from .device import resolve
from .experiment import Experiment
from .flops import CHAPTER, estimate_minutes

HEADLESS_ENV = "MINIGPT_HEADLESS"
THREADS_ENV = "MINIGPT_NUM_THREADS"


# -- where are we running ------------------------------------------------------------------------
def in_colab() -> bool:
    return "google.colab" in sys.modules


def in_kernel() -> bool:
    """True inside a Jupyter or Colab kernel, False in plain Python or a terminal IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def running_headless() -> bool:
    """True when nobody can move a slider: nbmake/pytest, CI, plain Python.

    ``MINIGPT_HEADLESS=1`` forces it (e.g. for a book build that executes the notebooks);
    ``MINIGPT_HEADLESS=0`` forces live widgets.
    """
    flag = env(HEADLESS_ENV)
    if flag is not None:
        return flag.strip().lower() not in ("0", "false", "no")
    # nbmake starts the kernel from inside a pytest test, so the kernel inherits this variable
    if automated_run():
        return True
    return not in_kernel()


# -- set-up ----------------------------------------------------------------------------------------
# Training some notebooks need on top of the shared models, in minutes on a fresh cache, measured
# with the CLI commands on 2 CPU cores (see README); other profiles print no estimate.
EXTRA_WORK: dict[str, str] = {
    "break1": "Break 1 (one more base, its three specialists and the routers)",
    "break2": "Break 2 (32 routers over two expert sets)",
    "sweep": "the freeze sweep (specialists and a router at the depths beside K)",
    "join": "a fourth crown and three routers",
}
EXTRA_MINUTES: dict[str, dict[str, float]] = {
    # ci: Break 2 measured at 0.7 min for 12 routers, scaled to its 28
    "ci": {"break1": 1.5, "break2": 1.6, "sweep": 0.7, "join": 1.0},
    # cpu: the book from an empty cache (results/reference/runtimes.json): each model's one-thread
    # training time from the prefetch plus the notebook's own time in reading order. Break 1: a base
    # 210 s, three crowns 249 s, notebook 6 122 s; Break 2: notebook 7 91 s; joining: a crown 83 s,
    # notebook 9 75 s; the sweep (read from the reference in the book): six crowns ~515 s and its routers
    "cpu": {"break1": 10, "break2": 2, "sweep": 10, "join": 3},
}


def setup(profile: str | None = None, seed: int = 0, extra: Sequence[str] = (), **overrides) -> Experiment:
    """Print the profile and the expected run time, and return the chapter's :class:`Experiment`.

    Everything the notebook asks the experiment for is loaded from the cache, or trained once
    and cached, so each notebook runs on its own and in any order. ``extra`` names the work beyond
    the shared models that the notebook triggers (keys of :data:`EXTRA_WORK`), so its time is
    announced before the long cell too.
    """
    _check_work(extra)
    exp = Experiment(profile, seed, **overrides)
    p, m = exp.profile, exp.profile.model
    threads = env(THREADS_ENV)
    if threads:
        torch.set_num_threads(int(threads))
    elif running_headless() and p.name == "ci":
        # Headless ci runs share the cores with other test workers; two intra-op threads per
        # process then wait on each other and train the tiny ci model several times slower
        # (measured: 150 base steps 9 s with one thread, 45-63 s with two, on 2 busy cores).
        torch.set_num_threads(1)
    print(f"profile {p.name!r} (change with MINIGPT_PROFILE=ci|cpu|gpu before starting the kernel), seed {seed}, "
          f"{torch.get_num_threads()} torch thread(s)")
    print(f"  model: {m.n_layer} blocks, d={m.n_embd}, {m.n_head} heads, context {m.block_size}, "
          f"vocab {m.vocab_size}; trunk = embeddings + first K={exp.k} blocks")
    print(f"  expected run time on {expected_where()}: {chapter_time(p)} of training on a fresh cache, "
          f"a few seconds once the models are cached in {cache_root()}")
    for work in extra:
        print(f"  plus {_extra_time(p, work)} for {EXTRA_WORK[work]} on a fresh cache")
    if on_gpu() and p.name != "gpu":
        print(f"  the larger `gpu` profile (one line in the install cell): {chapter_time(get_profile('gpu'))}")
    return exp


def _check_work(extra: Sequence[str]) -> None:
    unknown = [w for w in extra if w not in EXTRA_WORK]
    if unknown:
        raise ValueError(f"unknown extra work {unknown}; choose from {', '.join(EXTRA_WORK)}")


# the phases of the counted plan (minigpt.flops.plan) behind each extra piece of work, for GPU estimates
PHASES = {"break1": ("break1",), "break2": ("break2",), "sweep": ("freeze sweep",), "join": ("specialists", "routers")}


def on_gpu() -> bool:
    return resolve().type == "cuda"


def expected_where() -> str:
    return "this GPU" if on_gpu() else "2 CPU cores (measured)"


def _gpu_minutes(p, phases: Sequence[str]) -> str:
    """Counted FLOPs at a T4's throughput (minigpt.flops); below a few minutes the count says little,
    because a small model's steps wait on kernel launches, not arithmetic."""
    est = estimate_minutes(p)
    minutes = sum(est[ph]["T4-class"] for ph in phases)
    if minutes < 3:
        return "a few minutes (small models: kernel launches, not FLOPs, set the pace)"
    return f"~{minutes:.0f} min (estimated from counted FLOPs at a T4's throughput)"


def chapter_time(p) -> str:
    """The chapter's training time for the device it will run on: measured on 2 CPU cores, estimated on a GPU."""
    return _gpu_minutes(p, CHAPTER) if on_gpu() else f"up to ~{p.expected_minutes:g} min"


def _extra_time(p, work: str) -> str:
    if on_gpu():
        return _gpu_minutes(p, PHASES[work])
    minutes = EXTRA_MINUTES.get(p.name, {}).get(work)
    return f"~{minutes:g} min" if minutes else "more training"


def announce(exp: Experiment, work: str) -> None:
    """One line printed by a long cell before it starts: what it trains and how long that takes on a
    fresh cache, on the device it runs on, so the estimate is where the wait is."""
    _check_work([work])
    where = "" if on_gpu() else " on 2 CPU cores"
    print(f"this cell trains {EXTRA_WORK[work]}: {_extra_time(exp.profile, work)}{where} on a fresh cache, "
          "seconds once it is cached")


def source_of(obj: Any, match: str | Sequence[str] | None = None, context: int = 2,
              start: str | None = None, stop: str | None = None) -> str:
    """The package's own source for ``obj``, headed by its file and line numbers.

    ``match`` (a string or several) keeps only the lines containing it, ``context`` lines either
    side; ``start``/``stop`` keep one contiguous stretch, from the first line containing ``start``
    to the next line containing ``stop``. Either way a notebook can point at the few lines it
    discusses inside a longer function.
    """
    obj = inspect.unwrap(obj)  # decorated functions (e.g. torch.no_grad) report the wrapper's file
    lines, first = inspect.getsourcelines(obj)
    path = Path(inspect.getsourcefile(obj) or "?")
    try:
        path = path.relative_to(Path(__file__).resolve().parent.parent)
    except ValueError:
        pass
    keep = list(range(len(lines)))
    if start is not None or stop is not None:
        i0 = next((i for i, line in enumerate(lines) if start is None or start in line), None)
        if i0 is None:
            raise ValueError(f"{start!r} does not occur in the source of {obj!r}")
        i1 = next((i for i in range(i0, len(lines)) if stop is None or stop in lines[i]), None)
        if i1 is None:
            raise ValueError(f"{stop!r} does not occur after {start!r} in the source of {obj!r}")
        keep = list(range(i0, (i1 if stop is not None else len(lines) - 1) + 1))
    if match is not None:
        pats = [match] if isinstance(match, str) else list(match)
        hits = [i for i in keep if any(p in lines[i] for p in pats)]
        if not hits:
            raise ValueError(f"{match!r} does not occur in the source of {obj!r}")
        keep = sorted({j for i in hits for j in range(max(0, i - context), min(len(lines), i + context + 1))})
    body, prev = [], None
    for i in keep:
        if prev is not None and i != prev + 1:
            body.append("...\n")
        body.append(lines[i])
        prev = i
    # dedent by the least-indented kept line, leaving the "..." markers at the left margin
    indents = [len(line) - len(line.lstrip()) for line in body if line.strip() and line != "...\n"]
    cut = min(indents) if indents else 0
    text = "".join(line if line == "...\n" else line[cut:] if line.strip() else "\n" for line in body)
    return f"# {path}, lines {first + keep[0]}-{first + keep[-1]}\n" + text


def show_source(obj: Any, match: str | Sequence[str] | None = None, context: int = 2,
                start: str | None = None, stop: str | None = None) -> None:
    """Show :func:`source_of` ``obj``: highlighted in a notebook, printed elsewhere.

    The chapters display the package's code this way instead of re-typing it, so what the reader
    sees is what ran.
    """
    text = source_of(obj, match, context, start=start, stop=stop)
    if in_kernel():
        from IPython.display import Code, display

        display(Code(text, language="python"))
    else:
        print(text)


def show_markdown(text: str) -> None:
    """Render Markdown in a notebook (answers, checklists); print it anywhere else."""
    if in_kernel():
        from IPython.display import display

        # a plain-text copy too, so saved outputs read well outside a browser
        display({"text/markdown": text, "text/plain": text}, raw=True)
    else:
        print(text)


# -- sliders and dropdowns that redraw ----------------------------------------------------------
@dataclass(frozen=True)
class Slider:
    """A numeric control: ``log=True`` gives a logarithmic slider (``min``/``max`` are values, not exponents)."""

    value: float
    min: float
    max: float
    step: float | None = None
    log: bool = False
    description: str | None = None

    @property
    def default(self) -> float:
        return self.value


@dataclass(frozen=True)
class Dropdown:
    """A choice among named options: ``options`` maps each label the reader sees to the value ``fn`` gets
    (a plain sequence is its own labels); ``value`` is the value first drawn (default: the first option's)."""

    options: Mapping[str, Any] | Sequence[Any]
    value: Any = None
    description: str | None = None

    @property
    def choices(self) -> list[tuple[str, Any]]:
        items = self.options.items() if isinstance(self.options, Mapping) else ((str(o), o) for o in self.options)
        return [(str(label), v) for label, v in items]

    @property
    def default(self) -> Any:
        values = [v for _, v in self.choices]
        if not values:
            raise ValueError(f"dropdown {self.description or ''!r} has no options; pass at least one")
        if self.value is None:
            return values[0]
        if self.value not in values:
            raise ValueError(f"{self.value!r} is not among the options of dropdown {self.description or ''!r}; "
                             "pass one of their values")
        return self.value


@dataclass
class Live:
    """One set of controls, registered by name in :data:`LIVE`: its widgets (none when headless), the data of
    the figures its last call drew (:func:`figure_data`), how long that call took and any error it raised.
    A test (tests/test_sliders.py) moves each widget and checks that the drawn data changed."""

    name: str
    widgets: dict[str, Any] = field(default_factory=dict)
    drawn: list = field(default_factory=list)
    calls: int = 0
    seconds: float = 0.0
    error: str | None = None


LIVE: dict[str, Live] = {}  # every set of controls this kernel has shown, by name


def figure_data(fig) -> list:
    """The data ``fig`` shows, as numpy arrays: every line's points, every bar's rectangle, every image's
    and mesh's values (heatmaps) and every scatter's positions. Titles and labels are left out, so two
    figures differ here only when what they plot differs."""
    import numpy as np

    out = []
    for ax in fig.axes:
        out += [np.asarray(line.get_xydata(), dtype=float) for line in ax.lines]
        out += [np.asarray(p.get_bbox().bounds, dtype=float) for p in ax.patches]
        out += [np.asarray(im.get_array(), dtype=float) for im in ax.images]
        for coll in ax.collections:
            arr = coll.get_array()
            out.append(np.asarray(arr if arr is not None else coll.get_offsets(), dtype=float))
    return out


def _draw(entry: Live, fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Call ``fn(**kwargs)``, record the data of the figures it opened, then show them."""
    import matplotlib.pyplot as plt

    before, t0 = set(plt.get_fignums()), time.perf_counter()
    try:
        fn(**kwargs)
    except Exception as e:  # ipywidgets would only print it; keep it where a test can see it
        entry.error = f"{type(e).__name__}: {e}"
        raise
    entry.error, entry.calls, entry.seconds = None, entry.calls + 1, time.perf_counter() - t0
    entry.drawn = [figure_data(plt.figure(n)) for n in plt.get_fignums() if n not in before]
    plt.show()


def _widget(spec: Slider | Dropdown, label: str):
    import ipywidgets as widgets

    style = {"description_width": "initial"}
    if isinstance(spec, Dropdown):
        return widgets.Dropdown(options=spec.choices, value=spec.default, description=label, style=style)
    lo, hi, step = spec.min, spec.max, spec.step
    if spec.log:
        w = widgets.FloatLogSlider(value=spec.value, base=10, min=math.log10(lo), max=math.log10(hi),
                                   step=step or 0.1, description=label, style=style)
    elif all(float(v).is_integer() for v in (spec.value, lo, hi, step or 1)):
        w = widgets.IntSlider(value=int(spec.value), min=int(lo), max=int(hi), step=int(step or 1),
                              description=label, style=style)
    else:
        w = widgets.FloatSlider(value=spec.value, min=lo, max=hi, step=step or (hi - lo) / 50, description=label,
                                style=style)
    w.continuous_update = False  # redraw on release: each redraw may run a model
    return w


def controls(fn: Callable[..., Any], **specs: Slider | Dropdown) -> None:
    """Live controls for ``fn``'s arguments in Jupyter/Colab, one per keyword (a :class:`Slider` or a
    :class:`Dropdown`); headless, one call with every default. ``fn`` draws its figures and does not show
    them: each call's figures are recorded (:data:`LIVE`) and then shown. Returns nothing, so a cell ending
    in ``controls(...)`` does not display it twice."""
    name = " · ".join(spec.description or p for p, spec in specs.items())
    entry = LIVE[name] = Live(name)

    @functools.wraps(fn)
    def run(**kwargs):
        _draw(entry, fn, kwargs)

    if running_headless():
        run(**{p: spec.default for p, spec in specs.items()})
        return
    import ipywidgets as widgets
    from IPython.display import display

    entry.widgets = {p: _widget(spec, spec.description or p) for p, spec in specs.items()}
    display(widgets.interactive(run, **entry.widgets))


def slider(fn: Callable[[Any], Any], value: float, min: float, max: float, step: float | None = None,
           log: bool = False, description: str | None = None) -> None:
    """A live slider for ``fn``'s single argument in Jupyter/Colab; headless, one call with ``value``.

    ``log=True`` gives a logarithmic slider (``min``/``max`` are values, not exponents). See
    :func:`controls` (``fn`` draws, the slider shows).
    """
    name = next(iter(inspect.signature(fn).parameters))
    controls(fn, **{name: Slider(value, min, max, step=step, log=log, description=description)})


def dropdown(fn: Callable[[Any], Any], options: Mapping[str, Any] | Sequence[Any], value: Any = None,
             description: str | None = None) -> None:
    """A live dropdown for ``fn``'s single argument: ``options`` maps each label the reader sees to the
    value ``fn`` gets. Headless, one call with ``value`` (default: the first option's). See :func:`controls`."""
    name = next(iter(inspect.signature(fn).parameters))
    controls(fn, **{name: Dropdown(options, value, description=description)})
