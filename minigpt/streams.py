"""Token streams per (domain, split) and the windows cut from them for training and evaluation.

Each domain's documents are encoded and joined with an end-of-document token into one long
stream. Training samples random windows; evaluation uses fixed, non-overlapping windows spread
evenly over the held-out stream (docs/design.md, "Evaluation protocol"), so every model sees exactly the same tokens.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tokenizers import Tokenizer

from .config import DOMAINS, check_domain


def encode_stream(tok: Tokenizer, texts: list[str], eos: int) -> np.ndarray:
    """Encode documents in order and join them with ``eos`` -> 1-D int32 array."""
    if not texts:
        raise ValueError("no documents to encode (empty document list); check the corpus split it came from")
    out: list[int] = []
    for enc in tok.encode_batch(texts):
        out.extend(enc.ids)
        out.append(eos)
    return np.asarray(out, dtype=np.int32)


@dataclass
class DomainStreams:
    """``streams[split][domain]`` -> 1-D token array."""

    streams: dict[str, dict[str, np.ndarray]]

    def get(self, domain: str, split: str) -> np.ndarray:
        if domain not in self.streams.get(split, {}):  # a one-line error, not a KeyError
            check_domain(domain)
            raise ValueError(f"no {split!r} stream for domain {domain!r}; these streams hold "
                             f"{', '.join(self.domains(split)) or 'nothing'} for that split")
        return self.streams[split][domain]

    def domains(self, split: str) -> list[str]:
        """The domains with a ``split`` stream: the chapter's three first, then any that joined later."""
        have = list(self.streams.get(split, {}))
        return [d for d in DOMAINS if d in have] + [d for d in have if d not in DOMAINS]

    def tokens(self) -> dict[str, dict[str, int]]:
        return {s: {d: int(a.size) for d, a in ds.items()} for s, ds in self.streams.items()}

    def save(self, path: Path) -> None:
        path.mkdir(parents=True)
        np.savez(path / "streams.npz", **{f"{s}.{d}": a for s, ds in self.streams.items() for d, a in ds.items()})

    @classmethod
    def load(cls, path: Path) -> "DomainStreams":
        streams: dict[str, dict[str, np.ndarray]] = {}
        with np.load(path / "streams.npz") as z:
            for key in z.files:
                split, domain = key.split(".")
                streams.setdefault(split, {})[domain] = z[key]
        return cls(streams)


def random_windows(stream: np.ndarray, n: int, T: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random windows of ``T + 1`` tokens -> inputs (n, T) and next-token targets (n, T)."""
    if stream.size < T + 2:
        raise ValueError(f"token stream of {stream.size} tokens is shorter than one window of "
                         f"{T + 1}; use a larger corpus split or a smaller block_size")
    starts = torch.randint(0, stream.size - T - 1, (n,), generator=gen).numpy()
    win = torch.from_numpy(np.stack([stream[s:s + T + 1] for s in starts]).astype(np.int64))
    return win[:, :-1], win[:, 1:]


def eval_windows(stream: np.ndarray, n: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` fixed non-overlapping windows spread evenly over the stream (same for every model)."""
    usable = stream.size // (T + 1)
    if usable < n:
        raise ValueError(f"held-out stream has room for {usable} windows of {T + 1} tokens but "
                         f"{n} were asked for; lower eval_chunks or enlarge the eval split")
    slots = np.linspace(0, usable - 1, n).round().astype(int)  # distinct, in order
    win = torch.from_numpy(np.stack([stream[i * (T + 1):(i + 1) * (T + 1)] for i in slots]).astype(np.int64))
    return win[:, :-1], win[:, 1:]


def split_windows(streams: DomainStreams, split: str, n: int, T: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """:func:`eval_windows` of every domain's ``split`` stream: ``{domain: (inputs, targets)}``."""
    return {d: eval_windows(streams.get(d, split), n, T) for d in streams.domains(split)}


def draw_labels(n: int, gen: torch.Generator, mix: tuple[float, ...] | None = None,
                domains: Sequence[str] = DOMAINS) -> torch.Tensor:
    """(n,) indices into ``domains`` drawn with replacement in proportion ``mix`` (default: equal)."""
    if mix is not None and (len(mix) != len(domains) or min(mix) < 0 or sum(mix) <= 0):
        raise ValueError(f"domain mix {tuple(mix)} is invalid; give {len(domains)} non-negative shares "
                         f"({', '.join(domains)}) that are not all zero")
    probs = torch.tensor(mix if mix is not None else [1.0] * len(domains), dtype=torch.float64)
    return torch.multinomial(probs / probs.sum(), n, replacement=True, generator=gen)


def mixed_windows(streams: DomainStreams, split: str, n: int, T: int, gen: torch.Generator,
                  mix: tuple[float, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random windows drawn from the domains in proportion ``mix`` (default: equal).

    Returns inputs (n, T), targets (n, T) and the domain index of each window (n,).
    """
    domains = streams.domains(split)
    labels = draw_labels(n, gen, mix, domains)
    xs, ys = torch.empty(n, T, dtype=torch.long), torch.empty(n, T, dtype=torch.long)
    for d, domain in enumerate(domains):
        rows = (labels == d).nonzero().flatten()
        if rows.numel():
            x, y = random_windows(streams.get(domain, split), rows.numel(), T, gen)
            xs[rows], ys[rows] = x, y
    return xs, ys, labels
