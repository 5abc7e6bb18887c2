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
# # 1 · One shared trunk
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ORG/chapter32-fusion/blob/main/chapters/01_shared_trunk.ipynb)
#
# Companion to Chapter 32, Steps 1 and 2. Before any specialist exists, everything the three of
# them will have in common is fixed here: the text they learn from, the tokenizer that turns it
# into ids, the pretrained base they are copied from, and the part of that base (the *trunk*)
# that none of them may change.
#
# The notebook trains nothing it can load: every model comes from the `minigpt` package's cache
# and is trained there on first use.

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
from IPython.display import display

from minigpt.analysis.crowns import loss_trend, param_counts
from minigpt.config import DOMAINS
from minigpt.data import chars_per_token, corpus_stats, domain_texts
from minigpt.experiment import Experiment
from minigpt.model import GPT
from minigpt.notebook import setup, show_source, slider
from minigpt.plots import plot_loss_curves, plot_seed_curves, plot_trunk_crown
from minigpt.studies.base_schedule import reference as base_schedule_reference
from minigpt.tokenizer import fingerprint, train_tokenizer

exp = setup()  # MINIGPT_PROFILE picks the scale; the default is "cpu"

# %% [markdown]
# ## 1. Three domains of real text
#
# The corpora are built on your machine from things `pip` can fetch: Python's own standard
# library (code), the Human Phenotype Ontology and ICD-10-CM (medical definitions), and licence
# texts plus EU regulations (legal). Documents, not lines, are assigned to the five splits, so
# no document leaks from the text a model trained on into the text it is evaluated on:
#
# | split | used by |
# |---|---|
# | `pretrain` | the shared base (and the tokenizer) |
# | `specialist` | the three crowns (notebook 2) |
# | `router` | the router (notebook 3) |
# | `dev` | every choice the book makes (schedules, freeze depth, router settings), never a reported number |
# | `eval` | every row of the final table (notebook 5); never used to choose anything |

# %%
stats = corpus_stats(exp.corpus)
stats

# %% [markdown]
# One short document from each domain's held-out split, cut to a few lines:

# %%
for domain in DOMAINS:
    texts = domain_texts(exp.corpus, domain, "eval")
    sample = next((t for t in texts if 150 <= len(t) <= 3000), texts[0])
    print(f"── {domain} " + "─" * 60)
    print(sample[:350].rstrip() + (" …" if len(sample) > 350 else ""))
    print()

# %% [markdown]
# The tokenizer turns each split into one long stream of token ids per domain (documents joined
# by an end-of-text token). Characters per token shows how well one shared vocabulary fits each
# domain: a domain the merges suit well packs more characters into every token. (Token counts
# include the one end-of-text token added after each document.)

# %%
print("tokens per split and domain:")
display(pd.DataFrame(exp.streams.tokens()).T[list(DOMAINS)])
print("characters per token:")
display(chars_per_token(exp.corpus, exp.streams.tokens()).round(2))

# %% [markdown]
# ## 2. One tokenizer, pinned by a fingerprint (Chapter 32, Step 1)
#
# A token id is only a row number in an embedding table. Two models can share an architecture
# and still disagree about what row 317 means if their tokenizers differ. So the tokenizer is
# learned once (byte-level BPE, on equal amounts of pretrain text from each domain) and every
# checkpoint records its fingerprint: a sha256 of the tokenizer's canonical JSON.
#
# Here is how a line from each domain is cut into tokens, and which string each id stands for:

# %%
tok = exp.tokenizer
examples = {"code": "def add(a, b):\n    return a + b",
            "medical": "Hypoplasia of the kidney: underdevelopment of the renal tissue.",
            "legal": "The licensee shall not sublicense the Software."}
for domain, text in examples.items():
    enc = tok.encode(text)
    print(f"{domain:8s} {len(text)} characters -> {len(enc.ids)} tokens")
    print("   " + " | ".join(f"{i}:{tok.decode([i])!r}" for i in enc.ids))

# %%
print("tokenizer fingerprint:", exp.tokenizer_fingerprint)
base = exp.base()
print("recorded in the base checkpoint:", base.manifest["tokenizer_fingerprint"])

# %% [markdown]
# The fingerprint changes whenever the vocabulary or the merges do. Below, a second tokenizer
# with the *same* vocabulary size is learned on code alone. Same shape, same ids available, but
# the ids it assigns to the same sentence are different, and so is its fingerprint. A model
# trained with one of them and fused with a model trained with the other would be reading
# different text under the same numbers.

# %%
code_only = train_tokenizer([t[:20_000] for t in domain_texts(exp.corpus, "code", "pretrain")[:40]],
                            exp.profile.model.vocab_size)
roundtrip = type(tok).from_str(tok.to_str())  # what loading a saved copy gives back
sentence = examples["legal"]
print(f"shared    : {tok.encode(sentence).ids}")
print(f"code-only : {code_only.encode(sentence).ids}")
print(f"fingerprints: shared {fingerprint(tok)[:16]}…, code-only {fingerprint(code_only)[:16]}…, "
      f"reloaded shared {fingerprint(roundtrip)[:16]}…")

assert fingerprint(code_only) != exp.tokenizer_fingerprint, "a different tokenizer must get a different fingerprint"
assert fingerprint(roundtrip) == exp.tokenizer_fingerprint, "saving and loading must not change the fingerprint"
assert base.manifest["tokenizer_fingerprint"] == exp.tokenizer_fingerprint

# %% [markdown]
# ## 3. Pretraining the base
#
# The base sees equal parts of the three domains' pretrain split and trains every parameter.
# This is the one checkpoint all three specialists will be copied from.

# %%
show_source(Experiment.base)

# %%
losses = base.manifest["train_losses"]
plot_loss_curves({"base": losses}, title=f"base pretraining ({exp.profile.name} profile)")
plt.show()
first, last = loss_trend(losses)
print(f"{len(losses)} steps in {base.manifest['train_seconds']:.0f} s; "
      f"mean loss first 10% of steps {first:.3f}, last 10% {last:.3f} nats/token")
assert last < first, "the base's training loss should go down"

# %% [markdown]
# ### One configuration, five seeds
#
# Train the same base five times, changing only the seed, and you might expect five copies of one
# curve. With the schedule this book started with (a 50-step warmup) that is not what happened: the
# seeds split into two groups far apart (left panel below) and never met again. The order of the batches
# decided which group a seed joined, and the groups differ in the first block's attention: broad
# heads that average the whole prefix in the better group, sharp heads on a few recent tokens in the
# worse. A longer warmup lets every seed find the broad heads before the learning rate is high. The
# warmup was chosen on the dev split (`python -m minigpt base-schedule`, five seeds per candidate;
# docs/design.md, "The base"). Below, the committed reference run: the old warmup and the chosen one.

# %%
schedule = base_schedule_reference()
if schedule is None:
    print("no reference results in this installation; run `python -m minigpt base-schedule --profile cpu` to make them")
else:
    plot_seed_curves(schedule, [min(c["warmup"] for c in schedule["candidates"]), schedule["chosen_warmup"]])
    plt.show()
    display(pd.DataFrame({c["warmup"]: {"dev mean": c["dev_mean"], "dev sd": c["dev_sd"], "eval mean": c["eval_mean"],
                                        "eval sd": c["eval_sd"], "seconds per base": c["train_seconds_mean"]}
                          for c in schedule["candidates"]}).T.rename_axis("warmup steps").round(4))
    print("first block's attention, share of its maximum entropy (1 = an average over the whole prefix), per head:")
    display(pd.DataFrame({(c["warmup"], s): r["layer0_attention_entropy"] for c in schedule["candidates"]
                          for s, r in c["seeds"].items()}).T.rename_axis(["warmup", "seed"]).round(2))

# %% [markdown]
# ## 4. Freezing K blocks: trunk and crown (Chapter 32, Step 2)
#
# The model is cut in two at depth K. The **trunk** is the token and position embeddings plus
# the first K transformer blocks; it stays frozen in every specialist, so its output means the
# same thing in all of them. The **crown** is everything above it — the remaining blocks and the
# final LayerNorm — and each specialist trains its own.
#
# One design choice to notice: the output head is *tied* to the token embedding (the same
# matrix, transposed). Because the embedding belongs to the frozen trunk, the head is frozen
# too, and every specialist turns its last hidden state into next-token scores with exactly the
# same matrix. Each crown has its own final LayerNorm; nothing from one specialist is borrowed
# by another.

# %%
show_source(GPT.trunk_parameters)
show_source(GPT.crown_parameters)

# %%
n_layer = exp.profile.model.n_layer
counts = pd.DataFrame({k: param_counts(base, k) for k in range(n_layer + 1)}).T.rename_axis("K")
counts["trained share"] = (counts["crown (trained)"] / counts["total"]).round(3)
# three specialists stored as one trunk + three crowns, against three full copies
counts["3 specialists, shared trunk"] = counts["trunk (frozen)"] + 3 * counts["crown (trained)"]
counts["3 full copies"] = 3 * counts["total"]
print(f"this profile freezes K = {exp.k}")
counts

# %%
for k, row in counts.iterrows():
    assert row["trunk (frozen)"] + row["crown (trained)"] == base.num_params(), "trunk and crown must partition the model"
assert counts["trunk (frozen)"].is_monotonic_increasing

# %% [markdown]
# Every possible cut, side by side (grey and hatched: frozen and shared; coloured: trained
# separately for each domain):

# %%
ncols = min(n_layer + 1, 5)
nrows = -(-(n_layer + 1) // ncols)
fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, (0.45 * (n_layer + 3) + 1) * nrows), squeeze=False)
for k, ax in enumerate(axes.flat):
    if k <= n_layer:
        plot_trunk_crown(n_layer, k, DOMAINS, ax=ax, counts=param_counts(base, k), compact=True)
    else:
        ax.axis("off")
fig.suptitle("crowns: blue = code, red = medical, green = legal; grey = frozen trunk and tied head", fontsize=9)
fig.tight_layout()
plt.show()


# %% [markdown]
# And one cut at a time: move the slider (in Jupyter or Colab) to change K. Run headless, the
# cell draws the profile's own K once.

# %%
def draw_cut(K):
    plot_trunk_crown(n_layer, K, DOMAINS, counts=param_counts(base, K))
    plt.show()


slider(draw_cut, value=exp.k, min=0, max=n_layer, description="K (frozen blocks)")

# %% [markdown]
# ## Questions to answer
#
# 1. Which domain gets the most characters per token from the shared tokenizer, and which the
#    fewest? What would you expect to happen to a domain that was left out of tokenizer
#    training, even if the model later trained on it?
# 2. The fingerprint pins the tokenizer. Name a change that alters it, and one operation that
#    must leave it unchanged. Why is a hash safer than checking that two vocabularies have the
#    same size?
# 3. At this profile's K, what share of the parameters does each specialist train, and how much
#    smaller is "one trunk + three crowns" than three independent copies?
# 4. The head is tied to the frozen embedding. What would change for fusion if every specialist
#    trained its own output head?
# 5. Chapter 32, question 4, as a prediction: if you freeze more blocks, does composition get
#    easier (a stronger shared interface) or harder (less room to specialise)? Write down the K
#    you expect to be the boundary; notebook 8 measures it.
