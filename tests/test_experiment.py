"""The ci experiment end to end: shared trunk, manifests, training, cache and reproducibility."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import minigpt.experiment as experiment_mod
from minigpt import cache as cache_mod
from minigpt.cache import cache_root
from minigpt.checkpoint import model_fingerprint, trunk_hash
from minigpt.config import DOMAINS, REPO_ROOT, get_profile, wheel_dir
from minigpt.experiment import ROUTER_HISTORY, ROUTER_WEIGHTS, Experiment

pytestmark = [pytest.mark.xdist_group("train"), pytest.mark.slow]


def _state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


@pytest.fixture(scope="module")
def models(ci_experiment):
    return ci_experiment.base(), dict(zip(DOMAINS, ci_experiment.specialists()))


def test_trunks_bit_identical_and_crowns_differ(ci_experiment, models):
    base, specs = models
    k = ci_experiment.k
    assert 0 < k < base.config.n_layer  # a real cut: something frozen, something trained
    trunk = base.trunk_parameters(k)
    for domain, spec in specs.items():
        spec_trunk = spec.trunk_parameters(k)
        assert spec_trunk.keys() == trunk.keys()
        for name, p in trunk.items():
            assert torch.equal(spec_trunk[name], p), (domain, name)
        for name, p in base.crown_parameters(k).items():  # every crown tensor was trained
            assert not torch.equal(spec.crown_parameters(k)[name], p), (domain, name)
    for (da, a), (db, b) in itertools.combinations(specs.items(), 2):
        ca, cb = a.crown_parameters(k), b.crown_parameters(k)
        assert not any(torch.equal(ca[n], cb[n]) for n in ca), (da, db)


def test_specialist_manifests_pin_base_and_trunk(ci_experiment, models):
    base, specs = models
    k = ci_experiment.k
    assert base.manifest["role"] == "base"
    assert base.manifest["model_fingerprint"] == model_fingerprint(base)
    for domain, spec in specs.items():
        m = spec.manifest
        assert (m["role"], m["domain"], m["freeze_k"]) == ("specialist", domain, k)
        assert m["base_fingerprint"] == model_fingerprint(base) == base.manifest["model_fingerprint"]
        assert m["trunk_hash"] == trunk_hash(base, k) == trunk_hash(spec, k)
        assert m["tokenizer_fingerprint"] == ci_experiment.tokenizer_fingerprint
        assert m["model_fingerprint"] == model_fingerprint(spec) != model_fingerprint(base)


def test_training_losses_decrease(ci_experiment, models):
    base, specs = models
    p = ci_experiment.profile
    runs = [(base, p.base.steps)] + [(s, p.specialist.steps) for s in specs.values()]
    runs.append((ci_experiment.monolithic(), p.monolithic.steps))
    for model, steps in runs:
        losses = np.asarray(model.manifest["train_losses"])
        assert len(losses) == steps and np.isfinite(losses).all()
        fifth = steps // 5
        assert losses[-fifth:].mean() < losses[:fifth].mean(), model.manifest["role"]


def test_second_experiment_loads_identical_weights(ci_experiment, models):
    base, specs = models
    again = Experiment("ci", seed=0)
    assert again is not ci_experiment
    assert again.tokenizer_fingerprint == ci_experiment.tokenizer_fingerprint
    base2 = again.base()
    assert base2 is not base and _identical(_state(base2), _state(base))
    for domain, spec in specs.items():
        assert _identical(_state(again.specialist(domain)), _state(spec)), domain
    r1, r2 = ci_experiment.router("per_token"), again.router("per_token")
    assert r1 is not r2 and _identical(dict(r1.named_parameters()), dict(r2.named_parameters()))
    # and what was loaded is what is on disk (safetensors keeps one name of the tied wte/lm_head pair)
    path = cache_root() / "checkpoints" / f"base-{base.manifest['cache_key']}"
    on_disk = load_file(str(path / "model.safetensors"))
    state = base.state_dict()
    assert len(on_disk) >= len(state) - 1
    assert all(torch.equal(t, state[name]) for name, t in on_disk.items())


# -- reproducibility from an empty cache --------------------------------------------------------


def _fresh_experiment(root, monkeypatch, default_cache, seed):
    """An Experiment whose cache is ``root``: tokenizer and models are rebuilt there.

    Only the corpus (tested in test_data) and the token streams are shared with the default
    cache: encoding the corpus takes longer than everything else here. The streams are keyed by
    the tokenizer's fingerprint, so they are only found if the rebuilt tokenizer is identical.
    """
    if not root.exists():
        root.mkdir()
        for shared in ("corpus", "streams"):
            (root / shared).symlink_to(default_cache / shared, target_is_directory=True)
    monkeypatch.setenv("MINIGPT_CACHE_DIR", str(root))
    profile = get_profile("ci")
    small = replace(profile, base=replace(profile.base, steps=20),
                    specialist=replace(profile.specialist, steps=8))
    return Experiment(small, seed=seed)


def test_same_seed_same_weights_from_empty_caches(ci_experiment, tmp_path, monkeypatch):
    ci_experiment.streams  # noqa: B018 - make sure the default cache holds what is shared below
    default_cache = cache_root()
    # the wheel folder defaults to <cache>/wheels: pin the real one so nothing is downloaded again
    monkeypatch.setenv("MINIGPT_WHEEL_DIR", str(wheel_dir()))

    a = _fresh_experiment(tmp_path / "a", monkeypatch, default_cache, seed=0)
    assert cache_root() == tmp_path / "a"
    # a tokenizer rebuilt from scratch equals the cached one (checked before its streams are used)
    assert a.tokenizer_fingerprint == ci_experiment.tokenizer_fingerprint
    assert (tmp_path / "a" / "tokenizers").is_dir()
    base_a, legal_a = _state(a.base()), _state(a.specialist("legal"))
    losses_a = a.base().manifest["train_losses"]
    # trained just now (not loaded), so this checks the freezing code as it is today
    trunk = set(a.base().trunk_parameters(a.k))
    assert all(torch.equal(legal_a[n], base_a[n]) for n in trunk)
    assert all(not torch.equal(legal_a[n], base_a[n]) for n in legal_a if n not in trunk)
    assert len(losses_a) == 20
    assert len(list((tmp_path / "a" / "checkpoints").glob("base-*/model.safetensors"))) == 1  # trained here

    b = _fresh_experiment(tmp_path / "b", monkeypatch, default_cache, seed=0)
    assert b.tokenizer_fingerprint == ci_experiment.tokenizer_fingerprint
    assert _identical(_state(b.base()), base_a)
    assert _identical(_state(b.specialist("legal")), legal_a)
    assert b.base().manifest["train_losses"] == losses_a
    assert len(list((tmp_path / "b" / "checkpoints").glob("base-*/model.safetensors"))) == 1

    other = _fresh_experiment(tmp_path / "b", monkeypatch, default_cache, seed=1).base()
    assert not any(torch.equal(p, base_a[n]) for n, p in _state(other).items())


# -- the command line ---------------------------------------------------------------------------


def _run_cli(results_dir):
    env = {**os.environ, "MINIGPT_RESULTS_DIR": str(results_dir)}
    env.pop("PYTEST_XDIST_WORKER", None)
    env.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))  # share the cores like this worker
    proc = subprocess.run([sys.executable, "-m", "minigpt", "run", "--profile", "ci", "--seed", "0"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = results_dir / "ci" / "seed-0"
    png = out / "cross_domain.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "table.json").read_text())
    return proc.stdout, {k: v for k, v in report.items() if k != "wall_seconds"}


def test_cli_twice_gives_identical_report(ci_experiment, tmp_path):
    ci_experiment.specialists()  # train (or load) before the subprocesses, under this worker's lock
    out1, first = _run_cli(tmp_path / "r1")
    out2, second = _run_cli(tmp_path / "r2")
    assert first == second
    assert (first["profile"], first["seed"], first["freeze_k"]) == ("ci", 0, ci_experiment.k)
    assert first["tokenizer_fingerprint"] == ci_experiment.tokenizer_fingerprint
    assert first["base_fingerprint"] == model_fingerprint(ci_experiment.base())
    assert len(first["litmus"]) == 7
    assert set(first["table"]) >= {"base", "oracle (per sequence)", *(f"{d} specialist" for d in DOMAINS)}
    assert "Step 8 litmus" in out1 and "table.json" in out2


def test_router_does_not_depend_on_what_ran_before_it(ci_experiment, monkeypatch):
    # a router built from scratch twice, with the global RNG in different states each time, must
    # come out identical: otherwise results depend on which models happened to be cached
    import minigpt.experiment as experiment_mod

    ci_experiment.specialists()  # load the models first, so only the router is built below
    real_cached = experiment_mod.cached
    monkeypatch.setattr(experiment_mod, "cached", lambda path, build, save, load:
                        build() if "routers" in str(path) else real_cached(path, build, save, load))
    cfg = replace(ci_experiment.profile.router, steps=2)
    torch.manual_seed(1)
    first = ci_experiment.router("per_token", cfg).state_dict()
    torch.rand(1000)  # move the global RNG on
    second = ci_experiment.router("per_token", cfg).state_dict()
    assert _identical(first, second)


# -- a damaged router is caught --------------------------------------------------------------------


def _flip_a_weight_byte(path) -> None:
    """Flip one bit inside the tensor data of a safetensors file: it still parses and loads."""
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")  # u64 header size, JSON header, raw tensors
    data[header + (len(data) - header) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_router_keeps_its_training_history_and_an_older_entry_still_loads(mini_experiment, monkeypatch):
    returned = []
    real_train = experiment_mod.train_router_on_pool
    monkeypatch.setattr(experiment_mod, "train_router_on_pool", lambda *a, **k: returned.append(real_train(*a, **k)) or returned[-1])
    trained = mini_experiment().router("per_token")
    assert len(returned) == 1 and len(returned[0]) == mini_experiment().profile.router.steps
    assert trained.train_history == returned[0]  # what train_router returned, kept beside the weights
    [entry] = [p for p in (cache_root() / "routers").iterdir() if p.name.startswith("per_token-")
               and p.name.endswith(".safetensors")]
    assert (entry / ROUTER_WEIGHTS).is_file() and (entry / ROUTER_HISTORY).is_file()
    loaded = mini_experiment().router("per_token")
    assert len(returned) == 1 and loaded.train_history == returned[0]  # loaded, not retrained
    assert _identical(loaded.state_dict(), trained.state_dict())
    # a router cached before the history was kept: one safetensors file at the same path
    weights = (entry / ROUTER_WEIGHTS).read_bytes()
    entry.unlink()
    entry.write_bytes(weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loads quietly, without a rebuild
        old = mini_experiment().router("per_token")
    assert len(returned) == 1 and old.train_history is None
    assert _identical(old.state_dict(), trained.state_dict())


def test_flipped_byte_in_a_cached_router_is_detected_and_rebuilt(mini_experiment, monkeypatch):
    trained = []
    real_train = experiment_mod.train_router_on_pool
    monkeypatch.setattr(experiment_mod, "train_router_on_pool", lambda *a, **k: trained.append(1) or real_train(*a, **k))
    first = {n: t.clone() for n, t in mini_experiment().router("per_token").state_dict().items()}
    assert trained == [1]
    [entry] = [p for p in (cache_root() / "routers").iterdir() if p.name.startswith("per_token-")
               and p.name.endswith(".safetensors")]
    weights = entry / ROUTER_WEIGHTS  # the entry is a folder: weights and training history
    on_disk = {n: t.clone() for n, t in load_file(str(weights)).items()}  # a copy: load_file may map the file
    _flip_a_weight_byte(weights)
    flipped = load_file(str(weights))  # a valid safetensors file holding one different number ...
    assert sum(not torch.equal(on_disk[n], flipped[n]) for n in on_disk) == 1

    with warnings.catch_warnings(record=True) as caught:  # ... which the cache must not hand out
        warnings.simplefilter("always")
        again = mini_experiment().router("per_token").state_dict()
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1, f"the damaged router was loaded without a warning: {messages}"
    assert "\n" not in messages[0] and str(entry) in messages[0] and f"file {entry.name}/{ROUTER_WEIGHTS} " in messages[0]
    assert "rebuilding it" in messages[0]
    assert trained == [1, 1]  # retrained ...
    assert _identical(again, first)  # ... to the same router as before the damage (it is seeded)
    assert _identical(load_file(str(weights)), on_disk) and cache_mod.verify(entry) is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the repaired entry loads quietly, without another build
        mini_experiment().router("per_token")
    assert trained == [1, 1]


def test_routers_of_one_expert_set_share_one_pool_and_lm_targets_run_the_experts(mini_experiment, monkeypatch):
    pools, full_path = [], []
    real_build, real_train = experiment_mod.build_pool, experiment_mod.train_router
    monkeypatch.setattr(experiment_mod, "build_pool", lambda *a, **k: pools.append(1) or real_build(*a, **k))
    monkeypatch.setattr(experiment_mod, "train_router", lambda *a, **k: full_path.append(1) or real_train(*a, **k))
    exp = mini_experiment()
    cfg = exp.profile.router
    routers = [exp.router("per_token"), exp.router("last_token"), exp.router("per_token", replace(cfg, temp=1.0)),
               exp.router("per_token", replace(cfg, target="domain", domain_mix=(0.9, 0.05, 0.05)))]
    assert pools == [1] and full_path == []  # four routers, the experts ran over the pool once
    assert not _identical(routers[0].state_dict(), routers[2].state_dict())  # they did train differently
    exp.router("per_token", replace(cfg, target="lm"))
    assert pools == [1] and full_path == [1]


def test_the_experts_losses_are_computed_once_for_every_input_and_notebook(mini_experiment, monkeypatch):
    """A pool over the same experts and windows reuses their losses from disk, whatever the router reads and in a
    new process (a fresh Experiment): only the router inputs are computed, the crowns do not run, and the pool
    is the one a full build gives, bit for bit."""
    from minigpt.fusion import FusedModel
    from minigpt.scoring import SHARED_TRUNK

    first = mini_experiment()
    req = first.router_request("per_token", first.profile.router)
    full = first.router_pool(req)
    crowns = []
    real = FusedModel.crowns
    monkeypatch.setattr(FusedModel, "crowns", lambda self, t: crowns.append(1) or real(self, t))
    again = mini_experiment()  # empty in-memory state, as in another notebook's kernel
    reused = again.router_pool(again.router_request("per_token", again.profile.router))
    assert crowns == [] and torch.equal(reused.h, full.h) and torch.equal(reused.losses, full.losses)
    experts = FusedModel(again.specialists(), again.k)
    for feature in ("embeddings of base X", SHARED_TRUNK):  # another input of the same experts
        again.feature_router(experts, feature)
    assert crowns == []
    other = FusedModel(again.specialists(), again.k, shared=False)  # each on its own trunk: the same trunk weights
    again.feature_router(other, SHARED_TRUNK)
    assert crowns == []


def test_a_pool_runs_only_the_crowns_no_earlier_pool_ran(mini_experiment, monkeypatch):
    """Losses are kept per expert: a set sharing two experts with the chapter's runs one crown, and its losses
    are the ones the full path (every crown in one pass, as before) gives, bit for bit, shared trunk or not."""
    from minigpt.config import derive_seed
    from minigpt.fusion import FusedModel
    from minigpt.model import GPT
    from minigpt.router_pool import build_pool, experts_window_losses, pool_windows

    exp, other = mini_experiment(), mini_experiment(seed=1)
    exp.router_pool(exp.router_request("per_token", exp.profile.router))  # the chapter's three experts
    mixed = [exp.specialists()[0], *other.specialists()[1:]]  # two of them new, on another base
    ran = []
    real = GPT.crown_hidden
    monkeypatch.setattr(GPT, "crown_hidden", lambda self, h, k: ran.append(id(self)) or real(self, h, k))
    p = exp.profile
    windows = pool_windows(exp.streams, p.router_pool, p.model.block_size, derive_seed(exp.seed, "router-pool"))
    for models, shared in (([*exp.specialists()[:2], other.specialists()[2]], True), (mixed, False)):
        ran.clear()
        losses = experts_window_losses(models, exp.k, shared, windows, p.eval_batch_size)
        new = {id(m) for m in models[2:]} if shared else {id(m) for m in models[1:]}
        assert set(ran) == new  # the experts an earlier pool ran are read from disk
        full = build_pool(exp.streams, FusedModel(models, exp.k, shared=shared).expert_logits, p.router_pool,
                          T=p.model.block_size, seed=derive_seed(exp.seed, "router-pool"), batch_size=p.eval_batch_size)
        assert torch.equal(losses, full.losses.cpu())
