"""The cache never hands back a partial, corrupt or foreign artifact, and builds each artifact once.

Covers: atomic writes when the writer raises, corrupt and truncated entries (JSON and real
checkpoints) being rebuilt instead of loaded, every kind of entry the chapter caches (router,
tokenizer, token streams, checkpoint, ceiling, the Break 1 tokenizer and its streams) checked
against its content hash, an intact entry of another config refused rather than retrained, a
replacement killed with SIGKILL at each step, a writer killed half-way, leftovers of dead writers
cleaned up, entries of the older layout adopted without a rebuild, distinct configs getting
distinct cache paths, two processes racing for the same entry, and ``MINIGPT_CACHE_DIR``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import minigpt.experiment as experiment_mod
import minigpt.studies.ceiling as ceiling_mod
import minigpt.studies.tokenizer_mismatch as tm_mod
from minigpt.cache import (STALE_SECONDS, CacheMismatch, atomic_write, cache_root, cached, clean_stale, verify,
                           version_of)
from minigpt.checkpoint import (WEIGHTS, CheckpointCorrupt, CheckpointMismatch, load_checkpoint, model_fingerprint,
                                save_checkpoint)
from minigpt.config import DOMAINS, REPO_ROOT, SPLITS, GPTConfig
from minigpt.experiment import Experiment
from minigpt.model import GPT
from minigpt.fusion import FEATURES, FusedModel
from minigpt.studies.break2 import COLLAPSE_MIXES, curve_configs
from minigpt.studies.ceiling import routing_ceiling
from minigpt.studies.tokenizer_mismatch import alt_tokenizer
from minigpt.tokenizer import fingerprint

CFG = GPTConfig(vocab_size=37, block_size=16, n_layer=2, n_head=2, n_embd=16)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


def _age(path: Path, seconds: float = 2 * STALE_SECONDS) -> None:
    """Set the mtime of ``path`` and everything under it ``seconds`` into the past."""
    then = time.time() - seconds
    for p in [path, *(path.rglob("*") if path.is_dir() and not path.is_symlink() else [])]:
        os.utime(p, (then, then), follow_symlinks=False)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Poll until ``path`` exists; fail early with the child's stderr if it died first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"child exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {path}")
        time.sleep(0.02)


# -- atomic writes ---------------------------------------------------------------------------------

def test_atomic_write_leaves_nothing_when_the_writer_raises(tmp_path):
    target = tmp_path / "table.json"

    def half_then_fail(p: Path) -> None:
        p.write_text('{"half": ')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert not target.exists()
    assert _leftovers(tmp_path) == []


def test_atomic_write_keeps_the_old_version_when_the_writer_raises(tmp_path):
    target, folder = tmp_path / "a.txt", tmp_path / "ckpt"
    atomic_write(target, lambda p: p.write_text("old"))
    atomic_write(folder, lambda p: (p.mkdir(), (p / "w").write_text("old")))

    def fail_file(p):
        p.write_text("ne")
        raise OSError("killed")

    def fail_dir(p):
        p.mkdir()
        (p / "w").write_text("ne")
        raise OSError("killed")

    for path, fail in ((target, fail_file), (folder, fail_dir)):
        with pytest.raises(OSError):
            atomic_write(path, fail)
    assert target.read_text() == "old" and (folder / "w").read_text() == "old"
    atomic_write(folder, lambda p: (p.mkdir(), (p / "w").write_text("new")))  # folders can be replaced
    assert (folder / "w").read_text() == "new" and _leftovers(tmp_path) == []


# -- corrupt entries are rebuilt, not loaded -------------------------------------------------------

def _json_entry(path: Path, builds: list) -> dict:
    def build():
        builds.append(1)
        return {"loss": 1.25, "n": len(builds)}

    return cached(path, build, lambda obj, p: p.write_text(json.dumps(obj)), lambda p: json.loads(p.read_text()))


@pytest.mark.parametrize("garbage", ['{"loss": 1.2', "", "\x00\xff binary"])
def test_corrupt_json_is_rebuilt(tmp_path, garbage):
    path, builds = tmp_path / "entry.json", []
    path.write_text(garbage)
    with pytest.warns(UserWarning, match="unreadable") as caught:
        got = _json_entry(path, builds)
    assert len(caught) == 1 and "\n" not in str(caught[0].message) and str(path) in str(caught[0].message)
    assert builds == [1] and got == {"loss": 1.25, "n": 1}
    assert json.loads(path.read_text()) == got
    assert _json_entry(path, builds) == got and builds == [1]  # now valid: loaded, not rebuilt


def _checkpoint_entry(path: Path, builds: list) -> GPT:
    def build():
        builds.append(1)
        torch.manual_seed(len(builds))  # a rebuild gives different weights, so we can tell them apart
        return GPT(CFG), {"role": "test"}

    model, _ = cached(path, build, lambda obj, p: save_checkpoint(obj[0], p, obj[1]), load_checkpoint)
    return model


def _same_weights(a: GPT, b: GPT) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_last_byte(path: Path) -> None:  # inside the tensor data: the header still parses
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _flip_last_byte], ids=["truncated", "flipped-byte"])
def test_damaged_checkpoint_is_rebuilt(tmp_path, damage):
    path, builds = tmp_path / "ckpt", []
    first = _checkpoint_entry(path, builds)
    assert _same_weights(_checkpoint_entry(path, builds), first) and builds == [1]

    damage(path / WEIGHTS)
    with pytest.raises(CheckpointCorrupt):  # the loader alone sees the damage too ...
        load_checkpoint(path)
    # ... but the cache sees it first, from the hash it stored beside the entry, and rebuilds
    with pytest.warns(UserWarning, match=r"model\.safetensors (has \d+ bytes|does not match the sha256)"):
        rebuilt = _checkpoint_entry(path, builds)
    assert builds == [1, 1]
    assert not _same_weights(rebuilt, first)  # the rebuild, not the damaged file
    reloaded, manifest = load_checkpoint(path)
    assert _same_weights(reloaded, rebuilt) and manifest["role"] == "test"


def test_flipped_byte_is_a_corrupt_checkpoint_not_a_mismatch(tmp_path):
    save_checkpoint(GPT(CFG), tmp_path / "c", {"role": "test"})
    _flip_last_byte(tmp_path / "c" / WEIGHTS)
    with pytest.raises(CheckpointCorrupt, match="corrupt") as err:
        load_checkpoint(tmp_path / "c")
    assert not isinstance(err.value, CheckpointMismatch)  # damaged bytes are rebuilt, never refused


# -- a writer killed mid-write ---------------------------------------------------------------------

SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from minigpt.cache import cached

    target, marker = Path(sys.argv[1]), Path(sys.argv[2])

    def save(text, tmp):
        with open(tmp, "w") as f:
            f.write(text[: len(text) // 2])
            f.flush()
            marker.write_text("half written")
            time.sleep(120)  # killed here
            f.write(text[len(text) // 2:])

    cached(target, lambda: "0123456789" * 100, save, lambda p: p.read_text())
""")


def _kill_when_ready(marker, script: str, *args) -> None:
    """Run ``script`` in a subprocess, SIGKILL it once it has created ``marker``, and check it died so."""
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(marker, proc)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_sigkill_mid_write_leaves_no_partial_entry(tmp_path):
    target, marker = tmp_path / "entry.txt", tmp_path / "half-written"
    _kill_when_ready(marker, SLOW_WRITER, target, marker)
    assert not target.exists()  # the half-written data never reached the real path
    assert len(_leftovers(tmp_path)) == 1  # it is in the temporary folder the writer died in

    builds = []

    def build():
        builds.append(1)
        return "0123456789" * 100

    def load(p):
        text = p.read_text()
        if len(text) != 1000:
            raise ValueError("partial entry")
        return text

    # the dead writer's lock is released by the OS, so this neither hangs nor sees the partial file
    assert cached(target, build, lambda t, p: p.write_text(t), load) == "0123456789" * 100
    assert builds == [1] and target.read_text() == "0123456789" * 100
    assert len(_leftovers(tmp_path)) == 1  # too recent to be sure its writer is dead: kept
    _age(tmp_path / _leftovers(tmp_path)[0])  # an hour later, the next write in the folder removes it
    atomic_write(tmp_path / "other.txt", lambda p: p.write_text("x"))
    assert _leftovers(tmp_path) == []


# -- two processes, one build ------------------------------------------------------------------------

RACER = textwrap.dedent("""
    import os, sys, time, uuid
    from pathlib import Path
    from minigpt.cache import cached

    target, counter, ready, go = map(Path, sys.argv[1:5])
    ready.write_text("ready")
    while not go.exists():  # start both racers at the same moment
        time.sleep(0.005)

    def build():
        with open(counter, "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(1.0)
        return uuid.uuid4().hex  # a different value per build, so two builds would show

    print(cached(target, build, lambda v, p: p.write_text(v), lambda p: p.read_text()))
""")


@pytest.mark.slow
def test_concurrent_callers_build_once(tmp_path):
    target, counter, go = tmp_path / "entry.txt", tmp_path / "builds.log", tmp_path / "go"
    procs, readies = [], []
    for i in range(2):
        ready = tmp_path / f"ready-{i}"
        procs.append(subprocess.Popen([sys.executable, "-c", RACER, str(target), str(counter), str(ready), str(go)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        readies.append(ready)
    try:
        for ready, proc in zip(readies, procs):
            _wait_for(ready, proc)
        go.write_text("go")
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    values = [out.strip() for out, _ in outs]
    assert len(counter.read_text().splitlines()) == 1  # the build ran exactly once
    assert values[0] == values[1] == target.read_text() and len(values[0]) == 32


# -- every kind of entry the chapter caches is checked against its content hash -------------------

def _entry(folder: Path, prefix: str = "") -> Path:
    """The one cache entry in ``folder`` whose name starts with ``prefix``."""
    hits = [p for p in folder.iterdir() if p.name.startswith(prefix) and not p.name.startswith(".")
            and not p.name.endswith(".lock")]
    assert len(hits) == 1, hits
    return hits[0]


def _largest_file(entry: Path) -> Path:
    files = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def _flip_middle_byte(path: Path) -> None:  # one bit: the file usually still parses
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _digest(*arrays) -> str:
    return hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()


def _router_digest(exp) -> str:
    return _digest(*(t.numpy() for t in exp.router("last_token").state_dict().values()))


def _alt_stream_digest(exp) -> str:
    return _digest(tm_mod._alt_stream(exp, alt_tokenizer(exp), "legal", "eval"))


# kind -> (cache folder, entry name prefix, what the experiment hands out, as something comparable)
ENTRY_KINDS = {
    "tokenizer": ("tokenizers", "", lambda exp: exp.tokenizer_fingerprint),
    "streams": ("streams", "", lambda exp: _digest(*(exp.streams.get(d, s) for s in SPLITS for d in DOMAINS))),
    "checkpoint": ("checkpoints", "base-", lambda exp: model_fingerprint(exp.base())),
    "router": ("routers", "last_token-", _router_digest),
    "ceiling": ("ceilings", "per_token-", lambda exp: routing_ceiling(exp, steps=2)),
    "alt tokenizer": ("tokenizers", "alt-", lambda exp: fingerprint(alt_tokenizer(exp))),
    "alt stream": ("streams", "alt-", _alt_stream_digest),
}


@pytest.mark.parametrize("kind", ENTRY_KINDS)
def test_every_kind_of_entry_is_verified_and_a_damaged_one_rebuilt(mini_experiment, kind):
    folder, prefix, value = ENTRY_KINDS[kind]
    want = value(mini_experiment())
    entry = _entry(cache_root() / folder, prefix)
    assert verify(entry) is not None  # written with its manifest
    for damage, why in ((_flip_middle_byte, "does not match the sha256"), (_truncate, "bytes, its manifest says")):
        victim = _largest_file(entry)
        old_version = version_of(entry)
        damage(victim)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = value(mini_experiment())
        messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        assert len(messages) == 1, messages
        msg = messages[0]
        assert "\n" not in msg and msg.startswith(f"cache entry {entry} is damaged") and msg.endswith("rebuilding it")
        rel = entry.name if victim == entry else f"{entry.name}/{victim.relative_to(entry).as_posix()}"
        assert f"file {rel} " in msg and why in msg  # names the file
        assert got == want  # rebuilt, to the same thing (every build is seeded)
        assert version_of(entry) != old_version and not old_version.exists()  # a new version replaced it
        assert verify(entry) is not None


def test_entries_of_the_older_layout_are_adopted_without_a_rebuild(tmp_path):
    """Entries written before manifests existed load as before (no retraining) and are checked from then on."""
    def no_build():
        raise AssertionError("an entry of the older layout was rebuilt")

    text = tmp_path / "t.json"
    text.write_text('{"loss": 1.5}')
    save_json, load_json = (lambda obj, p: p.write_text(json.dumps(obj))), (lambda p: json.loads(p.read_text()))
    assert cached(text, no_build, save_json, load_json) == {"loss": 1.5}
    folder = tmp_path / "ckpt"
    torch.manual_seed(0)
    model = GPT(CFG)
    save_checkpoint(model, folder, {"role": "old layout"})
    save_ckpt = lambda obj, p: save_checkpoint(obj[0], p, obj[1])  # noqa: E731
    loaded, manifest = cached(folder, no_build, save_ckpt, load_checkpoint)
    assert _same_weights(loaded, model) and manifest["role"] == "old layout"
    for entry in (text, folder):
        assert entry.is_symlink() and verify(entry) is not None  # adopted: now in the new layout, with hashes
    assert cached(text, no_build, save_json, load_json) == {"loss": 1.5}
    assert _same_weights(cached(folder, no_build, save_ckpt, load_checkpoint)[0], model)
    _flip_last_byte(folder / WEIGHTS)  # and from now on damage is caught by the hash
    with pytest.warns(UserWarning, match="does not match the sha256"):
        _checkpoint_entry(folder, [])
    assert _leftovers(tmp_path) == []


# -- an intact entry of another config is refused, not retrained -------------------------------------

def test_a_checkpoint_of_another_config_is_refused_not_retrained(mini_experiment):
    base = mini_experiment().base()
    path = _entry(cache_root() / "checkpoints", "base-")
    # an intact checkpoint built with another tokenizer sits where this config's base belongs
    auto = ("model_config", "package_version", "model_fingerprint")  # save_checkpoint adds these itself
    theirs = {**{k: v for k, v in base.manifest.items() if k not in auto}, "tokenizer_fingerprint": "f" * 64}
    atomic_write(path, lambda tmp: save_checkpoint(base, tmp, theirs), manifest=True)
    version = version_of(path)
    trained = []
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        mp.setattr(experiment_mod, "train_lm", lambda *a, **k: trained.append(1) or [])
        warnings.simplefilter("error")  # no "rebuilding it" warning either
        with pytest.raises(CheckpointMismatch) as err:
            mini_experiment().base()
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    assert f"tokenizer_fingerprint={'f' * 64!r}" in msg  # which key differs, and both values
    assert "fix the config that asked for it" in msg and f"delete {path}" in msg  # what to do
    assert trained == [] and version_of(path) == version  # nothing retrained, nothing overwritten
    path.unlink()  # the fix the message names: delete it ...
    assert cache_root() == path.parent.parent  # (still this test's own cache)
    assert model_fingerprint(mini_experiment().base()) == model_fingerprint(base)  # ... and it is rebuilt


def test_an_entry_copied_under_another_key_is_refused(tmp_path):
    save, load = (lambda v, p: p.write_text(v)), (lambda p: p.read_text())
    cached(tmp_path / "a.json", lambda: "for a", save, load)
    shutil.copy(tmp_path / "a.json", tmp_path / "b.json", follow_symlinks=False)  # cp -P: the link, renamed
    with pytest.raises(CacheMismatch) as err:
        cached(tmp_path / "b.json", lambda: pytest.fail("rebuilt instead of refused"), save, load)
    msg = str(err.value)
    assert "\n" not in msg and "'a.json'" in msg and f"delete {tmp_path / 'b.json'}" in msg
    assert (tmp_path / "b.json").read_text() == "for a"  # refused, left as it was


# -- replacing an entry is atomic --------------------------------------------------------------------

REPLACER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from minigpt.cache import atomic_write

    target, marker, where = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    real_replace = os.replace

    def pause():
        marker.write_text(where)
        time.sleep(120)  # killed here

    def replace(src, dst, *args, **kwargs):  # the rename that puts something at the entry's path
        if Path(dst) == target and where == "before the final rename":
            pause()
        real_replace(src, dst, *args, **kwargs)
        if Path(dst) == target and where == "after the final rename":
            pause()

    os.replace = replace

    def write(tmp):  # the new version: two files that must agree
        tmp.mkdir()
        (tmp / "a").write_text("new")
        if where == "while saving":
            pause()
        (tmp / "b").write_text("new")

    atomic_write(target, write)
""")


@pytest.mark.slow
@pytest.mark.parametrize("where, survivor", [("while saving", "old"), ("before the final rename", "old"),
                                             ("after the final rename", "new")])
def test_sigkill_mid_replacement_leaves_the_old_or_the_new_entry(tmp_path, where, survivor):
    target, marker = tmp_path / "entry", tmp_path / "paused"
    atomic_write(target, lambda p: (p.mkdir(), (p / "a").write_text("old"), (p / "b").write_text("old")))
    _kill_when_ready(marker, REPLACER, target, marker, where)
    assert target.exists(), f"killed {where}: no entry at all"
    assert ((target / "a").read_text(), (target / "b").read_text()) == (survivor, survivor)
    atomic_write(target, lambda p: (p.mkdir(), (p / "a").write_text("next"), (p / "b").write_text("next")))
    assert (target / "a").read_text() == (target / "b").read_text() == "next"  # and it can be replaced again


# -- leftovers of dead writers ---------------------------------------------------------------------------

def test_stale_leftovers_are_cleaned_on_the_next_write(tmp_path):
    live = tmp_path / "live"
    atomic_write(live, lambda p: (p.mkdir(), (p / "w").write_text("live")), manifest=True)
    _age(version_of(live))  # an old version, but an entry links to it: kept

    def leftover(name: str, age: float | None = None) -> Path:
        p = tmp_path / name
        p.mkdir()
        (p / "part").write_text("half")
        if age:
            _age(p, age)
        return p

    dead = [leftover(".tmp-x.json-0123abcd", 2 * STALE_SECONDS),  # a writer killed two hours ago
            leftover(".entry-z-89ab", 2 * STALE_SECONDS)]  # a version nobody links to
    os.symlink(".entry-z-89ab/z", tmp_path / ".tmp-z-link-cdef")
    _age(tmp_path / ".tmp-z-link-cdef")
    dead.append(tmp_path / ".tmp-z-link-cdef")
    busy = leftover(".tmp-y.json-4567cdef", 2 * STALE_SECONDS)
    (busy / "part").write_text("still writing")  # old folder, but its writer touched a file just now
    kept = [leftover(".tmp-w.json-89abcdef"), busy]  # recent: its writer may be alive
    atomic_write(tmp_path / "other.json", lambda p: p.write_text("{}"))
    assert not any(os.path.lexists(p) for p in dead)
    assert all(p.exists() for p in kept)
    assert (live / "w").read_text() == "live" and verify(live) is not None
    assert clean_stale(tmp_path) == []  # nothing else qualifies


# -- distinct configs, distinct cache paths ---------------------------------------------------------

class _Captured(Exception):
    pass


def _capture(*_args, **_kwargs):
    raise _Captured(_args[0])


def _path_of(call) -> Path:
    with pytest.raises(_Captured) as got:
        call()
    return Path(got.value.args[0])


def _fake_experiment(profile: str = "ci", seed: int = 0, corpus: str = "c") -> Experiment:
    """An Experiment whose fingerprints are made up: keys can be computed without any data."""
    exp = Experiment(profile, seed=seed)
    exp.__dict__.update(tokenizer_fingerprint="t" * 64, corpus_fingerprint=corpus * 64)
    return exp


def _assert_injective(paths: dict) -> None:
    by_path: dict = {}
    for config, path in paths.items():
        by_path.setdefault(path, []).append(config)
    assert not [c for c in by_path.values() if len(c) > 1], "configs sharing a cache path"


def test_every_break2_router_config_and_kind_gets_its_own_cache_path(monkeypatch):
    torch.manual_seed(0)
    specs = [GPT(CFG) for _ in DOMAINS]
    generalist_set = [GPT(CFG), *specs[1:]]
    paths = {}
    for seed in (0, 1):
        exp = _fake_experiment(seed=seed)
        monkeypatch.setattr(exp, "specialists", lambda k=None, base_seed=None: specs)
        monkeypatch.setattr(exp, "train_or_load_router", lambda req, cfg, exp=exp: exp.router_path(req.key))
        curve = curve_configs(exp.profile.router)
        assert len(curve) == 2 * len(COLLAPSE_MIXES)
        for kind in ("per_token", "last_token"):
            for k in (1, 2):
                for name, cfg in curve.items():
                    paths[(seed, kind, k, name)] = exp.router(kind, cfg, k)
                    paths[(seed, kind, k, name, "target=domain")] = exp.router(kind, replace(cfg, target="domain"), k)
                    paths[(seed, kind, k, name, "generalist")] = exp.router(kind, cfg, k, experts=generalist_set)
                for r in (1, 2):  # the band's router seeds
                    paths[(seed, kind, k, "replicate", r)] = exp.router(kind, None, k, replicate=r)
        for feature in FEATURES:
            for shared in (True, False):
                experts = FusedModel(specs, 1, shared=shared)
                paths[(seed, "break", feature, shared)] = exp.feature_router(experts, feature)
    _assert_injective(paths)
    assert len(paths) == 2 * (2 * 2 * (3 * len(curve) + 2) + 2 * len(FEATURES))
    exp = _fake_experiment(seed=1)  # and the key is a function of the config: the same config, the same path
    monkeypatch.setattr(exp, "specialists", lambda k=None, base_seed=None: specs)
    monkeypatch.setattr(exp, "train_or_load_router", lambda req, cfg: exp.router_path(req.key))
    assert exp.router("last_token", curve[next(iter(curve))], 2) == paths[(1, "last_token", 2, next(iter(curve)))]
    # replicate 0 is the router itself, and passing the specialists explicitly changes nothing
    assert exp.router("per_token", None, 2, replicate=0) == exp.router("per_token", None, 2, experts=specs)


def test_every_specialist_seed_and_depth_gets_its_own_checkpoint_path(monkeypatch):
    paths = {}
    for profile in ("ci", "cpu"):
        for seed in (0, 1, 2):
            exp = _fake_experiment(profile, seed)
            stub = GPT(replace(exp.profile.model, vocab_size=64, n_embd=16, n_head=2))

            def record(kind, key_parts, build, manifest, tokenizer_fingerprint=None, exp=exp):
                m = manifest
                if kind == "base":
                    role = ("base", m["seed"])
                elif kind == "monolithic":
                    role = ("monolithic", exp.seed, m["freeze_k"])
                else:
                    role = ("specialist", exp.seed, m["domain"], m["freeze_k"], m["base_seed"])
                paths[(exp.profile.name, *role)] = exp.checkpoint_path(kind, key_parts)
                return stub

            monkeypatch.setattr(exp, "checkpoint", record)
            for k in range(exp.profile.model.n_layer + 1):
                exp.monolithic(k)
                for base_seed in (0, 1):
                    for domain in DOMAINS:
                        exp.specialist(domain, base_seed, k)
    _assert_injective(paths)  # the base depends on its own seed only: one path per (profile, base seed)
    assert len([c for c in paths if c[1] == "base"]) == 2 * 3
    assert len([c for c in paths if c[1] == "specialist"]) == 2 * 3 * 5 * 2 * 3


def test_tokenizers_streams_and_ceilings_get_distinct_cache_paths(monkeypatch):
    for module in (experiment_mod, tm_mod, ceiling_mod):
        monkeypatch.setattr(module, "cached", _capture)
    paths = {}
    for profile in ("ci", "cpu", "gpu"):
        for corpus in ("c", "d"):
            exp = _fake_experiment(profile, corpus=corpus)
            paths[("tokenizer", profile, corpus)] = _path_of(lambda: Experiment.tokenizer.func(exp))
            paths[("alt tokenizer", profile, corpus)] = _path_of(lambda: alt_tokenizer(exp))
    tok = object()  # a stand-in tokenizer: only its fingerprint (patched below) enters the path
    for tok_fp in ("t", "u"):
        exp = _fake_experiment()
        exp.__dict__["tokenizer_fingerprint"] = tok_fp * 64
        paths[("streams", tok_fp)] = _path_of(lambda: Experiment.streams.func(exp))
    monkeypatch.setattr(tm_mod, "fingerprint", lambda tok: "a" * 64)
    for domain in DOMAINS:
        for split in SPLITS:
            call = lambda: tm_mod._alt_stream(_fake_experiment(), tok, domain, split)  # noqa: E731
            paths[("alt stream", domain, split)] = _path_of(call)
    torch.manual_seed(0)
    specs = [GPT(CFG) for _ in DOMAINS]
    for seed in (0, 1):
        exp = _fake_experiment(seed=seed)
        monkeypatch.setattr(exp, "specialists", lambda: specs)
        for kind in ("per_token", "last_token"):
            for steps in (2, 300):
                paths[("ceiling", seed, kind, steps)] = _path_of(lambda: routing_ceiling(exp, kind, steps))
    _assert_injective(paths)
    assert len(paths) == 3 * 2 * 2 + 2 + len(DOMAINS) * len(SPLITS) + 2 * 2 * 2


# -- where the cache lives -----------------------------------------------------------------------------

def test_minigpt_cache_dir_moves_the_cache(tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere" / "cache"
    monkeypatch.setenv("MINIGPT_CACHE_DIR", str(moved))
    assert cache_root() == moved and moved.is_dir()  # created on first use
    monkeypatch.delenv("MINIGPT_CACHE_DIR")
    assert cache_root() == REPO_ROOT / ".cache"
