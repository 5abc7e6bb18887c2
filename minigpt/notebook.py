"""Helpers the chapter notebooks share: the set-up banner, where we are running, source display,
sliders that degrade to one static run, and the few measurements several chapters repeat.

They live in the package, not in ``chapters/``, so a notebook opened alone on Colab finds them
after ``pip install`` and the reader's notebooks and the instructor's answer key compute the same
numbers the same way.
"""
from __future__ import annotations

import inspect
import math
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

if TYPE_CHECKING:  # importing experiment pulls in datasets; only needed for hints
    import pandas as pd

    from .experiment import Experiment
    from .model import GPT

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
    flag = os.environ.get(HEADLESS_ENV)
    if flag is not None and flag.strip():
        return flag.strip().lower() not in ("0", "false", "no")
    # nbmake starts the kernel from inside a pytest test, so the kernel inherits this variable
    if os.environ.get("PYTEST_CURRENT_TEST") or os.environ.get("CI"):
        return True
    return not in_kernel()


# -- set-up ----------------------------------------------------------------------------------------
# Training some notebooks need on top of the shared models, in minutes on a fresh cache, measured
# with the CLI commands on 2 CPU cores (see README); other profiles print no estimate.
EXTRA_WORK: dict[str, str] = {
    "break1": "Break 1 (two more bases, their specialists and routers)",
    "break2": "Break 2 (twelve routers)",
    "sweep": "the freeze sweep (specialists and a router at every K)",
}
EXTRA_MINUTES: dict[str, dict[str, float]] = {
    "ci": {"break1": 1.5, "break2": 0.7, "sweep": 0.7},
    "cpu": {"break1": 14, "break2": 6, "sweep": 9},
}


def setup(profile: str | None = None, seed: int = 0, extra: Sequence[str] = (), **overrides) -> "Experiment":
    """Print the profile and the expected run time, and return the chapter's :class:`Experiment`.

    Everything the notebook asks the experiment for is loaded from the cache, or trained once
    and cached, so each notebook runs on its own and in any order. ``extra`` names the work beyond
    the shared models that the notebook triggers (keys of :data:`EXTRA_WORK`), so its time is
    announced before the long cell too.
    """
    from .cache import cache_root
    from .experiment import Experiment

    unknown = [w for w in extra if w not in EXTRA_WORK]
    if unknown:
        raise ValueError(f"unknown extra work {unknown}; choose from {', '.join(EXTRA_WORK)}")
    exp = Experiment(profile, seed, **overrides)
    p, m = exp.profile, exp.profile.model
    threads = os.environ.get(THREADS_ENV)
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
    where = "2 CPU cores" if p.name in EXTRA_MINUTES else "one GPU, estimated"
    print(f"  expected run time: up to ~{p.expected_minutes:g} min of training on a fresh cache "
          f"({where}), a few seconds once the models are cached in {cache_root()}")
    for work in extra:
        minutes = EXTRA_MINUTES.get(p.name, {}).get(work)
        print(f"  plus {f'~{minutes:g} min' if minutes else 'more training'} for {EXTRA_WORK[work]} "
              "on a fresh cache")
    return exp


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
    text = source_of(obj, match, context, start, stop)
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


def slider(fn: Callable[[Any], Any], value: float, min: float, max: float, step: float | None = None,
           log: bool = False, description: str | None = None) -> None:
    """A live slider for ``fn``'s single argument in Jupyter/Colab; headless, one call with ``value``.

    ``log=True`` gives a logarithmic slider (``min``/``max`` are values, not exponents).
    Returns nothing, so a notebook cell ending in ``slider(...)`` does not display it twice.
    """
    if running_headless():
        fn(value)
        return
    import ipywidgets as widgets
    from IPython.display import display

    name = next(iter(inspect.signature(fn).parameters))
    label = description or name
    style = {"description_width": "initial"}
    if log:
        w = widgets.FloatLogSlider(value=value, base=10, min=math.log10(min), max=math.log10(max),
                                   step=step or 0.1, description=label, style=style)
    elif all(float(v).is_integer() for v in (value, min, max, step or 1)):
        w = widgets.IntSlider(value=int(value), min=int(min), max=int(max), step=int(step or 1),
                              description=label, style=style)
    else:
        w = widgets.FloatSlider(value=value, min=min, max=max, step=step or (max - min) / 50,
                                description=label, style=style)
    w.continuous_update = False  # redraw on release: each redraw may run a model
    display(widgets.interactive(fn, **{name: w}))


# -- measurements several chapters repeat ----------------------------------------------------------
def param_counts(model: "GPT", k: int) -> dict[str, int]:
    """Frozen (trunk) and trainable (crown) parameter counts at freeze depth ``k``."""
    trunk = sum(p.numel() for p in model.trunk_parameters(k).values())
    crown = sum(p.numel() for p in model.crown_parameters(k).values())
    return {"trunk (frozen)": trunk, "crown (trained)": crown, "total": trunk + crown}


def loss_trend(losses: Sequence[float], frac: float = 0.1) -> tuple[float, float]:
    """Mean of the first and of the last ``frac`` of a loss curve (robust to step-to-step noise)."""
    n = max(1, int(len(losses) * frac))
    return float(sum(losses[:n]) / n), float(sum(losses[-n:]) / n)


def score_specialists(exp: "Experiment", k: int | None = None, routers: dict | None = None):
    """Held-out token losses of the base, each specialist, uniform mix and oracles (+ ``routers``).

    Lighter than ``exp.evaluate()``: it trains nothing beyond the base and the specialists (and
    whatever routers are passed in). Returns ``(nll, weights)`` as :func:`minigpt.evaluate.collect`.
    """
    from .evaluate import collect

    k = exp.k if k is None else k
    return collect(exp.eval_sets, exp.base(), exp.specialists(k=k), k, routers or {}, None,
                   exp.profile.eval_batch_size)


def best_specialist_share(nll: dict) -> dict[str, float]:
    """Per domain, the share of held-out windows whose lowest-loss specialist is that domain's own.

    Where this is below 1, domain labels and performance targets disagree about the right expert.
    """
    from .data import DOMAINS
    from .evaluate import SPECIALIST_ROWS

    out = {}
    for d in DOMAINS:
        per_window = torch.stack([nll[r][d].mean(-1) for r in SPECIALIST_ROWS])  # (N, n)
        out[d] = float((per_window.argmin(0) == DOMAINS.index(d)).float().mean())
    return out


def compare_router_targets(exp: "Experiment", targets: Sequence[str] = ("domain", "performance"),
                           kind: str = "last_token", k: int | None = None):
    """Train (or load) one router per target type and score it on the held-out windows.

    Returns ``(summary, nll, weights)``: ``summary`` has one row per target type with routing
    accuracy per domain and on average and the mixed loss of soft fusion and of hard dispatch
    with that router, next to the per-sequence oracle; ``nll`` and ``weights`` are as
    :func:`minigpt.evaluate.collect` (routers named by their target).
    """
    import pandas as pd

    from .data import DOMAINS
    from .evaluate import ORACLE, loss_table, routing_accuracy

    routers = {t: exp.router(kind, replace(exp.profile.router, target=t), k) for t in targets}
    nll, weights = score_specialists(exp, k, routers)
    table = loss_table(nll)
    hard = "single dispatch" if kind == "last_token" else "fused hard"
    rows = {}
    for t in targets:
        acc = routing_accuracy(weights[t])
        rows[t] = {**{f"accuracy {d}": acc[d] for d in DOMAINS},
                   "accuracy (mean)": sum(acc.values()) / len(acc),
                   "fused soft, mixed": table.loc[f"fused soft ({t} router)", "mixed"],
                   f"{hard}, mixed": table.loc[f"{hard} ({t} router)", "mixed"],
                   "oracle, mixed": table.loc[ORACLE, "mixed"]}
    return pd.DataFrame(rows).T.rename_axis("router target"), nll, weights


def routing_confusion(weights: dict) -> "pd.DataFrame":
    """Rows: the windows' true domain; columns: share of tokens whose top-weighted specialist is each."""
    import pandas as pd

    from .data import DOMAINS

    return pd.DataFrame({d: {f"→ {s}": float((w.argmax(-1) == j).float().mean()) for j, s in enumerate(DOMAINS)}
                         for d, w in weights.items()}).T.rename_axis("domain of the window")


def window_losses(exp: "Experiment", x: torch.Tensor, y: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """Mean next-token loss of each specialist on each window: (B, T) ids -> (B, N)."""
    import torch.nn.functional as F

    from .fusion import FusedModel
    from .model import token_nll_from_logprobs

    k = exp.k if k is None else k
    with torch.no_grad():
        _, logits = FusedModel(exp.specialists(k=k), k).expert_logits(x)  # (N, B, T, V)
        nll = torch.stack([token_nll_from_logprobs(F.log_softmax(l.float(), -1), y) for l in logits])
    return nll.mean(-1).T  # (B, N)


def router_windows(exp: "Experiment", per_domain: int, seed: int = 0):
    """``per_domain`` random windows from each domain's ``router`` split.

    Returns ids (n, T), targets (n, T), labels like ``"code #1"`` and each specialist's mean
    loss on each window (n, N).
    """
    from .data import DOMAINS
    from .streams import random_windows

    gen = torch.Generator().manual_seed(seed)
    T = exp.profile.model.block_size
    pairs = [random_windows(exp.streams.get(d, "router"), per_domain, T, gen) for d in DOMAINS]
    x, y = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
    labels = [f"{d} #{i + 1}" for d in DOMAINS for i in range(per_domain)]
    return x, y, labels, window_losses(exp, x, y)


def target_sharpness(losses: torch.Tensor, temps: Sequence[float]):
    """Mean target weight on the best specialist, ``softmax(-loss/temp).max()``, for each temperature."""
    import numpy as np

    from .router import performance_targets

    return np.array([float(performance_targets(losses, t).max(-1).values.mean()) for t in temps])


def chars_per_token(exp: "Experiment") -> "pd.DataFrame":
    """Characters of text per token, per split (rows) and domain (columns), with the shared tokenizer.

    Token counts include one end-of-document token per document.
    """
    from .data import DOMAINS

    import pandas as pd

    tokens = pd.DataFrame(exp.streams.tokens()).T[list(DOMAINS)]
    df = exp.corpus.select_columns(["domain", "split", "text"]).to_pandas()
    chars = df.assign(n=df["text"].str.len()).pivot_table(index="split", columns="domain", values="n", aggfunc="sum")
    return chars.loc[tokens.index, tokens.columns] / tokens


def crown_drift(base: "GPT", specialists: Sequence["GPT"]) -> "pd.DataFrame":
    """‖θ_specialist − θ_base‖ / ‖θ_base‖ per part of the model (rows) and specialist (columns)."""
    import pandas as pd

    def part(name: str) -> str:
        if name.startswith("transformer.h."):
            return f"block {name.split('.')[2]}"
        return "ln_f" if ".ln_f." in name else "embeddings"

    ref = {n: p.detach() for n, p in base.named_parameters()}
    out = {}
    for m in specialists:
        num: dict[str, float] = {}
        den: dict[str, float] = {}
        for n, p in m.named_parameters():
            b = part(n)
            num[b] = num.get(b, 0.0) + float((p.detach() - ref[n]).pow(2).sum())
            den[b] = den.get(b, 0.0) + float(ref[n].pow(2).sum())
        name = getattr(m, "manifest", {}).get("domain", f"model {len(out)}")
        out[name] = {b: (num[b] / den[b]) ** 0.5 for b in num}
    order = ["embeddings"] + [f"block {i}" for i in range(base.config.n_layer)] + ["ln_f"]
    return pd.DataFrame(out).loc[order]


# -- notebooks 4, 6-8 and their answer key ---------------------------------------------------------
FUSION_RULES = {
    # rule -> row of the evaluation table for each router kind (None: that combination is not scored)
    "logit fusion (soft)": {"per-token": "fused soft (per-token router)", "last-token": "fused soft (last-token router)"},
    "probability mixture": {"per-token": "fused probs (per-token router)", "last-token": None},
    "hard (argmax only)": {"per-token": "fused hard (per-token router)", "last-token": "single dispatch (last-token router)"},
}


def fusion_comparison(table: "pd.DataFrame", column: str = "mixed") -> "pd.DataFrame":
    """One column of the evaluation table rearranged: fusion rule (rows) x router kind (columns)."""
    import pandas as pd

    return pd.DataFrame({rule: {router: (float(table.loc[row, column]) if row in table.index else float("nan"))
                                if row else float("nan") for router, row in rows.items()}
                         for rule, rows in FUSION_RULES.items()}).T.rename_axis("fusion rule")


def specialist_nll(nll: dict) -> dict[str, torch.Tensor]:
    """``{domain: (N, n, T)}`` token losses of every specialist, from :func:`minigpt.evaluate.collect`'s ``nll``."""
    from .data import DOMAINS
    from .evaluate import SPECIALIST_ROWS

    return {d: torch.stack([nll[r][d] for r in SPECIALIST_ROWS]) for d in DOMAINS}


def baseline_comparison(table: "pd.DataFrame", method: str | None = None,
                        baselines: Sequence[str] | None = None) -> "pd.DataFrame":
    """Mixed loss of each baseline next to ``method`` (default: the headline row).

    ``margin`` = baseline − method in nats: positive where the method beats that baseline.
    """
    import pandas as pd

    from .evaluate import HEADLINE, SPECIALIST_ROWS

    method = method or HEADLINE
    baselines = list(baselines or ["base", *SPECIALIST_ROWS, "weight average", "uniform mix", "monolithic"])
    baselines = [b for b in baselines if b in table.index]
    m = float(table.loc[method, "mixed"])
    rows = {b: {"mixed": float(table.loc[b, "mixed"]), "margin": float(table.loc[b, "mixed"]) - m}
            for b in baselines}
    out = pd.DataFrame(rows).T.rename_axis("baseline")
    out["fusion better"] = out["margin"] > 0
    return out


def oracle_headroom(table: "pd.DataFrame", method: str | None = None) -> dict[str, float]:
    """Oracle gap of ``method`` and how much of the oracle's headroom over the best specialist it captures.

    ``headroom`` = best specialist − oracle (nats, mixed); ``captured`` = (best specialist − method) /
    headroom, NaN when there is no headroom.
    """
    from .evaluate import HEADLINE, ORACLE, SPECIALIST_ROWS

    method = method or HEADLINE
    mixed = table["mixed"]
    best_row = mixed[list(SPECIALIST_ROWS)].idxmin()
    best, oracle, m = float(mixed[best_row]), float(mixed[ORACLE]), float(mixed[method])
    headroom = best - oracle
    return {"method": m, "oracle": oracle, "gap": m - oracle, "best_specialist": best_row,
            "best_specialist_mixed": best, "headroom": headroom,
            "captured": (best - m) / headroom if headroom > 0 else float("nan")}


@torch.no_grad()
def router_weights(trunk_model: "GPT", k: int, routers: dict, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each router's weights on ``x`` (B, T) as (B, T, N); a per-window router's vector is repeated over T."""
    h = trunk_model.trunk(x, k)
    out = {}
    for name, router in routers.items():
        w = router(h)
        out[name] = w.unsqueeze(1).expand(-1, x.shape[1], -1) if w.dim() == 2 else w
    return out


@torch.no_grad()
def future_leak(trunk_model: "GPT", k: int, routers: dict, x: torch.Tensor, x_alt: torch.Tensor, t: int) -> dict:
    """Do the weights used at positions < t depend on tokens at positions >= t?

    ``x`` and ``x_alt`` (B, T) agree on their first ``t`` tokens. Returns, for the trunk output and
    for each router, the largest absolute change at positions < t. A causal computation gives 0.
    """
    if not torch.equal(x[:, :t], x_alt[:, :t]):
        raise ValueError(f"x and x_alt must share their first t={t} tokens; they differ before position {t}")
    out = {"trunk output": float((trunk_model.trunk(x, k) - trunk_model.trunk(x_alt, k))[:, :t].abs().max())}
    a, b = router_weights(trunk_model, k, routers, x), router_weights(trunk_model, k, routers, x_alt)
    for name in routers:
        out[name] = float((a[name] - b[name])[:, :t].abs().max())
    return out


def hybrid_set(exp: "Experiment", rep: dict):
    """The hybrid held-out windows a :func:`minigpt.hybrid.run_hybrid` report was measured on (same seed, same n)."""
    from .data import DOMAINS
    from .hybrid import hybrid_windows

    return hybrid_windows({d: exp.streams.get(d, "eval") for d in DOMAINS}, rep["hybrid"]["n_windows"],
                          exp.profile.model.block_size, rep["hybrid_seed"])


def hybrid_table(rep: dict) -> "pd.DataFrame":
    """Fused loss and routing accuracy of each router on single-domain and on hybrid windows, with the
    best single specialist and the per-token oracle on the same windows."""
    import pandas as pd

    rows = {}
    for kind in ("single_domain", "hybrid"):
        r = rep[kind]
        best = min(r["specialists"], key=r["specialists"].get)
        for router, v in r["routers"].items():
            rows[(kind.replace("_", "-"), router)] = {
                "fused loss": v["fused_loss"], "routing accuracy": v["routing_accuracy"],
                "best specialist": r["specialists"][best], "oracle (per token)": r["oracle (per token)"],
                "gain vs best specialist": r["specialists"][best] - v["fused_loss"]}
    return pd.DataFrame(rows).T.rename_axis(["windows", "router"])


def accuracy_since_switch(rep: dict, kind: str = "hybrid") -> "pd.DataFrame":
    """Routing accuracy by tokens since the last domain switch (rows: distance bucket, columns: router)."""
    import pandas as pd

    return pd.DataFrame({router: v["accuracy_by_tokens_since_switch"]
                         for router, v in rep[kind]["routers"].items()}).rename_axis("tokens since switch")


def segment_snippets(tokenizer, hs, i: int, chars: int = 70) -> list[str]:
    """The start of each segment of hybrid window ``i``, decoded: ``"[legal] The licensee ..."``."""
    out, T = [], hs.x.shape[1]
    ids = torch.cat([hs.x[i], hs.y[i, -1:]]).tolist()  # the window's T + 1 tokens
    for seg in hs.segments[i]:
        a = seg["window_start"]
        text = tokenizer.decode(ids[a:min(a + seg["length"], T + 1)], skip_special_tokens=False)
        text = " ".join(text.split())
        out.append(f"[{seg['domain']}, {seg['length']} tokens] {text[:chars]}{'…' if len(text) > chars else ''}")
    return out


def switch_lag(weights: torch.Tensor, labels: torch.Tensor) -> list[int | None]:
    """For one window's (T, N) weights and (T,) labels: after each domain switch, how many tokens until
    the argmax first equals the new domain (None if it never does before the next switch)."""
    choice = weights.argmax(-1)
    starts = [0] + [t for t in range(1, len(labels)) if labels[t] != labels[t - 1]] + [len(labels)]
    lags = []
    for a, b in zip(starts[1:-1], starts[2:]):
        hit = (choice[a:b] == labels[a]).nonzero()
        lags.append(int(hit[0]) if len(hit) else None)
    return lags


def grid_frame(rep: dict, key: str) -> "pd.DataFrame":
    """Break 2's grid as a mix (rows) x temperature (columns) table of one per-setting value."""
    import pandas as pd

    rows: dict[str, dict[str, float]] = {}
    for g in rep["grid"].values():
        mix = "/".join(f"{m:.2f}" for m in g["domain_mix"])
        rows.setdefault(mix, {})[f"{g['temp']:g}"] = g[key]
    df = pd.DataFrame(rows).T
    return df[sorted(df.columns, key=float, reverse=True)].rename_axis("domain mix (code/medical/legal)")


def sweep_frame(rep: dict) -> "pd.DataFrame":
    """The freeze-depth sweep as one row per K: sizes, divergence, gains, oracle gap, routing, similarity."""
    import pandas as pd

    from .evaluate import HEADLINE, ORACLE, SPECIALIST_ROWS

    rows = {}
    for K, r in rep["per_k"].items():
        mixed = r["mixed"]
        rows[int(K)] = {"trainable params": r["trainable_params"], "divergence %": r["divergence_%"],
                        "fused vs best specialist %": r["fused_gain_vs_best_specialist_%"],
                        "fused vs base %": r["fused_gain_vs_base_%"],
                        "fused mixed": mixed[HEADLINE], "best specialist mixed": min(mixed[s] for s in SPECIALIST_ROWS),
                        "oracle mixed": mixed[ORACLE], "oracle gap": r["oracle_gap"],
                        "routing accuracy": sum(r["routing_accuracy"].values()) / len(r["routing_accuracy"]),
                        "crown CKA": r["crowns_final_hidden"]["mean_cka"],
                        "crown cosine": r["crowns_final_hidden"]["mean_paired_cosine"]}
    return pd.DataFrame(rows).T.rename_axis("K")


def true_weight_by_distance(weights: torch.Tensor, labels: torch.Tensor, min_tokens: int = 30) -> "pd.Series":
    """Mean weight on the true domain's specialist, by tokens since the last domain switch.

    ``weights`` (n, T, N) and ``labels`` (n, T) as in :class:`minigpt.hybrid.HybridSet`; distance 0 is
    the first target token of a segment (the start of a window counts as a switch). Distances
    with fewer than ``min_tokens`` tokens are left out (only a few long segments reach them).
    """
    import pandas as pd

    from .hybrid import _since_switch

    _, since = _since_switch(labels)
    on_true = weights.gather(-1, labels.unsqueeze(-1)).squeeze(-1).double()
    return pd.Series({int(d): float(on_true[since == d].mean()) for d in since.unique()
                      if int((since == d).sum()) >= min_tokens},
                     name="weight on the true domain").rename_axis("tokens since switch")


def break1_prediction_fusion(rep: dict) -> dict:
    """Does logit fusion survive different bases? Read off a :func:`minigpt.breaks.break1` report.

    ``beats_best``: with different bases, logit fusion still beats its own best specialist.
    ``in_control_range``: its mixed loss lies within the shared-base controls' range on the same
    bases (so a weaker base explains it as well as a lost shared geometry). ``verdict`` is
    ``"survives"`` (both), ``"within base-quality range"`` (only the second) or ``"degrades"``.
    ``bites``: within-set contrasts that get significantly worse, largest change first.
    """
    c = {x["contrast"]: x for x in rep["within_set_contrasts"]}
    dv = rep["different_vs_controls"]
    behind = c["fused logits minus best specialist"]["different"]  # < 0: fusion beats its best specialist
    beats, in_range = behind < 0, not dv["outside_control_range"]
    return {"beats_best": bool(beats), "behind_best_nats": float(behind), "in_control_range": bool(in_range),
            "fused": dv["different_fused_logits_mixed"], "controls": (dv["controls_min"], dv["controls_max"]),
            "verdict": "survives" if beats and in_range else "within base-quality range" if in_range else "degrades",
            "bites": [(x["contrast"], x["change_nats"]) for x in rep["within_set_contrasts"] if x["verdict"] == "worse"]}
