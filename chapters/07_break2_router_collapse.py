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
#
# Two more cases complete the picture: *soft* targets (a high temperature, far from one-hot) beside
# the cold ones (§6), and the setting the silent-collapse story really needs — a strong
# *generalist* among the experts, onto which a router can collapse without the headline noticing
# (§7). §8 trains one collapsed router by hand from the package's pieces.

# %%
# Colab only: install the companion package, and use the `gpu` profile when the runtime has a GPU.
# Locally (`pip install -e .` in the repository) this cell does nothing.
import os
import subprocess
import sys

REPO = "ORG/chapter32-fusion"  # written by `make colab REPO=owner/name`, like the badge above
if "google.colab" in sys.modules:  # same test as minigpt.notebook.in_colab(), before minigpt exists
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"git+https://github.com/{REPO}@main"], check=True)
    import torch  # preinstalled on Colab, with CUDA

    if os.environ.get("MINIGPT_PROFILE"):
        why = "MINIGPT_PROFILE was set before this cell"
    elif torch.cuda.is_available():
        os.environ["MINIGPT_PROFILE"] = "gpu"  # read when the next cell builds the experiment
        why = f"a GPU was found ({torch.cuda.get_device_name(0)})"
    else:
        why = "no GPU in this runtime (Runtime > Change runtime type adds one)"
    print(f"installed minigpt from github.com/{REPO}; profile {os.environ.get('MINIGPT_PROFILE', 'cpu')!r}: {why}")

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from dataclasses import replace

from minigpt.analysis.routing import weight_on
from minigpt.config import DOMAINS
from minigpt.evaluate import loss_table, routing_accuracy
from minigpt.notebook import announce, setup, show_markdown, slider
from minigpt.plots import (GRID_PANELS, plot_gate_grid, plot_generalist, plot_grid_heatmaps, plot_mean_weight_heatmaps,
                           plot_setting_vs_healthy, plot_settings_overview, plot_silent_collapse)
from minigpt.scoring import Experts, fused_row, score
from minigpt.studies.break2 import break2, grid_frame

exp = setup(extra=("break2",))  # announces the extra training time too
announce(exp, "break2")
# one per-token router per grid setting and four with a generalist, trained once and cached, all scored on the held-out windows
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
# Four data mixes by six temperatures: the profile's, two cold ones and three soft ones (§6). A setting is flagged as *silent collapse*
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
# ## 6. Cold and soft targets: what a temperature means here
#
# A temperature is cold or soft only relative to how far apart the specialists' losses are. The
# report measures both on random windows of the router split: how much worse the other
# specialists are than a window's own one (in nats), and, per temperature, the mean target weight
# on each window's best specialist (1 = one-hot, 1/3 = uniform over three).

# %%
pd.DataFrame(rep["own_specialist_margin_nats"]).T.rename_axis("window's domain").style.format("{:.3f}")

# %%
bal = next(g for g in grid.values() if max(g["domain_mix"]) - min(g["domain_mix"]) < 1e-9)  # the balanced mix
by_temp = {f"{g['temp']:g}": g for g in grid.values() if g["domain_mix"] == bal["domain_mix"]}
temps = pd.DataFrame({t: {"mean top target weight": v["mean_max_target"],
                          "router's mean top weight (balanced data)": by_temp[t]["mean_max_weight"],
                          "worst domain accuracy (balanced data)": by_temp[t]["min_routing_accuracy"],
                          "mixed vs healthy, %": by_temp[t]["mixed_vs_healthy_%"]}
                      for t, v in rep["target_sharpness"].items()}).T.rename_axis("target temperature")
temps.style.format("{:.2f}").format("{:.1%}", subset=["worst domain accuracy (balanced data)"]).format(
    "{:+.2f}", subset=["mixed vs healthy, %"])

# %%
sh = rep["target_sharpness"]
h_t = f"{exp.profile.router.temp:g}"
cold_t, soft_t = min(sh, key=float), max(sh, key=float)
text = (f"At the profile's temperature ({h_t}) the targets put {sh[h_t]['mean_max_target']:.0%} on the best specialist "
        f"on average, at {cold_t} {sh[cold_t]['mean_max_target']:.0%} and at {soft_t} {sh[soft_t]['mean_max_target']:.0%}. ")
text += ("The healthy targets are already nearly one-hot, so the *cold* settings teach almost the same thing as the "
         "healthy one: the contrast that matters here is with the soft ones. "
         if sh[h_t]["mean_max_target"] >= 0.9 else
         "The healthy targets are still visibly soft, so the cold settings do teach something different: near-certainty. ")
soft = [t for t in sh if float(t) > float(h_t)]
drop = [t for t in soft if by_temp[t]["min_routing_accuracy"] < by_temp[h_t]["min_routing_accuracy"]]
flagged = [t for t in soft if by_temp[t]["silent_collapse"]]
text += (f"With balanced data, soft targets lower the worst domain's routing accuracy at temperature(s) {', '.join(drop)}"
         if drop else "With balanced data, no soft temperature lowers the worst domain's routing accuracy")
text += (f"; flagged as silent collapse: {', '.join(flagged)}." if flagged else "; none is flagged as silent collapse.")
hedge = by_temp[soft_t]["mean_max_weight"] < by_temp[h_t]["mean_max_weight"]
text += (" The router follows its targets: at the softest temperature its top weight is lower than the healthy "
         "router's, so it hedges across specialists rather than picking one." if hedge else
         " The router's own top weight does not fall with the target's, so it does not hedge as its targets do.")
show_markdown(text)

# %% [markdown]
# ## 7. The precondition for a silent collapse: a strong generalist
#
# A collapse can only be silent if the expert the router collapses onto is nearly as good as the
# healthy mix on *every* domain. A specialist is not: off its own domain it is much worse (first
# table below), so collapsing onto it shows in the headline. Here a generalist joins the three
# specialists as a fourth expert — the monolithic crown: same base, same frozen trunk, trained on
# mixed data for three times the steps — and per-token routers with four outputs are trained
# healthy, on imbalanced data, with cold targets and with soft ones (which hand the generalist a
# share of every window's target when it is second-best everywhere). Routing accuracy still means
# "argmax = the window's own specialist"; the generalist's weight is shown beside it. A setting is a
# silent collapse by the same rule as above, against this healthy four-expert router.

# %%
gen = rep["generalist"]
pd.DataFrame({"generalist minus own specialist (own domain), nats": gen["generalist_minus_own_specialist_nats"],
              "share of router windows where the generalist is best": gen["generalist_best_window_share"]}).T.style.format(
    "{:.3f}")

# %%
gs = pd.DataFrame({n: {"mixed loss": s["mixed_loss"], "vs healthy, %": s["mixed_vs_healthy_%"],
                       **{f"accuracy {d}": s["routing_accuracy"][d] for d in DOMAINS},
                       **{f"generalist weight, {d}": s["weight_on_generalist"][d] for d in DOMAINS},
                       "silent collapse": s["silent_collapse"]} for n, s in gen["settings"].items()}).T
gs.style.format("{:.4f}", subset=["mixed loss"]).format("{:+.2f}", subset=["vs healthy, %"]).format(
    "{:.1%}", subset=[f"accuracy {d}" for d in DOMAINS]).format("{:.2f}", subset=[f"generalist weight, {d}" for d in DOMAINS])

# %%
plot_generalist(gen)
plt.show()

# %%
onto = {n: [d for d in DOMAINS if s["argmax_on_generalist"][d] > 0.5] for n, s in gen["settings"].items()}
text = (f"**The precondition {'holds' if gen['precondition_holds'] else 'does not hold'}**: the generalist alone scores "
        f"{gen['generalist_alone_mixed']:.4f}, {gen['generalist_alone_vs_healthy_%']:+.2f}% against the healthy "
        f"four-expert router ({gen['healthy_mixed']:.4f}), "
        + (f"within ±{gen['tolerance_pct']:g}%: a router that collapses onto it would barely move the headline. "
           if gen["precondition_holds"] else
           f"outside ±{gen['tolerance_pct']:g}%: even a collapse onto it would show in the headline. "))
text += ("Routers that send most of some domain's tokens to the generalist: "
         + "; ".join(f"{n} ({', '.join(ds)})" for n, ds in onto.items() if ds) + ". " if any(onto.values()) else
         "No router sends most of any domain's tokens to the generalist. ")
below = gen["healthy_already_below_50"]
pref = [d for d in below if gen["settings"]["healthy"]["argmax_on_generalist"][d] > 0.5]
if below:
    text += f"Even the healthy router is below 50% own-specialist accuracy on {', '.join(below)}. "
if pref:
    text += (f"On {', '.join(pref)} it sends most tokens to the generalist, which is the best expert on "
             + ", ".join(f"{gen['generalist_best_window_share'][d]:.0%} of {d}" for d in pref)
             + " router windows: there, preferring it is what the performance targets teach, not a fault. ")
text += (f"Flagged as silent collapse: {', '.join(gen['silent_collapse'])}" if gen["silent_collapse"] else
         "No setting is flagged as silent collapse")
text += (f"; counting only domains the healthy router handles: {', '.join(gen['silent_collapse_newly_below_50']) or 'none'}."
         if below and gen["silent_collapse"] else ".")
show_markdown(text)

# %% [markdown]
# ## 8. One collapsed router, by hand
#
# The study is a loop over settings; one setting takes three lines. Below, a router trained on 98%
# code windows with near-one-hot targets (a setting of the grid, so it loads from the cache), scored
# beside the healthy router on the same held-out windows.

# %%
collapsed = exp.router("per_token", replace(exp.profile.router, domain_mix=(0.98, 0.01, 0.01), temp=0.001))
by_hand = score(exp.eval_sets, Experts(exp.specialists(), exp.k),
                {"healthy": exp.router("per_token"), "collapsed": collapsed}, base=exp.base(),
                batch_size=exp.profile.eval_batch_size)
hand = loss_table(by_hand.nll).loc[[fused_row("soft", n) for n in ("healthy", "collapsed")], [*DOMAINS, "mixed"]]
hand.join(pd.DataFrame({fused_row("soft", n): {f"accuracy {d}": a for d, a in routing_accuracy(by_hand.weights[n]).items()}
                        for n in ("healthy", "collapsed")}).T).style.format("{:.4f}").format(
    "{:.1%}", subset=[f"accuracy {d}" for d in DOMAINS])

# %% [markdown]
# ## 9. Checks that hold whatever the run
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
assert gen["silent_collapse"] == [n for n, s in gen["settings"].items() if n != "healthy" and s["silent_collapse"]]
# the router trained by hand is the grid's router: same windows, same batches, the same numbers
g98 = grid["mix=0.98/0.01/0.01 temp=0.001"]
assert abs(hand.loc[fused_row("soft", "collapsed"), "mixed"] - g98["mixed_loss"]) < 1e-4
assert abs(hand.loc[fused_row("soft", "healthy"), "mixed"] - rep["healthy_mixed"]) < 1e-4

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
# 6. How one-hot are the targets at the profile's temperature, at the cold ones and at the soft
#    ones (§6)? Does "cold" teach the router anything the healthy setting does not, here? What do
#    soft targets do to the router's weights and to its routing accuracy?
# 7. With a generalist among the experts (§7): does the precondition hold, which settings send
#    tokens to the generalist, and is any of them a silent collapse? Why could the same router
#    collapse loudly with three specialists and silently with four experts?
