"""One shared byte-level BPE tokenizer, learned on the pretrain split, with a sha256 fingerprint.

The fingerprint is the chapter's "tokenizer hash" (Chapter 32, Step 1): two checkpoints can only be
fused if their fingerprints match, because the same token id must mean the same string.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .config import GPTConfig

EOS = "<|endoftext|>"


def train_tokenizer(texts: list[str], vocab_size: int, seed_note: str = "") -> Tokenizer:
    """Learn byte-level BPE merges on ``texts``; token 0 is the end-of-document marker."""
    if not any(texts):  # BPE would "succeed" with a bytes-only vocab and every model after it breaks
        raise ValueError("no text to train the tokenizer on (empty document list); "
                         "check the corpus build and the pretrain split")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no <unk>
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if tok.get_vocab_size() > vocab_size:
        raise RuntimeError(f"tokenizer grew to {tok.get_vocab_size()} > {vocab_size} tokens")
    return tok


def fingerprint(tok: Tokenizer) -> str:
    """sha256 of the tokenizer's canonical JSON (sorted keys): equal iff vocab and merges are equal."""
    canonical = json.dumps(json.loads(tok.to_str()), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def save_tokenizer(tok: Tokenizer, path: Path) -> None:
    Path(path).write_text(tok.to_str())


def load_tokenizer(path: Path) -> Tokenizer:
    return Tokenizer.from_str(Path(path).read_text())


def eos_id(tok: Tokenizer) -> int:
    return tok.token_to_id(EOS)


def check_vocab(tok: Tokenizer, cfg: GPTConfig) -> Tokenizer:
    """Refuse a tokenizer whose vocabulary size differs from the model's; returns ``tok``.

    Ids beyond the embedding table crash mid-training, and a smaller vocabulary means the
    tokenizer was built for another config, so both are caught here, before any training.
    """
    size = tok.get_vocab_size()
    if size != cfg.vocab_size:
        raise ValueError(f"tokenizer has {size} tokens but the model's vocab_size is {cfg.vocab_size}; "
                         "use the tokenizer built for this profile or set vocab_size to match")
    return tok
