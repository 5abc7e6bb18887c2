"""A specialist trained under another tokenizer (Chapter 32, Break 1b).

The ``domain`` specialist is trained again -- same base, same steps, same seed -- on text encoded
by a second BPE tokenizer of the same size learned on other text. Its trunk is the base's, bit for
bit, so every check but the tokenizer's passes. :func:`tokenizer_mismatch` asks whether
:func:`minigpt.compat.check` catches it, and what forcing it into the fused model costs, per token
and per byte (per-byte losses compare across tokenizers). Break 1 (:mod:`.break1`) runs it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tokenizers import Tokenizer

from .. import data as data_mod
from ..analysis.routing import routing_accuracy, weight_on
from ..cache import cache_root, cached, config_key
from ..checkpoint import model_fingerprint, trunk_hash
from ..config import DOMAINS, check_domain
from ..evaluate import loss_table, table_json
from ..model import GPT
from ..fusion import FusedModel
from ..scoring import SHARED_TRUNK, Scores, ScoreRequest, fused_row, model_nll, score
from ..streams import encode_stream, eval_windows, random_windows
from ..tokenizer import eos_id, fingerprint, load_tokenizer, save_tokenizer, train_tokenizer
from .common import refuse_then_force

# router names: the healthy set's router, that router reused on the mismatched set, and one
# retrained for the mismatched set; the report names them "<name> router"
HEALTHY, REUSED, RETRAINED = "healthy", "reused healthy", "retrained"


def alt_tokenizer(exp) -> Tokenizer:
    """A BPE tokenizer of the same size learned on different text (the specialist split instead of
    the pretrain split, same character budget): same shapes, different merges and ids."""
    p = exp.profile
    key = config_key("alt-tokenizer", p.model.vocab_size, p.tokenizer_chars, exp.corpus_fingerprint)
    path = cache_root() / "tokenizers" / f"alt-{key}.json"

    def build() -> Tokenizer:  # same recipe as the shared tokenizer, but learned on the specialist split
        return train_tokenizer(data_mod.balanced_texts(exp.corpus, "specialist", p.tokenizer_chars),
                               p.model.vocab_size)

    return cached(path, build, save_tokenizer, load_tokenizer)


def _alt_stream(exp, tok: Tokenizer, domain: str, split: str) -> np.ndarray:
    """``domain``'s ``split`` text encoded with ``tok`` (cached like the shared streams)."""
    path = cache_root() / "streams" / f"alt-{fingerprint(tok)[:16]}-{exp.corpus_fingerprint[:16]}-{domain}-{split}.npy"
    return cached(path, lambda: encode_stream(tok, data_mod.domain_texts(exp.corpus, domain, split), eos_id(tok)),
                  lambda a, tmp: np.save(tmp, a), lambda q: np.load(q, allow_pickle=False))


def alt_tokenizer_specialist(exp, domain: str = "legal") -> tuple[GPT, Tokenizer]:
    """The ``domain`` specialist again -- same base, same steps, same seed -- but its training text
    was encoded with :func:`alt_tokenizer`. Its trunk is the base's, bit for bit."""
    check_domain(domain)
    p, k = exp.profile, exp.k
    tok = alt_tokenizer(exp)
    alt_fp = fingerprint(tok)
    base = exp.base()

    def build() -> tuple[GPT, list[float]]:
        stream = _alt_stream(exp, tok, domain, "specialist")
        batch = lambda g: random_windows(stream, p.specialist.batch_size, p.model.block_size, g)  # noqa: E731
        return exp.fine_tune(base, batch, domain, k=k, desc=f"{domain} specialist (other tokenizer)")

    manifest = {"role": "specialist", "domain": domain, "seed": exp.seed, "freeze_k": k, "base_seed": exp.seed,
                "base_fingerprint": model_fingerprint(base), "trunk_hash": trunk_hash(base, k), "profile": p.name,
                "note": "trained on text encoded with a different tokenizer"}
    model = exp.checkpoint("alt-tok-specialist", [alt_fp, p.model, p.base, p.specialist, domain, k, exp.seed],
                           build, manifest, tokenizer_fingerprint=alt_fp)
    return model, tok


def _nats_per_byte(model: GPT, x: torch.Tensor, y: torch.Tensor, tok: Tokenizer, batch_size: int) -> dict:
    """Mean loss per token and per byte of decoded text: per-byte is comparable across tokenizers."""
    nll = model_nll(model, {"text": (x, y)}, batch_size)["text"]  # (n, T), remembered like every score
    total = sum(nll[i:i + batch_size].sum().item() for i in range(0, x.shape[0], batch_size))  # in batch order
    n_bytes = sum(len(tok.decode(row.tolist(), skip_special_tokens=False).encode()) for row in y)
    return {"per_token": total / y.numel(), "per_byte": total / n_bytes, "bytes_per_token": n_bytes / y.numel()}


def _losses(exp, bad: GPT, healthy: GPT, tok: Tokenizer, domain: str) -> dict[str, dict]:
    """Per-token and per-byte losses on ``domain``'s held-out text, under either tokenizer."""
    p = exp.profile
    own_x, own_y = eval_windows(_alt_stream(exp, tok, domain, "eval"), p.study_windows, p.model.block_size)
    x, y = exp.study_sets[domain]
    bs = p.eval_batch_size
    return {
        "mismatched specialist, its own tokenizer's text": _nats_per_byte(bad, own_x, own_y, tok=tok, batch_size=bs),
        "mismatched specialist, shared tokenizer's text (what fusion feeds it)":
            _nats_per_byte(bad, x, y, tok=exp.tokenizer, batch_size=bs),
        "healthy specialist, shared tokenizer's text": _nats_per_byte(healthy, x, y, tok=exp.tokenizer, batch_size=bs),
        "base, shared tokenizer's text": _nats_per_byte(exp.base(), x, y, tok=exp.tokenizer, batch_size=bs),
    }


def _fusion(exp, specs: Sequence[GPT], healthy: Sequence[GPT]) -> tuple[Scores, Scores]:
    """The healthy set with its router, and the mismatched set with that router reused as a drop-in
    and with a router retrained for it (all read the shared trunk)."""
    p, k, base = exp.profile, exp.k, exp.base()
    bad_set, ok_set = FusedModel(specs, k), FusedModel(healthy, k)
    router_ok = exp.feature_router(ok_set, SHARED_TRUNK, p.router, "shared")
    router_new = exp.feature_router(bad_set, SHARED_TRUNK, p.router, "tokenizer mismatch")
    kw = dict(base=base, batch_size=p.eval_batch_size, hidden_head=base.lm_head)
    ok = score(ScoreRequest(windows=exp.study_sets, experts=ok_set, routers={HEALTHY: router_ok}, **kw))
    bad = score(ScoreRequest(windows=exp.study_sets, experts=bad_set, routers={REUSED: router_ok, RETRAINED: router_new},
                             **kw))
    return ok, bad


def tokenizer_mismatch(exp, domain: str = "legal") -> dict:
    """Swap the ``domain`` specialist for one trained under another tokenizer: does the check catch
    it, and what does forcing it cost?"""
    p, k = exp.profile, exp.k
    bad, tok = alt_tokenizer_specialist(exp, domain)
    j = DOMAINS.index(domain)
    healthy = exp.specialists()
    specs = [bad if i == j else m for i, m in enumerate(healthy)]
    shared_vocab = sum(tok.id_to_token(i) == exp.tokenizer.id_to_token(i) for i in range(p.model.vocab_size))
    refusal, forced = refuse_then_force(specs, k)
    losses = _losses(exp, bad, healthy[j], tok=tok, domain=domain)
    ok, res = _fusion(exp, specs, healthy)
    t_ok, t_bad = loss_table(ok.nll), loss_table(res.nll)
    routers = (REUSED, RETRAINED)
    return {
        "domain": domain, "alt_tokenizer_fingerprint": fingerprint(tok),
        "alt_tokenizer_text": "specialist split (same character budget and vocabulary size as the shared one)",
        "note": ("the frozen embeddings (and tied head) were learned for the shared tokenizer's ids, so this "
                 "specialist can only adapt its crown to the other ids; per-byte losses compare across tokenizers"),
        "ids_with_same_string": shared_vocab / p.model.vocab_size,
        "compat": {"refusal": refusal, "forced_report": forced},
        "losses": losses,
        "healthy_fused_mixed": float(t_ok.loc[fused_row("soft", HEALTHY), "mixed"]),
        "healthy_table": table_json(t_ok),
        "table": table_json(t_bad),
        "fused_mixed": {f"{r} router": float(t_bad.loc[fused_row("soft", r), "mixed"]) for r in routers},
        "routing_accuracy": {f"{r} router": routing_accuracy(res.weights[r]) for r in routers},
        "weight_on_mismatched": {f"{r} router": weight_on(res.weights[r], j) for r in routers},
    }


def summary_lines(tm: dict) -> list[str]:
    """The tokenizer case's part of Break 1's summary."""
    passed = [c["check"] for c in tm["compat"]["forced_report"]["checks"] if c["ok"]]
    lines = [f"tokenizer mismatch ({tm['domain']} specialist: same base and steps, but trained on text encoded by "
             f"another tokenizer; {tm['ids_with_same_string']:.1%} of ids mean the same string in both):",
             f"  checks that pass: {passed}", f"  refused: {tm['compat']['refusal']}"]
    for name, v in tm["losses"].items():
        lines.append(f"  {name:<70} {v['per_token']:.4f} nats/token  {v['per_byte']:.4f} nats/byte")
    lines.append(f"  fused mixed: healthy set {tm['healthy_fused_mixed']:.4f}; with the mismatched specialist "
                 + ", ".join(f"{r} {v:.4f}" for r, v in tm["fused_mixed"].items()))
    for r, w in tm["weight_on_mismatched"].items():
        lines.append(f"  weight on the mismatched specialist ({r}): " + "  ".join(f"{k} {v:.2f}" for k, v in w.items()))
    return lines
