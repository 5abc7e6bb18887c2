"""One scoring pass of the chapter's table with whichever engine the environment picks, as a whole process:

    python benchmarks/scoring_engine.py                              # the plain path (the default)
    MINIGPT_BATCHED_CROWNS=1 python benchmarks/scoring_engine.py     # crowns in one batched pass

Time the two side by side with any whole-process timer that pairs runs (``/usr/bin/time -v`` twice
in turn, or hyperfine), so the ratio holds while the machine's speed drifts. Random weights at the
profile's model size (nothing trained, nothing read from the cache), ``--windows`` per domain, one
thread; the score cache is off, so every run scores. Prints the engine and the fused mixed loss,
which must agree between the two engines to float rounding.
"""
from __future__ import annotations

import argparse
import copy

import torch

from minigpt.config import DOMAINS, batched_crowns, get_profile
from minigpt.fusion import FusedModel
from minigpt.model import GPT
from minigpt.router import make_router
from minigpt.scoring import ScoreRequest, fused_row, score
from minigpt.score_cache import not_remembered


def specialists(profile: str, seed: int = 0) -> tuple[list[GPT], int, GPT]:
    """A random base and three crowns that differ from it above the profile's K."""
    p = get_profile(profile)
    torch.manual_seed(seed)
    base = GPT(p.model).eval()
    specs = []
    for _ in DOMAINS:
        m = copy.deepcopy(base)
        with torch.no_grad():
            for w in m.crown_parameters(p.freeze_k).values():
                w.add_(0.02 * torch.randn_like(w))
        specs.append(m)
    return specs, p.freeze_k, base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--windows", type=int, default=48, help="windows per domain")
    args = parser.parse_args()
    torch.set_num_threads(1)
    p = get_profile(args.profile)
    specs, k, base = specialists(args.profile)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, p.model.vocab_size, (args.windows, p.model.block_size + 1), generator=gen)
    windows = {d: (x[:, :-1], x[:, 1:]) for d in DOMAINS}
    router = make_router("per_token", p.model.n_embd, len(DOMAINS), p.router)
    with not_remembered():
        sc = score(ScoreRequest(windows=windows, experts=FusedModel(specs, k), routers={"per-token": router},
                                base=base, batch_size=p.eval_batch_size))
    mixed = torch.stack([sc.nll[fused_row("soft", "per-token")][d].mean() for d in DOMAINS]).mean()
    print(f"engine={'batched' if batched_crowns() else 'plain'} fused_mixed={float(mixed):.6f}")


if __name__ == "__main__":
    main()
