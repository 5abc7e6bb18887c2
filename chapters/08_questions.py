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
# # 8 · The chapter's five questions, with their evidence
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ORG/chapter32-fusion/blob/main/chapters/08_questions.ipynb)
#
# Chapter 32 closes with five questions. Each is restated below in our own words, followed by the
# cells that produce the evidence on *this* run (the profile and seed printed by the set-up cell).
# The answers are left to you; an instructor's key computed from the same numbers is in
# `chapters/answers/`. Everything comes from the package's cached models, so this notebook runs on
# its own, in any order relative to the others.

# %%
# Colab only: install the companion package. Locally (`pip install -e .`) this cell does nothing.
# The book trains the `cpu` profile, whose numbers are the README's, on the runtime's GPU when it has
# one (minutes). For the larger `gpu` profile remove the `#` below; the next cell prints its time.
import os
import subprocess
import sys

REPO = "ORG/chapter32-fusion"  # written by `make colab REPO=owner/name`, like the badge above
# os.environ["MINIGPT_PROFILE"] = "gpu"
if "google.colab" in sys.modules:  # same test as minigpt.notebook.in_colab(), before minigpt exists
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"git+https://github.com/{REPO}@main"], check=True)
    import torch  # preinstalled on Colab, with CUDA

    where = (f"the GPU ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available()
             else "the CPU (Runtime > Change runtime type adds a GPU)")
    print(f"installed minigpt from github.com/{REPO}; profile {os.environ.get('MINIGPT_PROFILE', 'cpu')!r} on {where}")

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from minigpt.analysis.conclusions import nothing_frozen_changes, nothing_frozen_methods
from minigpt.analysis.crowns import param_counts
from minigpt.analysis.divergence import kalavai_line
from minigpt.analysis.routing import confusion_matrix, misrouting, misrouting_margins
from minigpt.analysis.table import baseline_comparison, oracle_headroom
from minigpt.chapter import chapter_table
from minigpt.claims.break1 import headline, predictions
from minigpt.claims.sweep import boundary, gain_column, nothing_frozen
from minigpt.config import DOMAINS
from minigpt.notebook import announce, setup, show_markdown, slider
from minigpt.plots import (DOMAIN_COLORS, plot_confusion, plot_freeze_grid, plot_freeze_sweep,
                           plot_mixed_losses)
from minigpt.scoring import HEADLINE, ORACLE, ORACLE_PER_TOKEN, SPECIALIST_ROWS
from minigpt.studies.break1 import break1
from minigpt.studies.common import saved_report
from minigpt.studies.freeze_sweep import saved_or_run, sweep_frame

exp = setup(extra=("break1",))  # announces the extra training time too
res = chapter_table(exp)  # the full table of notebook 5
table, mixed = res["table"], res["table"]["mixed"]

# %% [markdown]
# ## Question 1 · Which baselines does fusion beat, and which still beat it?
#
# *Against which baselines does the routed fusion win on mixed held-out text, and which remain
# better than it? Suppose merging the specialists' weights outperforms routing between them: what
# would that reveal about the router — not about the specialists?* (Chapter 32, Steps 6 and 8.)
#
# The headline is soft logit fusion with the per-token router. `margin` is the baseline's loss minus
# the headline's, positive where fusion wins. The `uniform mix` row's margin is what the router adds
# over equal weights on the same specialists.

# %%
vs = baseline_comparison(table)
vs.style.format({"mixed": "{:.4f}", "margin": "{:+.4f}"}).background_gradient(cmap="RdYlGn", subset=["margin"])

# %%
plot_mixed_losses(table, highlight=(HEADLINE, ORACLE, ORACLE_PER_TOKEN))
plt.title(f"Every row of the table, mixed held-out loss ({exp.profile.name}, seed {exp.seed})", fontsize=10)
plt.show()

# %% [markdown]
# ## Question 2 · The oracle gap: a weak router, or weak specialists?
#
# *How far is the learned router from an oracle that picks the best specialist with hindsight?
# Is the weak link the router, or are the specialists too alike to leave room — and what remedy
# fits each diagnosis?* (Chapter 32, Step 7.)
#
# Three numbers frame it: the oracle gap, the oracle's *headroom* over the best single specialist
# (what perfect per-window routing could win at all), and the share of it the router captures.

# %%
oh = oracle_headroom(table)
captured = "share of headroom captured"
(pd.Series({"headline (fused, per-token)": oh["method"], "oracle (per sequence)": oh["oracle"],
            "oracle gap": oh["gap"], f"best specialist: {oh['best_specialist']}": oh["best_specialist_mixed"],
            "oracle headroom over it": oh["headroom"], captured: oh["captured"]}, name="value").to_frame().style
 .format("{:.4f}").format("{:.0%}", subset=pd.IndexSlice[[captured], :]))

# %% [markdown]
# A causal router starts each window knowing nothing, while the oracle has seen the whole window. If
# the gap sits in the first positions, much of it is the price of routing causally:

# %%
by_pos = pd.Series(res["oracle_gap_by_position"], name="oracle gap (nats)")
by_pos.plot.bar(rot=0, color="tab:purple", figsize=(5.5, 2.6))
plt.axhline(oh["gap"], color="black", ls="--", lw=1, label=f"whole window {oh['gap']:+.4f}")
plt.xlabel("token positions in the window")
plt.ylabel("fused − oracle (nats)")
plt.legend(fontsize=8)
plt.show()
by_pos.to_frame().style.format("{:+.4f}")

# %%
per_domain_gap = (table.loc[HEADLINE, list(DOMAINS)] - table.loc[ORACLE, list(DOMAINS)]).rename("oracle gap")
pd.DataFrame({"oracle gap": per_domain_gap, "routing accuracy": pd.Series(res["routing_accuracy"]["per-token"])}) \
    .style.format({"oracle gap": "{:+.4f}", "routing accuracy": "{:.1%}"})

# %% [markdown]
# ## Question 3 · When the shared base is gone, what fails first?
#
# *Once each specialist starts from its own base, which of these gives way first: routing
# accuracy, the fused loss, how well calibrated the outputs are, or weight averaging? And which of
# them shows up in the headline mixed loss at all?* (Chapter 32, Break 1; notebook 6 has the full
# analysis.)

# %%
announce(exp, "break1")
b1 = break1(exp, tokenizer_case=False)
pd.DataFrame([{"prediction": r["prediction"], "change vs matched control": r["vs_matched"]["estimate"],
               "95% low": r["vs_matched"]["low"], "95% high": r["vs_matched"]["high"], "outcome": r["outcome"]}
              for r in b1["matched"]], index=[r["metric"] for r in b1["matched"]]).style.format(
    "{:+.4f}", subset=["change vs matched control", "95% low", "95% high"])

# %%
show_markdown(predictions(b1).text)
show_markdown(headline(b1).text)
fails = b1["what_fails_first"]
pd.Series(fails, index=pd.RangeIndex(1, len(fails) + 1, name="rank"), dtype=str,
          name="what fails first: held predictions, most decisive first").to_frame()

# %% [markdown]
# ## Question 4 · Does freezing more of the trunk help fusion or hurt it?
#
# *A deeper frozen trunk gives the router a stronger shared interface but leaves the specialists
# less room to adapt. Which effect wins, and where is the boundary in this run?* (Chapter 32,
# Step 2.)
#
# The sweep trains specialists and a per-token router at the profile's freeze depth K and at its two
# neighbours (K blocks plus the embeddings frozen) and scores each set the same way. Its six extra
# crowns are the book's largest training bill, so `saved_or_run` reads the sweep committed for this
# profile and seed (the reference run) and trains it only where none is committed;
# `freeze_sweep(exp)` trains it here, with the time printed below. *Divergence* is how much the specialists
# improved on their own domain over the base (in %, averaged over domains); the fused gain is the
# headline's improvement over the best specialist (in %).

# %%
sw = saved_or_run(exp)  # prints where the sweep comes from
frame = sweep_frame(sw)  # one row per K; the nothing-frozen point is under Going further
frame.style.format("{:.4f}").format("{:,.0f}", subset=["trainable params"]).format(
    "{:+.2f}", subset=["divergence %", "fused vs best specialist %", "fused vs base %"]).format(
    "{:.1%}", subset=["routing accuracy"])

# %%
best_k = sw["boundary"]["best_k"]
plot_freeze_sweep(frame, k_profile=exp.k, mark=best_k)
plt.suptitle(f"Freeze-depth sweep (dotted: the profile's K = {exp.k}; dashed: lowest fused loss, K = {best_k})",
             fontsize=10, y=1.02)
plt.show()

# %% [markdown]
# **Where is the boundary?** Read it off the fused model's own loss, with a paired interval between
# each pair of neighbouring depths (same windows, so the comparison is paired):

# %%
pd.DataFrame([{"from K": st["from_k"], "to K": st["to_k"], "fused loss change": st["change_nats"]["estimate"],
               "95% low": st["change_nats"]["low"], "95% high": st["change_nats"]["high"]}
              for st in sw["boundary"]["steps"]]).style.format("{:+.4f}", subset=["fused loss change", "95% low",
                                                                                  "95% high"]).hide(axis="index")

# %%
show_markdown(boundary(sw).text)
show_markdown(gain_column(sw).text)

# %% [markdown]
# ## Question 5 · When the router gets it wrong, how wrong?
#
# *Look at the router's mistakes. Does it send text to the specialist of an unrelated domain, or
# does it hesitate between two specialists that each suit the text in part? Each kind of mistake
# has its own remedy.* (Chapter 32, question 5.)
#
# Three views of the per-token router's mistakes on held-out text: where each domain's tokens go;
# whether the chosen specialist was still the best one for that window and what the mistake costs;
# and how close the call was, the chosen specialist's weight minus the own specialist's.

# %%
weights = res["weights"]["per-token"]
plot_confusion(confusion_matrix(weights), title="per-token router: where each domain's tokens go")
plt.show()

# %%
spec_nll = {d: res["scores"].spec_nll(d) for d in DOMAINS}  # (specialists, windows, T) token losses per domain
mis = pd.DataFrame(misrouting(weights, spec_nll)).T.rename(columns={
    "misrouted": "misrouted share", "chosen_is_window_best": "chosen specialist best on the window",
    "excess_nats": "extra loss of the chosen specialist (nats)"})
margins = misrouting_margins(weights)
mis["median weight margin"] = pd.Series({d: v["median_margin"] for d, v in margins.items()})
mis["own specialist is 2nd"] = pd.Series({d: v["own_is_second"] for d, v in margins.items()})
mis.style.format("{:.3f}").format("{:.1%}", subset=["misrouted share", "chosen specialist best on the window",
                                                   "own specialist is 2nd"])

# %%
fig, ax = plt.subplots(figsize=(6.4, 2.8))
for d, v in margins.items():
    if v["margin"].numel():
        ax.hist(v["margin"].numpy(), bins=np.linspace(0, 1, 26), histtype="step", lw=1.8, color=DOMAIN_COLORS[d],
                density=True, label=f"{d} text ({v['misrouted']:.0%} misrouted)")
ax.set_xlabel("weight on chosen specialist − weight on own specialist (misrouted tokens)")
ax.set_ylabel("density")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Does the wrongly chosen specialist still *partly fit*? Compare its loss on that domain with the
# base's and the own specialist's (the cross-domain matrix of notebook 2):

# %%
cm, cd = confusion_matrix(weights), res["cross_domain"]
fit_rows = {}
for d in DOMAINS:
    wrong = cm.loc[d].drop(f"{d} specialist")
    dest = wrong.idxmax()
    fit_rows[d] = {"most frequent wrong choice": dest, "share of tokens": wrong.max(),
                   "its loss here": cd.loc[dest, d], "own specialist": cd.loc[f"{d} specialist", d],
                   "base": cd.loc["base", d], "beats the base here": bool(cd.loc[dest, d] < cd.loc["base", d])}
pd.DataFrame(fit_rows).T.style.format({"share of tokens": "{:.1%}", "its loss here": "{:.4f}",
                                       "own specialist": "{:.4f}", "base": "{:.4f}"})

# %% [markdown]
# ## Going further
#
# ### Every freeze depth side by side
#
# Where the cut sits, the mixed loss of the key rows (one shared axis across K), each specialist's
# gain on its own domain, and routing accuracy per domain:

# %%
base = exp.base()
counts = {K: param_counts(base, K) for K in sw["ks"]}
n_layer = exp.profile.model.n_layer
for i in range(0, len(sw["ks"]), 4):  # at most four depths per figure
    plot_freeze_grid(sw, n_layer, counts, k_profile=exp.k, ks=sw["ks"][i:i + 4])
    plt.show()


# %% [markdown]
# One depth at a time (in Jupyter or Colab the slider redraws; run headless, it shows the profile's K):

# %%
def show_depth(K):
    plot_freeze_grid(sw, n_layer, counts, k_profile=exp.k, ks=[K])


slider(show_depth, value=min(max(exp.k, min(sw["ks"])), max(sw["ks"])), min=min(sw["ks"]), max=max(sw["ks"]), step=1,
       description="freeze depth K")

# %% [markdown]
# ### KALAVAI's line
#
# KALAVAI reports that the fused gain grows with the specialists' divergence, roughly
# gain = 0.82 × divergence − 2.72 (both in %). Our points (every K of this sweep, plus any other seeds
# and Break 1 controls already on disk for this profile) with a least-squares line:

# %%
fit = sw["fit"]
d_all, g_all = np.array(fit["divergence"]), np.array(fit["gain"])
xs = np.linspace(min(d_all.min(), 0), d_all.max() * 1.1 + 1e-6, 50)
plt.figure(figsize=(6, 3.2))
plt.scatter(d_all, g_all, color="0.6", label="all points")
for p in sw["points"]:
    plt.annotate(f"K={p['k']}", (p["divergence"], p["gain"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
if fit["slope"] is not None:
    plt.plot(xs, fit["slope"] * xs + fit["intercept"], color="tab:purple",
             label=f"fit: {fit['slope']:.2f}·d {fit['intercept']:+.2f}")
plt.plot(xs, kalavai_line(xs), color="black", ls="--", label="KALAVAI: 0.82·d − 2.72")
plt.axhline(0, color="0.7", lw=0.8)
plt.xlabel("divergence (own-domain gain over base), %")
plt.ylabel("fused gain over best specialist, %")
plt.legend(fontsize=7)
plt.show()

# %% [markdown]
# ### Every depth, and freezing nothing
#
# The sweep over every K adds one more point that freezes nothing: each specialist fine-tunes every
# parameter, embeddings included, with its own untied head, so the three share neither a trunk nor
# an output space. They are scored as unshared experts; the router reads the code specialist's own
# embedding output. The `compat` check is asked first (it should refuse), then the point is set
# beside the smallest K. Hidden-state fusion decodes the mixed final states with the code
# specialist's head, which equals logit fusion only when the head is shared. That sweep trains
# three times as many crowns, so it is not run here: it is read from this run's results or, failing
# that, the committed reference results (`python -m minigpt sweep-freeze --every-depth` makes it).

# %%
every = saved_report(exp, "freeze_sweep_every_depth")
if every is None:
    print("no every-depth sweep for this profile and seed: "
          f"python -m minigpt sweep-freeze --profile {exp.profile.name} --seed {exp.seed} --every-depth")
else:
    nz, k0 = every["per_k"]["none"], every["per_k"][str(min(every["ks"]))]
    print(f"compat.check on the nothing-frozen specialists: {nz['compat_refusal'] or 'accepted'}")
    rows = {"fused soft (logits) vs best specialist": "fused_gain_vs_best_specialist_%",
            "fused hidden vs best specialist": "fused_hidden_gain_vs_best_specialist_%",
            "weight average vs best specialist": "weight_average_gain_vs_best_specialist_%",
            "divergence (own domain vs base)": "divergence_%"}
    display(pd.DataFrame({f"K = {min(every['ks'])}": {n: k0[key] for n, key in rows.items()},
                          "none": {n: nz[key] for n, key in rows.items()}}).style.format("{:+.2f}%"))
    plot_freeze_sweep(sweep_frame(every, with_none=True), k_profile=exp.k, mark=every["boundary"]["best_k"])
    plt.show()
    show_markdown(nothing_frozen(every).text)
    show_markdown(nothing_frozen_changes(every, SPECIALIST_ROWS))
    show_markdown(nothing_frozen_methods(nz, HEADLINE))

# %% [markdown]
# ## Checks that hold whatever the run

# %%
for row in SPECIALIST_ROWS:
    assert mixed[ORACLE] <= mixed[row] + 1e-9, f"the oracle cannot lose to the {row}"
assert mixed[ORACLE_PER_TOKEN] <= mixed[ORACLE] + 1e-9
assert b1["compat"]["refusal"] is not None, "the compatibility check must refuse specialists from different bases"
params = sweep_frame(sw)["trainable params"].values
assert np.all(np.diff(params) < 0), "each extra frozen block must leave fewer trainable parameters"
if every is not None:
    assert every["per_k"]["none"]["compat_refusal"] is not None, "no shared trunk: the check must refuse"
acc = res["routing_accuracy"]["per-token"]
for d in DOMAINS:  # the three diagnostics must agree on how many tokens are misrouted
    assert abs(mis.loc[d, "misrouted share"] - (1 - acc[d])) < 1e-5
    assert abs(margins[d]["misrouted"] - (1 - acc[d])) < 1e-5
    assert bool((margins[d]["margin"] >= 0).all()), "the chosen specialist has the largest weight by definition"
print("oracle ≤ every specialist and per-token oracle ≤ per-window oracle; both compatibility refusals; "
      "trainable parameters fall with K; misrouted shares agree with routing accuracy")

# %% [markdown]
# ## Questions to answer
#
# 1. List the baselines the routed fusion beats on mixed held-out data and those still ahead of
#    it. If merged weights win, what would that reveal about the router?
# 2. Measure the oracle gap and the share of the oracle's headroom the router captures. Which is
#    holding the system back here, router or specialists, and what would you change first in either
#    case? Does the gap by position alter your diagnosis?
# 3. Without a shared base, which of the four gives way first (routing accuracy, the fused loss,
#    output calibration, weight averaging), and which of them does the headline number alone show?
#    Take the base-quality controls into account.
# 4. Along the freeze-depth sweep, which wins: a stronger shared interface or more room for the
#    specialists to adapt? Name the depth where the balance tips in this run, and compare your points
#    with KALAVAI's line. What does freezing nothing at all (`none`) do to the fused model, and what
#    would you lose in deployment by fusing specialists that share no trunk?
# 5. Are the router's mistakes confident picks of an unrelated specialist, or near-ties between
#    two specialists that each suit the text in part? Which remedy does your answer point to?
