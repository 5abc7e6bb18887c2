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
# # 6 · Break 1: specialists from different bases
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ORG/chapter32-fusion/blob/main/chapters/06_break1_different_bases.ipynb)
#
# Companion to Chapter 32, Break 1. Instead of copying one base three times, each specialist starts
# from its own base: the code specialist from base X (the chapter's run with seed 0), the medical and
# legal ones from base Y (seed 1's run). Same architecture, same tokenizer, same data and steps; only
# the pretrained starting point differs.
#
# The chapter predicts a silent degradation: routing gets worse, fusion falls behind its own best
# specialist and behind the oracle, the outputs are calibrated worse, weight averaging fails. To
# measure what the *break* changes, and not which base happened to train better, every number is
# measured within a set first (the fused model against its own base, its own best specialist, its
# own oracle) and then compared with **controls**: the chapter's shared-base pipeline on each of
# both bases. The *matched* control is the one on base X, whose trunk the router reads.
#
# What happened in this run:

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
import warnings

import matplotlib.pyplot as plt
import pandas as pd

from minigpt import compat
from minigpt.analysis.calibration import reliability_bins
from minigpt.claims.break1 import confound, headline, prediction, predictions, why
from minigpt.config import DOMAINS
from minigpt.exercises import check_compatible
from minigpt.notebook import announce, setup, show_markdown, show_source
from minigpt.plots import plot_cka_blocks, plot_confusion, plot_matched, plot_per_byte, plot_reliability
from minigpt.scoring import ORACLE, SHARED_TRUNK, SPECIALIST_ROWS, fused_row
from minigpt.studies.break1 import PREDICTIONS, break1, seed_run, with_tokenizer_case

exp = setup(extra=("break1",))  # announces the extra training time too
k = exp.k
announce(exp, "break1")
# trains (or loads) base Y, its specialists and every router, then measures
rep = break1(exp, tokenizer_case=False)  # the tokenizer case is read under Going further
S, D = rep["shared"], rep["different"]  # the matched control (shared base X) and the different-base set
X = SHARED_TRUNK  # "trunk of base X": what the headline router reads
print(f"base seeds (code, medical, legal): {rep['base_seeds']}; {rep['wall_seconds']:.0f} s; "
      f"report written to {rep['out_path']}")

# %%
show_markdown(predictions(rep).text)
show_markdown(headline(rep).text)
show_markdown(confound(rep).text)

# %% [markdown]
# ## 1. The compatibility check refuses (Chapter 32, Step 1)
#
# Before fusing anything, `compat.check` compares what the specialists must share: the
# architecture, the tokenizer fingerprint, the base checkpoint's fingerprint and the frozen trunk
# tensors, in that order, and stops at the first mismatch:

# %% [markdown]
# Write the check yourself first: the tokenizer fingerprint and the base fingerprint each specialist's
# checkpoint records (`m.manifest`), then the trunk tensors themselves (`m.trunk_parameters(k)`), which
# catch a crown whose trunk was trained after all.

# %% exercise="compatible" tags=["exercise"]
def my_compatible(specialists, k):
    """True when the specialists can be fused at freeze depth k: the same tokenizer fingerprint and
    the same base fingerprint in every manifest, and every trunk tensor identical."""
    raise NotImplementedError("hint: compare m.manifest['tokenizer_fingerprint'] and m.manifest['base_fingerprint'] "
                              "with the first model's, then torch.equal on each tensor of m.trunk_parameters(k)")


# %% tags=["check"]
passed = check_compatible(my_compatible, exp)

# %% [markdown]
# The package's check does the same in a fixed order and says which test failed first:

# %%
show_source(compat.check)

# %%
different = [seed_run(exp, s).specialist(d) for d, s in zip(DOMAINS, rep["base_seeds"])]
try:
    compat.check(different, k)
    refusal = None
except compat.CompatibilityError as err:
    refusal = err
    print(f"{type(err).__name__}: {err}")
assert refusal is not None, "specialists fine-tuned from different bases must be refused"
assert str(refusal) == rep["compat"]["refusal"]

# %% [markdown]
# Nothing about these three models looks wrong on its own: same shapes, same tokenizer, each one
# trained normally. The check refuses because their *ancestry* differs. To run the break we opt out
# explicitly; the check then warns instead and lists every mismatch:

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    forced = compat.check(different, k, allow_mismatch=True)
for w in caught:  # the message the check gives, shown as part of the lesson
    print(f"the check warns ({w.category.__name__}): {w.message}")
pd.DataFrame(forced["checks"])[["check", "ok", "detail"]].style.hide(axis="index")

# %%
healthy = compat.check(exp.specialists(), k)
print(f"shared-base specialists: ok = {healthy['ok']} ({healthy['checks'][-1]['detail']})")
assert healthy["ok"] and {"base", "trunk"} <= set(forced["mismatches"]) and "tokenizer" not in forced["mismatches"]

# %% [markdown]
# ## 2. How alike are the two bases?
#
# The comparison is only about geometry if the bases are equally good. Each base alone, on the
# held-out windows:

# %%
bases = pd.DataFrame(rep["base_losses"]).T.rename(index=lambda s: f"base seed {s}")[list(DOMAINS)]
bases["mixed"] = bases.mean(axis=1)
bases.style.format("{:.4f}")

# %% [markdown]
# The confound check above compares their spread with the change the break makes to the headline,
# both in nats.
#
# ## 3. Each set against itself, then against its controls
#
# One row per prediction of the chapter. Each metric is computed inside a set, so a better or worse
# base cancels out of it: the fused model's gain over **its own** router's base and over **its own**
# best specialist (nats, positive: fusion helps), its routing accuracy, its gap to **its own**
# oracle, the calibration error of its fused outputs, and weight averaging minus output averaging of
# the **same** specialists. Then the different-base set is compared window by window with the matched
# control and with the mean of the controls (paired 95 % intervals).

# %%
matched = pd.DataFrame([{"prediction": r["prediction"], "different bases": r["different"],
                         "matched control": r["matched_control"], "mean of controls": r["mean_of_controls"],
                         "change vs matched": r["vs_matched"]["estimate"],
                         "95% interval": f"[{r['vs_matched']['low']:+.4f}, {r['vs_matched']['high']:+.4f}]",
                         "outcome": r["outcome"]} for r in rep["matched"]],
                       index=[r["metric"] for r in rep["matched"]])
matched.style.format("{:.4f}", subset=["different bases", "matched control", "mean of controls"]).format(
    "{:+.4f}", subset=["change vs matched"])

# %%
plot_matched(rep["matched"])
plt.show()

# %%
for metric in PREDICTIONS:  # what was measured, then why it came out that way
    show_markdown(f"{prediction(rep, metric).text} {why(rep, metric).text}")

# %% [markdown]
# ## 4. What the router reads when there is no shared trunk
#
# Without a shared prefix there is no single state to route from. The chapter lists the ways
# around it; here the same per-token router is trained on each (same config, initialisation and
# batches): base X's trunk, the three trunks concatenated, base X's token embeddings, and a
# classifier that reads no model at all (each token id hashed into a bucket: a bag of the recent
# tokens, a stand-in for routing on cheap metadata).

# %%
pd.DataFrame(rep["router_inputs"]).T.style.format("{:.4f}").format(
    "{:.1%}", subset=["routing accuracy", "oracle agreement"])

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.3))
for ax, (name, R) in zip(axes, (("matched control", S), ("different bases", D))):
    plot_confusion(pd.DataFrame(R["confusion"][X]).T.loc[list(DOMAINS)], ax=ax, title=f"{name}: router on {X}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 5. Do the representations line up? CKA between trunks
#
# Two numbers per pair of models, on the same held-out tokens:
#
# * **linear CKA** — do the two sets of hidden states carry the same information, *up to a rotation
#   and a scale*? 1 means identical up to rotation, near 0 unrelated.
# * **paired cosine** — do the raw coordinates agree, token by token? A rotation sends it to ~0.
#
# Fusing predictions needs neither. Averaging weights or mixing hidden states needs the second.

# %%
plot_cka_blocks(rep["representations"])
plt.show()
reps = pd.DataFrame({name: {"mean CKA": b["mean_cka"], "mean paired cosine": b["mean_paired_cosine"]}
                     for name, b in rep["representations"].items()}).T
reps.style.format("{:+.3f}")

# %%
shared_final = rep["representations"]["final hidden (shared-base specialists)"]
diff_final = rep["representations"]["final hidden (different-base specialists)"]
print(f"final hidden states of the specialists: CKA {shared_final['mean_cka']:.3f} (shared) vs "
      f"{diff_final['mean_cka']:.3f} (different); paired cosine {shared_final['mean_paired_cosine']:+.3f} vs "
      f"{diff_final['mean_paired_cosine']:+.3f}")
assert shared_final["mean_paired_cosine"] > diff_final["mean_paired_cosine"], \
    "crowns on one shared trunk should keep more aligned coordinates than crowns on unrelated bases"

# %% [markdown]
# ## Going further
#
# ### Calibration, as reliability diagrams
#
# Every held-out token's top-1 prediction falls in a confidence bin; each point is a bin's mean
# confidence against the share of its predictions that were right. On the dashed diagonal a model is
# as sure as it is right. The fused row's calibration error is the number the matched comparison used.

# %%
bins = {name: {s: reliability_bins(rep["_raw"][key].stats[s]) for s in [*SPECIALIST_ROWS, fused_row("soft", X)]}
        for name, key in (("matched control", rep["matched_control"]), ("different bases", "different"))}
plot_reliability(bins)
plt.show()

# %% [markdown]
# ### A tokenizer mismatch
#
# The case from Chapter 32, Step 1: everything matches except the tokenizer. The legal specialist
# is trained from the *same* base, with the same steps, but on text encoded by another BPE
# tokenizer of the same size (learned on different text). Shapes, base fingerprint and trunk
# tensors all agree; only the meaning of the token ids differs. That specialist is one more crown
# to train, so the book reads this case from the committed reference run where there is one
# (`tokenizer_mismatch(exp)` measures it here).

# %%
tm = with_tokenizer_case(exp, rep)["tokenizer_mismatch"]
print(f"{tm['ids_with_same_string']:.1%} of the {exp.profile.model.vocab_size} ids decode to the same string "
      "in both tokenizers")
print(f"compat.check: {tm['compat']['refusal']}")
pd.DataFrame(tm["compat"]["forced_report"]["checks"])[["check", "ok", "detail"]].style.hide(axis="index")

# %% [markdown]
# Losses per token cannot be compared across tokenizers (a token is a different amount of text), so
# the table also gives nats per byte of decoded text. The second row is what fusion does to this
# specialist: it is fed ids from the shared tokenizer, which it reads as other strings.

# %%
tl = pd.DataFrame(tm["losses"]).T[["per_token", "per_byte", "bytes_per_token"]]
tl.style.format("{:.4f}")

# %%
plot_per_byte(tl, xlabel=f"nats per byte on {tm['domain']} text (axis zoomed)")
plt.show()
fm = tm["fused_mixed"]
print(f"fused mixed loss: healthy set {tm['healthy_fused_mixed']:.4f}; with the mismatched legal specialist "
      + ", ".join(f"{r} {v:.4f}" for r, v in fm.items()))
pd.DataFrame(tm["weight_on_mismatched"]).T.style.format("{:.2f}").set_caption(
    "mean weight on the mismatched specialist, per eval domain")

# %%
checks_tm = {c["check"]: c["ok"] for c in tm["compat"]["forced_report"]["checks"]}
assert tm["compat"]["refusal"] is not None and not checks_tm["tokenizer"]
assert checks_tm["architecture"] and checks_tm["base"] and checks_tm["trunk"], \
    "the tokenizer case changes nothing but the tokenizer"

# %% [markdown]
# ## Checks that hold whatever the run
#
# With a shared base the output head is shared and linear, so mixing final hidden states and mixing
# logits give the same loss; the oracle never loses to a specialist of its own set; and averaging
# *all* parameters of independently pretrained models hurts more than averaging crowns of one base.

# %%
print(f"matched control: largest token difference, hidden-state vs logit fusion {rep['hidden_vs_logit_fusion_max_diff']:.2e} nats")
assert rep["hidden_vs_logit_fusion_max_diff"] < 1e-3
for R in (S, D):
    assert all(R["mixed"][ORACLE] <= R["mixed"][s] + 1e-9 for s in SPECIALIST_ROWS)
print(f"weight averaging: matched control {S['mixed']['weight average']:.4f}, different {D['mixed']['weight average']:.4f}")
assert D["mixed"]["weight average"] > S["mixed"]["weight average"]
shared_final = rep["representations"]["final hidden (shared-base specialists)"]
diff_final = rep["representations"]["final hidden (different-base specialists)"]
assert shared_final["mean_paired_cosine"] > diff_final["mean_paired_cosine"], \
    "crowns on one shared trunk should keep more aligned coordinates than crowns on unrelated bases"

# %% [markdown]
# ## Questions to answer
#
# 1. Which of `compat.check`'s four checks fails for the different-base specialists, and which for
#    the tokenizer case? Why check the tokenizer before the base, and the base fingerprint before
#    comparing trunk tensors?
# 2. Chapter 32, question 3: which of the chapter's predictions held here, which reversed, and which
#    would you have caught from the headline mixed loss alone?
# 3. For each prediction that reversed, what in the numbers explains it? (Hint: compare what each
#    set's oracle and best specialist can offer, not only the fused model.)
# 4. Which router input comes closest to the matched control's routing? Does any of them restore it?
# 5. CKA between the trunks of different bases is far from zero, yet their paired cosine is near
#    zero. What does that pair tell you, and which ways of combining the specialists does it
#    predict will fail?
