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
# # Instructor answers · notebooks 1, 2, 3 and 5
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ORG/chapter32-fusion/blob/main/chapters/answers/answers_01_05.ipynb)
#
# Answers to the "Questions to answer" of notebooks 1 (shared trunk), 2 (three crowns),
# 3 (router) and 5 (oracle gap). Every number below is measured in this run, with the same
# profile and seed the reader used, and the wording follows the numbers: rerun at another
# profile or seed and the answers change with them. References like *nb 2 §3* point to the
# section of the reader's notebook whose cell shows the evidence. The last section holds the
# solutions to the exercises of notebooks 2 to 5.

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
import numpy as np

from minigpt.analysis.conclusions import (accuracy_loss_inversion, bottleneck_diagnosis, headline_conclusion,
                                         misrouting_verdict, per_token_oracle_note, target_comparison)
from minigpt.analysis.crowns import crown_drift, param_counts
from minigpt.analysis.routing import best_specialist_share, confusion_matrix
from minigpt.analysis.table import oracle_headroom
from minigpt.chapter import chapter_table
from minigpt.config import DOMAINS
from minigpt.data import chars_per_token, domain_texts
from minigpt.notebook import setup, show_markdown
from minigpt.scoring import HEADLINE, ORACLE, SPECIALIST_ROWS
from minigpt.studies.ceiling import routing_ceiling
from minigpt.studies.router_targets import compare_router_targets, router_windows, target_sharpness
from minigpt.tokenizer import fingerprint, train_tokenizer

exp = setup()
base, specialists = exp.base(), exp.specialists()
res = chapter_table(exp)  # the full table of notebook 5; its cross-domain matrix is notebook 2's heatmap
table, mixed, matrix = res["table"], res["table"]["mixed"], res["cross_domain"]
summary, scores_r = compare_router_targets(exp, ("domain", "performance"), kind="last_token")
share = best_specialist_share(res["nll"])
k, n_layer = exp.k, exp.profile.model.n_layer
print(f"answers computed for profile {exp.profile.name!r}, seed {exp.seed}, K = {k}")

# %% [markdown]
# ## Notebook 1 · One shared trunk

# %%
cpt = chars_per_token(exp.corpus, exp.streams.tokens()).loc["pretrain"]
hi, lo = cpt.idxmax(), cpt.idxmin()
ratio = cpt[hi] / cpt[lo]
spread = (f"the shared tokenizer treats the domains almost evenly: {hi} gets {cpt[hi]:.2f} characters per "
          f"token and {lo} {cpt[lo]:.2f} ({ratio - 1:.0%} apart)" if ratio < 1.1 else
          f"{hi} packs the most text into each token ({cpt[hi]:.2f} characters) and {lo} the least "
          f"({cpt[lo]:.2f}), {ratio - 1:.0%} apart")
show_markdown(f"""**1.1** On the pretrain split (nb 1 §1, characters per token), {spread}. The merges were
learned on equal amounts of text per domain, so none is starved. A domain left out of tokenizer
training would be cut into short, generic pieces: more tokens for the same text, so a fixed context
window covers less of it, every prediction carries less meaning, and its frequent words never get
tokens of their own for the embedding to specialise on.""")

# %%
vocab = exp.profile.model.vocab_size
code_only = train_tokenizer([t[:20_000] for t in domain_texts(exp.corpus, "code", "pretrain")[:40]], vocab)
sentence = "The licensee shall not sublicense the Software."
ids_a, ids_b = exp.tokenizer.encode(sentence).ids, code_only.encode(sentence).ids
same_pos = sum(a == b for a, b in zip(ids_a, ids_b))
show_markdown(f"""**1.2** Any change to the vocabulary or the merges changes the fingerprint: a different vocabulary
size, different training text (nb 1 §2: a code-only tokenizer with the same {vocab} entries has
fingerprint `{fingerprint(code_only)[:12]}…` against `{exp.tokenizer_fingerprint[:12]}…`), a different
pre-tokenizer or special tokens. Saving and reloading must leave it unchanged, and it does (the
notebook asserts it). Comparing sizes is not enough: both tokenizers above have {vocab} entries, yet
the same legal sentence becomes {len(ids_a)} tokens with one and {len(ids_b)} with the other, and only
{same_pos} of the first {min(len(ids_a), len(ids_b))} positions carry the same id. Two models that disagree like this can both look healthy; fused,
they would be voting on different strings under the same numbers.""")

# %%
c = param_counts(base, k)
stored, copies = c["trunk (frozen)"] + 3 * c["crown (trained)"], 3 * c["total"]
show_markdown(f"""**1.3** At K = {k} each crown trains {c['crown (trained)']:,} of {c['total']:,} parameters
({c['crown (trained)'] / c['total']:.0%}; nb 1 §4 table). One trunk plus three crowns is {stored:,}
parameters against {copies:,} for three full copies, {1 - stored / copies:.0%} fewer. The embedding
table (and so the tied head) is a large share of the trunk at this size
({base.transformer.wte.weight.numel():,} parameters), which is why even K = 0 saves something.""")

# %%
show_markdown("""**1.4** With the head tied to the frozen embedding, every crown ends in the same linear map
from hidden state to vocabulary scores, so logits from different crowns are directly comparable and
a weighted sum of them (Step 4) is well defined; it even equals applying the shared head once to the
weighted sum of the crowns' final hidden states. With a head per specialist each crown could rescale
or rotate its output space freely: the same logit value would mean different confidence in different
specialists, so logit fusion would mix incompatible scales — a calibration mismatch that the router
cannot see from the trunk.""")

# %%
counts = {kk: param_counts(base, kk) for kk in range(n_layer + 1)}
show_markdown(f"""**1.5** A prediction, to be checked against notebook 8's freeze-depth sweep. The trained share
of each crown falls from {counts[0]['crown (trained)'] / counts[0]['total']:.0%} at K = 0 to
{counts[n_layer]['crown (trained)'] / counts[n_layer]['total']:.1%} at K = {n_layer} (only the final
LayerNorm). The router always reads the trunk output, so a deeper cut gives it a more processed,
more domain-aware input while leaving the crowns less room to specialise; at K = {n_layer} only the
specialists' final LayerNorms can differ, so there is almost nothing left to fuse. A good answer names a K in between and
says which of the two effects it expects to dominate.""")

# %% [markdown]
# ## Notebook 2 · Three crowns

# %%
lines, all_win = [], True
spread_base = matrix.loc["base"].max() - matrix.loc["base"].min()
for d in DOMAINS:
    row = f"{d} specialist"
    wins = matrix[d].idxmin() == row
    all_win &= wins
    lines.append(f"{d}: {matrix.loc[row, d]:.3f} vs base {matrix.loc['base', d]:.3f} "
                 f"(gain {matrix.loc['base', d] - matrix.loc[row, d]:+.3f}){'' if wins else ', not the lowest in its column'}")
gains = [matrix.loc["base", d] - matrix.loc[f"{d} specialist", d] for d in DOMAINS]
size = ("small next to" if max(gains) < 0.5 * spread_base else "comparable to" if max(gains) < 2 * spread_base
        else "large next to")
show_markdown(f"""**2.1** {'Yes: every' if all_win else 'Not every'} specialist has the lowest loss in its own column
(nb 2 §3, boxed cells): {'; '.join(lines)}. The gains ({min(gains):.3f}–{max(gains):.3f} nats) are {size}
how much the base's own loss differs between domains ({spread_base:.3f} nats), so specialisation
{'moves the numbers by less than the domains differ in difficulty' if size == 'small next to' else 'is a real effect at this scale'}.""")

# %%
off = {}
for d in DOMAINS:
    row = f"{d} specialist"
    others = [o for o in DOMAINS if o != d]
    worst = max(others, key=lambda o: matrix.loc[row, o] - matrix.loc["base", o])
    off[row] = (worst, matrix.loc[row, worst] - matrix.loc["base", worst])
row, (dom, cost) = max(off.items(), key=lambda kv: kv[1][1])
why = ("Code and natural-language prose share little beyond punctuation and common English words; a "
       "crown tuned to one of them spends its capacity on token statistics the other never uses."
       if "code" in (row.split()[0], dom) else
       "Both domains are English prose, so the cost comes from register and vocabulary (terminology, "
       "sentence templates) rather than from the writing system.")
listing = "; ".join(f"{r} → {w} ({c:+.3f})" for r, (w, c) in off.items())
show_markdown(f"""**2.2** Worst off-domain cost per specialist (loss minus base, nb 2 §3 bars): {listing}. The
largest is the {row} on {dom} text, {cost:+.3f} nats{'' if cost > 0 else ' — which is not a loss at all: at this scale no specialist pays for specialising'}. {why}""")

# %%
best_nowhere = all(matrix.loc[[f"{d} specialist" for d in DOMAINS], d].min() < matrix.loc["base", d] for d in DOMAINS)
regret = {d: matrix.loc["base", d] - matrix[d].min() for d in DOMAINS}
base_worst = [d for d in DOMAINS if matrix[d].idxmax() == "base"]
show_markdown(f"""**2.3** {'Yes.' if best_nowhere else 'No.'} {'In every column a specialist is below the base' if best_nowhere
else 'In at least one column no specialist beats the base'} (nb 2 §3 heatmap, base row against the boxed cells); the
base's distance to the best model per domain is {', '.join(f'{d} {v:.3f}' for d, v in regret.items())} nats.
{'It is the worst model in no column: having seen all three domains, it is a row of middling colours — decent everywhere.'
 if not base_worst else 'It is the worst model on ' + ', '.join(base_worst) + ', so "decent everywhere" does not hold there.'}""")

# %%
from minigpt.checkpoint import trunk_hash  # noqa: E402

identical = all(trunk_hash(m, k) == trunk_hash(base, k) for m in specialists)
show_markdown(f"""**2.4** The trunks are {'bit-identical' if identical else 'NOT identical (something is wrong with this run)'}
(nb 2 §4: equal hashes, `torch.equal` on every tensor, the same hidden state on held-out text). So the router's input,
computed once, is exactly what each crown receives: one coordinate system, no drift between specialists. It does not
guarantee that the crowns' *outputs* are comparable: each crown can become more or less confident (sharper or flatter
logits) or better or worse calibrated, and a logit-weighted mixture inherits those differences. Shared inputs make
routing possible; they do not make fusion automatically good.""")

# %%
trend = {}
for m in specialists:
    L = m.manifest["train_losses"]
    n = max(1, len(L) // 10)
    trend[m.manifest["domain"]] = (float(np.mean(L[-2 * n:-n])), float(np.mean(L[-n:])))
falling = [d for d, (a, b) in trend.items() if b < a - 0.01]
drift = crown_drift(base, specialists)
first = f"block {k}" if k < n_layer else "ln_f"
show_markdown(f"""**2.5** Over the last fifth of training (nb 2 §2) the specialists' losses moved
{', '.join(f'{d} {a:.3f} → {b:.3f}' for d, (a, b) in trend.items())}:
{('still falling by more than 0.01 nats for ' + ', '.join(falling) + ', so more crown steps would buy more specialisation there') if falling else
 'flat within noise, so more steps at this learning rate would buy little'}. The crowns moved
{drift.loc[first].min():.2f}–{drift.loc[first].max():.2f} (relative) in {first}, the first trainable part.
More specialisation widens the gap between the specialists, which raises the oracle's headroom (nb 5), but it also
makes each worse off-domain, so a router mistake costs more: fusion gains only if routing keeps up.""")

# %% [markdown]
# ## Notebook 3 · The router

# %%
acc, soft = summary["accuracy (mean)"], summary["fused soft, mixed"]
verdict = target_comparison(acc[["domain", "performance"]].to_dict(), soft[["domain", "performance"]].to_dict())
show_markdown(f"""**3.1** Mean routing accuracy: domain targets {acc['domain']:.1%}, performance targets
{acc['performance']:.1%}; fused soft mixed loss {soft['domain']:.4f} and {soft['performance']:.4f} (nb 3 §3).
{verdict}""")

# %%
disagree = {d: 1 - v for d, v in share.items()}
if max(disagree.values()) < 0.02:
    txt = ("On these held-out windows the domain's own specialist is the best one almost always "
           f"({', '.join(f'{d} {v:.0%}' for d, v in share.items())}), so the two target types teach nearly the same thing.")
else:
    txt = ("The own specialist is not the best on " + ", ".join(f"{v:.0%} of {d}" for d, v in disagree.items())
           + " windows.")
show_markdown(f"""**3.2** {txt} On a window where another specialist predicts better, an ideal router should follow
the losses, not the label: that is exactly what performance targets teach and domain labels cannot (nb 3 §3,
"own specialist is best").""")

# %%
conf = confusion_matrix(scores_r.weights["performance"])  # rows: domain, columns: "<domain> specialist"
parts, partial = [], 0
for d in DOMAINS:
    own = conf.loc[d, f"{d} specialist"]
    wrong = conf.loc[d].drop(f"{d} specialist")
    dest = wrong.idxmax().split()[0]
    dest_loss, own_loss, base_loss = (matrix.loc[f"{dest} specialist", d], matrix.loc[f"{d} specialist", d],
                                      matrix.loc["base", d])
    fits = dest_loss < base_loss  # a partial fit: the wrongly chosen specialist still beats the base there
    partial += fits
    parts.append(f"{d} windows go {own:.0%} to their own specialist and {wrong.max():.0%} to {dest}, which "
                 f"{'still beats' if fits else 'does worse than'} the base on {d} text ({dest_loss:.3f} vs base "
                 f"{base_loss:.3f}; own specialist {own_loss:.3f})")
dominant = conf.mean(axis=0)
verdict = misrouting_verdict(dominant.max(), dominant.idxmax(), partial, len(DOMAINS))
show_markdown(f"""**3.3** Performance-target router, confusion matrix (nb 3 §3) against the heatmap of nb 2 §3:
{'; '.join(parts)}. {verdict} Confusion between partial fits calls for better evidence (more router steps, a deeper
cut, a per-token router that can change its mind, performance targets that reward the partial fit); a wrong domain or a
collapse calls for balanced router data and a softer target temperature (notebook 7).""")

# %%
_, _, _, many = router_windows(exp, per_domain=16, seed=1)  # the windows of nb 3 §4
grid = np.logspace(-3, 1, 41)
top = target_sharpness(many, grid)
srt = many.sort(-1).values
gap = float((srt[:, 1] - srt[:, 0]).median())
t90 = grid[top >= 0.9].max() if (top >= 0.9).any() else None
t_prof = exp.profile.router.temp
show_markdown(f"""**3.4** The median gap between the best and second-best specialist on router windows is {gap:.3f}
nats (nb 3 §4). The targets put ≥ 90% of their weight on the best specialist on average only below a temperature of
{f'about {t90:.3g}' if t90 else 'the smallest one tried'}; at the profile's {t_prof:g} the average is
{np.interp(np.log10(t_prof), np.log10(grid), top):.2f}. Sharpness is set by temperature *relative to* the loss gaps:
a temperature well below the typical gap turns every target into a hard label for whichever specialist happened to
be marginally better, so the router is trained on noise-level differences as if they were certain, and with
imbalanced data it learns to always answer the majority specialist — Break 2.""")

# %%
per_tok, last_tok = mixed["fused soft (per-token router)"], mixed["fused soft (last-token router)"]
show_markdown(f"""**3.5** The last token's hidden state has seen the whole window, so it is the best-informed
single summary for deciding which domain the window is, and it costs one router call per window. But when the fused
model predicts token t, weights computed from the last position have already looked at tokens after t: in
evaluation that leaks future text into early predictions, and at generation time those weights do not exist yet.
Measured here (nb 5 table): per-token (causal) soft fusion {per_tok:.4f}, last-token {last_tok:.4f}
({'the leak buys the last-token router ' + f'{per_tok - last_tok:.4f} nats' if last_tok < per_tok else 'no advantage for the last-token router despite the leak'}).""")

# %% [markdown]
# ## Notebook 5 · The full table and the oracle gap

# %%
baselines = ["base", *SPECIALIST_ROWS, "weight average", "uniform mix", "monolithic"]
beaten = [b for b in baselines if mixed[HEADLINE] < mixed[b]]
ahead = [b for b in baselines if mixed[b] <= mixed[HEADLINE]]
holds_value = mixed[ORACLE] < mixed[list(SPECIALIST_ROWS)].min()
wa_note = ("Weight averaging beats the routed fusion here. "
           + ("The specialists do hold value (the oracle beats every one of them), so " if holds_value else "")
           + "the router adds less than simply merging the crowns, which happens when the crowns are still close "
           "to the base (merging is then nearly lossless) and the router is too weak to exploit their differences."
           if "weight average" in ahead else
           "Weight averaging does not beat the routed fusion, as the chapter expects.")
mono_note = (f" The monolithic crown (same steps, mixed data) is also ahead ({mixed['monolithic']:.4f}): at this "
             "budget one crown that sees all domains is the stronger use of compute, and fusion has to earn "
             "its modularity elsewhere (adding a domain without retraining)." if "monolithic" in ahead else "")
show_markdown(f"""**5.1** The headline row ({HEADLINE}, {mixed[HEADLINE]:.4f}) beats
{', '.join(f'{b} ({mixed[b]:.4f})' for b in beaten) or 'none of the baselines'}; still ahead of it:
{', '.join(f'{b} ({mixed[b]:.4f})' for b in ahead) or 'none'} (nb 5 §1). Read off the paired 95 % intervals:
{headline_conclusion(res["intervals"])} {wa_note}{mono_note}""")

# %%
oh = oracle_headroom(table)
best_spec, headroom, captured = oh["best_specialist_mixed"], oh["headroom"], oh["captured"]
gap = res["oracle_gap"]
diag = bottleneck_diagnosis(headroom, captured)
ceiling_gap = routing_ceiling(exp)["oracle_gap_nats"]  # same router form, fitted on the eval windows
router_room = gap - ceiling_gap
reference = (f"A router of the same form fitted on the evaluation windows themselves still leaves {ceiling_gap:+.4f} "
             f"nats (nb 5 §2), so better router training could win at most about {max(router_room, 0):.4f} of the "
             f"{gap:.4f}; " + ("the rest comes from trunk features that do not separate the domains, and from "
                               "the first tokens of each window." if router_room < gap / 2 else
                               "most of the gap is the router's, so train it better before touching the trunk."))
show_markdown(f"""**5.2** The oracle gap is {gap:+.4f} nats ({HEADLINE} {mixed[HEADLINE]:.4f} against the per-window
oracle {mixed[ORACLE]:.4f}; nb 5 §2). The oracle's headroom over the best single specialist ({best_spec:.4f}) is
{headroom:.4f} nats{', little room to begin with' if 0 < headroom < 0.05 else ''}. {diag} {reference}""")

# %%
fixes = {
    "every specialist has the lowest loss on its own domain": "train the crowns longer or freeze less (K lower) and re-check the heatmap",
    "every specialist is worse than the base on some other domain": "nothing is wrong if specialists generalise; compare with a longer crown schedule",
    "the base is beaten by some specialist on every domain": "a base that is best somewhere means a specialist failed to improve on it: check that crown's curve",
    "averaged crowns do no better than the best single specialist": "crowns close to the base average well; rerun with more crown steps and see whether averaging degrades",
    "the fused model has a lower mixed loss than the base": "check routing accuracy and the oracle gap to see whether the router or the specialists fail",
    "the fused model has a lower mixed loss than every specialist": "if the oracle also fails to beat them, the specialists are too similar; otherwise the router is weak",
}
failed = [c for c in res["litmus"] if not c["holds"]]
if not failed:
    txt = "All seven conditions hold at this profile and seed."
else:
    items = []
    for c in failed:
        fix = next((v for key, v in fixes.items() if c["condition"].startswith(key)),
                   "the gap is large: train the router longer or per token, then recheck")
        items.append(f"- ✗ {c['condition']} ({c['evidence']}). To tell method from scale: {fix}.")
    txt = f"{len(failed)} of {len(res['litmus'])} conditions fail (nb 5 §3):\n" + "\n".join(items)
show_markdown(f"""**5.3** {txt}
At the `ci` profile the models are tiny and barely trained, so a failure there says little about the method; the same
condition failing at `cpu` or `gpu`, or across several seeds, is a finding.""")

# %%
tok_oracle = mixed["oracle (per token)"]
show_markdown(f"""**5.4** {per_token_oracle_note(tok_oracle, mixed[ORACLE], mixed[HEADLINE])} Per-window routing can
never collect that room (nb 5 §1).""")

# %%
# every router nb 3 compares, all scored on the same windows (the studies' held-out windows)
summary_pt, _ = compare_router_targets(exp, ("domain", "performance", "lm"), kind="per_token")
pairs = [(f"{kind} router, {t} targets (nb 3)", s.loc[t, "accuracy (mean)"], s.loc[t, "fused soft, mixed"])
         for kind, s in (("last-token", summary), ("per-token", summary_pt)) for t in s.index]
listing = "; ".join(f"{n}: accuracy {acc_:.1%}, fused soft {loss:.4f}" for n, acc_, loss in pairs)
txt = accuracy_loss_inversion(pairs)
show_markdown(f"""**5.5** {listing}. {txt} Accuracy only counts the argmax against the domain label; soft fusion also
depends on how much weight the other specialists get and on windows where the label is not the best specialist, so the
two can disagree.""")

# %% [markdown]
# ## Exercises · notebooks 2 to 5
#
# One solution per exercise (the cells tagged `exercise` in notebooks 2 to 5), each defining the
# function the reader's stub defines, with the imports it needs. `tools/solved.py` puts each one
# right after its stub in the copies of the notebooks that `make test` and the book execute. The last
# cell runs every check on these solutions.

# %% exercise="average_crowns" tags=["solution"]
import torch


def my_average_crowns(specialists, k):
    """The crown of the weight-average model: each crown parameter averaged over the specialists."""
    crowns = [m.crown_parameters(k) for m in specialists]
    return {name: torch.stack([c[name].detach() for c in crowns]).mean(0) for name in crowns[0]}


# %% exercise="performance_targets" tags=["solution"]
import torch


def my_performance_targets(losses, temp):
    """softmax(-loss / temp) over the specialists: lower loss, more weight."""
    return torch.softmax(-losses / temp, dim=-1)


# %% exercise="train_router" tags=["solution"]
import torch

from minigpt.router import performance_targets, router_loss


def my_train_router(router, pool, cfg, gen):
    """`cfg.steps` Adam steps of the router towards performance targets on batches drawn from `pool`."""
    opt = torch.optim.Adam(router.parameters(), lr=cfg.lr)
    history = []
    for _ in range(cfg.steps):
        h, losses, labels = pool.batch(cfg.batch_size, gen, cfg.domain_mix)
        loss = router_loss(router(h), performance_targets(losses, cfg.temp))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.detach())
    return [float(v) for v in history]  # read back once at the end, not at every step


# %% exercise="fuse_logits" tags=["solution"]
def my_fuse_logits(weights, logits):
    """sum_i w_i z_i: per-window (B, N) or per-token (B, T, N) weights, logits (N, B, T, V) -> (B, T, V)."""
    w = weights.movedim(-1, 0)  # (N, B) or (N, B, T)
    while w.dim() < logits.dim():
        w = w.unsqueeze(-1)  # (N, B, 1, 1) or (N, B, T, 1): broadcasts over positions and vocabulary
    return (w * logits).sum(0)


# %% exercise="oracle_gap" tags=["solution"]
import torch


def my_oracle_gap(spec_nll, fused_nll):
    """Each window's best specialist by mean loss, its token losses, and the fused model's gap to it."""
    choice = spec_nll.mean(-1).argmin(0)  # (n,)
    oracle_nll = spec_nll[choice, torch.arange(spec_nll.shape[1])]  # (n, T)
    return choice, oracle_nll, float(fused_nll.mean() - oracle_nll.mean())


# %%
from minigpt.exercises import CHECKS  # noqa: E402

solutions = {"average_crowns": my_average_crowns, "performance_targets": my_performance_targets,
             "train_router": my_train_router, "fuse_logits": my_fuse_logits, "oracle_gap": my_oracle_gap}
passed = {name: CHECKS[name](fn, exp) for name, fn in solutions.items()}
assert all(passed.values()), f"solutions that fail their check: {[n for n, ok in passed.items() if not ok]}"
