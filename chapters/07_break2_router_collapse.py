# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 7 · Break 2: router collapse
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ORG/chapter32-fusion/blob/main/chapters/07_break2_router_collapse.ipynb)
#
# Companion to Chapter 32, Break 2. The specialists and their shared trunk are exactly those of
# notebooks 2–5; only the router's training changes. Two things can push a router to lean on one
# specialist for nearly everything:
#
# * **imbalanced router data** — most training windows come from one domain (here up to 98% code);
# * **a very cold target temperature** — performance targets `softmax(-loss / temp)` become one-hot
#   on whichever specialist was marginally better, so small, noisy differences are taught as
#   certainties.
#
# The point of the break is that the headline number can stay calm while this happens. So every
# router below is shown twice: by its mixed loss, and by what it actually does per domain.

# %%
# Colab only: install the companion package (torch is preinstalled there).
# Locally: `pip install -e .` in the repository, then open this notebook.
import subprocess
import sys

REPO = "ORG/chapter32-fusion"  # owner/name of the companion repository on GitHub
if "google.colab" in sys.modules:  # same test as minigpt.notebook.in_colab(), before minigpt exists
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"git+https://github.com/{REPO}"], check=True)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from minigpt.analysis.routing import weight_on
from minigpt.config import DOMAINS
from minigpt.notebook import announce, setup, show_markdown, slider
from minigpt.plots import (GRID_PANELS, plot_gate_grid, plot_grid_heatmaps, plot_mean_weight_heatmaps,
                           plot_setting_vs_healthy, plot_settings_overview, plot_silent_collapse)
from minigpt.studies.break2 import break2, grid_frame

exp = setup(extra=("break2",))  # announces the extra training time too
announce(exp, "break2")
# one per-token router per setting (12 in the grid), trained once and cached, all scored on the held-out windows
rep = break2(exp)
settings, grid = rep["settings"], rep["grid"]
raw_w, names = rep["_raw"]["weights"], rep["_raw"]["names"]
tol = rep["tolerance_pct"]
print(f"{len(grid)} routers; healthy = {rep['healthy_setting']}; report written to {rep['out_path']}")

# %% [markdown]
# ## 1. Four routers, one table
#
# *healthy* is the profile's router (balanced data, the profile's temperature); *imbalanced* is
# trained on 90% code windows; *cold* uses a temperature of 0.001; the last combines both.
# Everything else — specialists, steps, initialisation, evaluation windows — is identical.

# %%
cols = {"mixed_loss": "mixed loss", "mixed_vs_healthy_%": "vs healthy, %", "min_routing_accuracy": "worst domain accuracy",
        "mean_max_weight": "mean top weight", "dominant_specialist": "dominant specialist",
        "weight_on_dominant_other_domains": "its weight on other domains"}
four = pd.DataFrame({n: {**{f"accuracy {d}": s["routing_accuracy"][d] for d in DOMAINS},
                         **{v: s[key] for key, v in cols.items()},
                         "mix": "/".join(f"{m:.2f}" for m in s["domain_mix"]), "temp": s["temp"]}
                     for n, s in settings.items()}).T
pct = [c for c in four.columns if c.startswith("accuracy")] + ["worst domain accuracy"]
four.style.format("{:.4f}", subset=["mixed loss"]).format("{:.1%}", subset=pct).format(
    "{:+.2f}", subset=["vs healthy, %"]).format("{:.2f}", subset=["mean top weight", "its weight on other domains"])

# %% [markdown]
# The same routers as two pictures side by side: per-domain routing accuracy (left) and the number
# most reports would lead with, the mixed loss (right). The shaded band is ±2% around the healthy
# router's loss.

# %%
plot_settings_overview(rep)
plt.show()

# %% [markdown]
# ## 2. Gate-weight histograms
#
# For every token of each domain's held-out text, the weight the router gives each specialist.
# A healthy router puts the own domain's specialist (its colour) to the right on its own text; a
# collapsed one puts the same specialist to the right everywhere.

# %%
plot_gate_grid({n: s["gate_histograms"] for n, s in settings.items()})
plt.show()

# %% [markdown]
# ## 3. How much weight does the dominant specialist take on other domains' text?
#
# For each router, the specialist with the most weight overall, and its mean weight on each
# domain's tokens. On its own domain a high weight is correct; on the other two it means one
# specialist is doing the work with the others reduced to a faint background (Chapter 32, Break 2).

# %%
dom = pd.DataFrame({n: {**{f"on {d} text": s["weight_on_dominant"][d] for d in DOMAINS},
                        "dominant": s["dominant_specialist"],
                        "mean on the other domains": s["weight_on_dominant_other_domains"]}
                    for n, s in settings.items()}).T
dom.style.format("{:.2f}", subset=[c for c in dom.columns if c != "dominant"])

# %% [markdown]
# The same per-domain picture as mean weights (rows: the text's domain, columns: the specialist):

# %%
plot_mean_weight_heatmaps({n: raw_w[names[n]] for n in settings})
plt.show()

# %% [markdown]
# ## 4. The whole grid: silent collapse
#
# Twelve routers, four data mixes by three temperatures. A setting is flagged as *silent collapse*
# when its mixed loss stays within ±2% of the healthy router's **and** at least one domain's routing
# accuracy falls below 50%: the headline says nothing happened, the per-domain view says a domain is
# mostly sent to someone else's specialist.

# %%
g = pd.DataFrame(grid).T
g["silent collapse"] = g["silent_collapse"]
g[["mixed_loss", "mixed_vs_healthy_%", "min_routing_accuracy", "dominant_specialist",
   "weight_on_dominant_other_domains", "silent collapse"]].style.format(
    {"mixed_loss": "{:.4f}", "mixed_vs_healthy_%": "{:+.2f}", "min_routing_accuracy": "{:.1%}",
     "weight_on_dominant_other_domains": "{:.2f}"})

# %%
plot_grid_heatmaps({key: grid_frame(rep, key) for key in GRID_PANELS})  # rows: data mix, columns: temperature
plt.show()

# %%
plot_silent_collapse(rep)
plt.show()

# %%
silent, strict = rep["silent_collapse"], rep["silent_collapse_newly_below_50"]
already = rep["healthy_already_below_50"]
gain = rep["fusion_gain_over_best_specialist_%"]
text = (f"**{len(silent)} of {len(grid) - 1} non-healthy settings keep the mixed loss within {tol:g}% of the healthy "
        f"router's while some domain's routing accuracy is below 50%.**" if silent else
        f"**No setting keeps the mixed loss within {tol:g}% while a domain falls below 50% accuracy** at this "
        "profile: here collapse is not silent.")
if already:
    text += (f" Caveat: the healthy router itself is already below 50% on {', '.join(already)}, so the 50% line alone "
             f"flags it too; counting only domains the healthy router gets right, {len(strict)} setting(s) qualify"
             + (f" ({', '.join(strict)})." if strict else "."))
ratio = tol / max(abs(gain), 1e-9)
text += (f" For scale: the healthy router {'beats' if gain > 0 else 'trails'} the best single specialist by "
         f"{abs(gain):.2f}% on mixed data, so a {tol:g}% window is {ratio:.1f}× the whole effect of routing"
         + (" — a band that wide can hide almost anything a router does." if ratio > 1 else "."))
show_markdown(text)

# %% [markdown]
# ## 5. Explore the grid
#
# Pick a grid setting (in Jupyter or Colab the slider redraws; run headless, it shows the
# imbalanced one). Left: routing accuracy per domain against the healthy router. Right: where each
# domain's weight goes.

# %%
grid_names = list(grid)


def show_setting(i):
    name = grid_names[i]
    r = grid[name]
    print(f"{name}: mixed {r['mixed_loss']:.4f} ({r['mixed_vs_healthy_%']:+.2f}% vs healthy); worst domain accuracy "
          f"{r['min_routing_accuracy']:.0%}; {r['dominant_specialist']} gets {r['weight_on_dominant_other_domains']:.2f} "
          f"of the weight on the other domains{'  -> SILENT COLLAPSE' if r['silent_collapse'] else ''}")
    plot_setting_vs_healthy(rep["healthy_routing_accuracy"], r["routing_accuracy"], raw_w[name])
    plt.show()


slider(show_setting, value=grid_names.index(names["imbalanced"]), min=0, max=len(grid_names) - 1, step=1,
       description="grid setting #")

# %% [markdown]
# When a collapsed router is wrong, is it wrong in a way that costs loss? `misrouting` looks at the
# misrouted tokens: was the chosen specialist still the best one for that window (both fit), and how
# many nats worse than the own-domain specialist is it there?

# %%
mis = pd.DataFrame({(n, d): v for n in ("healthy", "imbalanced") for d, v in settings[n]["misrouting"].items()}).T
mis.rename_axis(["router", "domain"]).style.format("{:.3f}").format(
    "{:.1%}", subset=["misrouted", "chosen_is_window_best"])

# %% [markdown]
# ## 6. Checks that hold whatever the run
#
# Trained mostly on code windows, a router must lean on the code specialist more than the balanced
# router does, on the *other* domains' text; and the flagged settings must be exactly those the
# stated rule picks out.

# %%
majority = int(np.argmax(settings["imbalanced"]["domain_mix"]))
others = [d for d in DOMAINS if d != DOMAINS[majority]]
lean = {n: float(np.mean([weight_on(raw_w[names[n]], majority)[d] for d in others])) for n in ("healthy", "imbalanced")}
print(f"mean weight on the {DOMAINS[majority]} specialist on {' and '.join(others)} text: healthy {lean['healthy']:.3f}, "
      f"imbalanced {lean['imbalanced']:.3f}")
assert lean["imbalanced"] > lean["healthy"], "imbalanced router data should pull weight toward the majority specialist"
rule = [n for n, r in grid.items() if abs(r["mixed_vs_healthy_%"]) <= tol and r["min_routing_accuracy"] < 0.5
        and n != rep["healthy_setting"]]
assert rule == silent

# %% [markdown]
# ## Questions to answer
#
# 1. Which settings keep the mixed loss within 2% of the healthy router while some domain's
#    routing accuracy drops below 50%? How large is that 2% window compared with the entire gain
#    the healthy router has over the best single specialist?
# 2. For the imbalanced router, how much weight does the dominant specialist receive on the other
#    two domains' text, compared with the healthy router? Read it off the histograms too.
# 3. Does a cold temperature on its own collapse the router, or only sharpen it? Compare *cold*
#    with *imbalanced* in the table, the histograms and the mean-weight heatmaps.
# 4. Why can the mixed loss barely move when a router sends most tokens to one specialist? Use the
#    specialists' own mixed losses from notebook 5 (or this notebook's `rep["table"]`) in your answer.
# 5. You are adding a check to a training pipeline to catch this failure before deployment. Which
#    measurement would you use, with what threshold, and why is the mixed loss not enough?
