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
# # 9 · Adding a specialist
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ORG/chapter32-fusion/blob/main/chapters/09_adding_a_specialist.ipynb)
#
# Chapter 32 promises modularity you can test, and its first example is that a specialist can be
# added without retraining the system. This notebook tests it. A fourth team arrives after
# everything else was built: it has Shakespeare's plays, a domain the base never saw in pretraining
# and the tokenizer never saw when it learned its merges. It gets the pinned tokenizer and the frozen
# trunk, trains its own crown exactly as the others did, and the system must make room for it.
#
# The questions: what does the new text look like to a tokenizer that never saw it; how should the
# router learn about a new expert; what does joining cost the three old domains and buy the new one;
# what would retraining one crown on everything have given instead; what happens when the newcomer
# brings a crown from another base; and what does taking a crown away again cost? First, what
# happened in this run:

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
import pandas as pd

from minigpt.claims.join import new_domain, old_domains, other_base, vs_monolithic
from minigpt.exercises import check_grow_router
from minigpt.late_domain import load_documents, texts
from minigpt.notebook import announce, setup, show_markdown, show_source
from minigpt.plots import plot_loss_curves
from minigpt.scoring import fused_row
from minigpt.studies.add_specialist import add_specialist, with_alternatives
from minigpt.studies.add_specialist.growth import GrownRouter

exp = setup(extra=("join",))  # announces the extra training time too
announce(exp, "join")
rep = add_specialist(exp, alternatives=False)  # the new crown and three routers; cached after the first run
alt = with_alternatives(exp, rep)  # a crown from another base, a monolithic crown on four domains
four, late = rep["domains"], rep["late_domain"]
print(f"report written to {rep['out_path']}")

# %%
show_markdown(old_domains(rep, "grown").text)
show_markdown(new_domain(rep).text)
show_markdown(vs_monolithic(alt).text)

# %% [markdown]
# ## 1. New text, old tokenizer (Chapter 32, Step 1)
#
# The tokenizer is pinned: its fingerprint is in every checkpoint, so the newcomer must use it as it
# is. One scene of the new domain, then how many characters each token carries on every domain's
# held-out text. A domain the merges were not learned on is cut into more, shorter tokens:

# %%
print(texts(load_documents(), "eval")[0][:400])

# %%
pd.Series(rep["chars_per_token_eval"], name="characters per token (eval text)").to_frame().style.format("{:.2f}")

# %%
pd.DataFrame(rep["late_splits"]).T.style.format({"characters": "{:,}", "tokens": "{:,}", "chars_per_token": "{:.2f}"})

# %% [markdown]
# ## 2. A crown on the frozen trunk (Chapter 32, Step 2)
#
# The new crown trains on the same frozen trunk, with the same schedule as the other three. The
# fingerprints of the tokenizer, the base and the three old crowns are read before and after:
# joining must not touch them.

# %%
pd.DataFrame({"before": rep["fingerprints_before"], "after": rep["fingerprints_after"]}).map(lambda f: f[:16])

# %%
curves = {f"{m.manifest['domain']} specialist": m.manifest["train_losses"] for m in exp.specialists()}
plot_loss_curves({**curves, f"{late} specialist": rep["new_crown_train_losses"]}, title="crowns on the frozen trunk")
plt.show()
print(f"unchanged: {rep['fingerprints_unchanged']}; the compatibility check accepts the four crowns: "
      f"{rep['compat']['joined']}")

# %% [markdown]
# ## 3. Growing the router
#
# The router has one output per expert. Three ways to give it a fourth:
#
# * **scratch**: train a new four-way router, as the chapter trains its router, on all four domains;
# * **grown**: keep the three trained rows exactly and add one more; only the new row trains, on a
#   little data from the four domains (the old experts keep their scores relative to each other);
# * **prototype**: the same new row, set without any gradient step: it points along the new domain's
#   mean trunk summary, scaled so that it scores its domain the way the old rows score theirs.
#
# Growing is a few lines. The old router's rows read a decaying average of the trunk states; the new
# row reads the same average, and one softmax shares the weight among all four:

# %% exercise="grow_router" tags=["exercise"]
def my_grow_router(old, new_row, new_bias, shared_h):
    """Weights (B, T, N + 1) of `old` (a trained CausalRouter with N rows) grown by one row: the old rows
    score the decaying average of the normalised trunk states as before, the new row scores it too, and
    one softmax shares the weight among all N + 1."""
    raise NotImplementedError("hint: summaries(old, shared_h) is what the rows read; old.proj(s) the old scores; "
                              "s @ new_row + new_bias the new one; torch.cat on the last axis, then softmax")


# %% tags=["check"]
passed = check_grow_router(my_grow_router, exp)

# %% [markdown]
# The package's version, which the study trains (only `new` has gradients):

# %%
show_source(GrownRouter)

# %% [markdown]
# What each way cost to train, and how well each routes the four domains' held-out text (share of
# tokens whose top-weighted expert is the window's own):

# %%
pd.DataFrame({w: {"router steps": c["router_steps"], "router seconds": c["router_seconds"],
                  **{f"{d} routing": rep["routing_accuracy"][w][d] for d in four}}
              for w, c in rep["cost"].items() if w in rep["routing_accuracy"]}).T.style.format("{:.2f}")

# %% [markdown]
# ## 4. What joining costs the old domains and buys the new one
#
# Every model on the same held-out windows of all four domains. "Before" is the chapter's three-crown
# model meeting the plays unprepared; "after" the four-crown model with each router.

# %%
after = pd.DataFrame(rep["tables"]["after"]).T
rows = ["base", *(f"{d} specialist" for d in four), *(fused_row("soft", w) for w in ("scratch", "grown", "prototype"))]
after.loc[rows, [*four, "mixed"]].style.format("{:.4f}")

# %% [markdown]
# On the old domains, after minus before (nats, paired 95 % intervals; "nothing lost" only when the
# whole interval lies below the stated margin):

# %%
pd.DataFrame({w: {d: f"{v['estimate']:+.4f} [{v['low']:+.4f}, {v['high']:+.4f}] {v['verdict']}" for d, v in per.items()}
              for w, per in rep["old_domains"].items()}).T

# %%
for way in ("scratch", "prototype"):
    show_markdown(old_domains(rep, way).text)

# %% [markdown]
# ## 5. A crown from another base
#
# The newcomer fine-tuned its crown from a base of its own (the chapter's Break 1, in a new setting).
# This crown and the four-domain monolithic crown above are five crowns' steps the book does not
# train: both are read from the committed reference run (`add_specialist(exp)` measures them here).

# %%
show_markdown(other_base(alt).text)

# %% [markdown]
# ## 6. Taking one away
#
# Modularity also means removing a module: drop a crown and its router output, and the softmax shares
# the weight among the rest. What each domain loses (nats, paired intervals):

# %%
pd.DataFrame({f"without {n}": {d: f"{v['estimate']:+.4f} [{v['low']:+.4f}, {v['high']:+.4f}]" for d, v in per.items()}
              for n, per in rep["removal"].items()}).T

# %% [markdown]
# ## Checks that hold whatever the run

# %%
assert rep["fingerprints_unchanged"], "joining must not change the tokenizer, the base or the old crowns"
assert rep["compat"]["joined"] and alt["compat"]["other_base_refusal"] is not None
assert rep["cost"]["prototype"]["router_steps"] == 0
for name, per in rep["removal"].items():  # taking a crown away hurts its own domain first
    own = per[name]["estimate"]
    assert own >= max(v["estimate"] for d, v in per.items() if d != name) - 1e-9, name
print("fingerprints unchanged, the joined set accepted and the other base refused; removing a crown costs its own domain most")

# %% [markdown]
# ## Questions to answer
#
# 1. How many characters does a token carry on the new domain against the old ones, and why? What
#    would that do to a fair comparison of losses across domains?
# 2. Which way of growing the router would you ship: the cheapest that loses nothing on the old
#    domains, or the one that routes the new domain best? Use the intervals.
# 3. Is "add a specialist without retraining" true here? Say what was retrained (router? crowns?),
#    what the old domains lost, and what the new one gained.
# 4. Against retraining one crown on all four domains: when would you still pick joining?
# 5. The crown from another base passes every check but one. What does it do to the system, and
#    would a retrained router have saved it?
