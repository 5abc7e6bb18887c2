"""The cache never hands back a partial or corrupt artifact, and builds each artifact once.

Covers: atomic writes when the writer raises, corrupt and truncated entries (JSON and real
checkpoints) being rebuilt instead of loaded, a writer killed with SIGKILL half-way, two processes
racing for the same entry, and ``MINIGPT_CACHE_DIR``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from minigpt.cache import atomic_write, cache_root, cached
from minigpt.checkpoint import WEIGHTS, CheckpointMismatch, load_checkpoint, save_checkpoint
from minigpt.config import REPO_ROOT, GPTConfig
from minigpt.model import GPT

CFG = GPTConfig(vocab_size=37, block_size=16, n_layer=2, n_head=2, n_embd=16)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


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
    with pytest.warns(UserWarning, match="unreadable"):
        got = _json_entry(path, builds)
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
    with pytest.raises(Exception):  # the damage is detected by the loader itself ...
        load_checkpoint(path)
    with pytest.warns(UserWarning, match="unreadable"):  # ... so cached() rebuilds
        rebuilt = _checkpoint_entry(path, builds)
    assert builds == [1, 1]
    assert not _same_weights(rebuilt, first)  # the rebuild, not the damaged file
    reloaded, manifest = load_checkpoint(path)
    assert _same_weights(reloaded, rebuilt) and manifest["role"] == "test"


def test_flipped_byte_is_a_checkpoint_mismatch(tmp_path):
    save_checkpoint(GPT(CFG), tmp_path / "c", {"role": "test"})
    _flip_last_byte(tmp_path / "c" / WEIGHTS)
    with pytest.raises(CheckpointMismatch, match="corrupt"):
        load_checkpoint(tmp_path / "c")


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


@pytest.mark.slow
def test_sigkill_mid_write_leaves_no_partial_entry(tmp_path):
    target, marker = tmp_path / "entry.txt", tmp_path / "half-written"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target), str(marker)],
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(marker, proc)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
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


# -- where the cache lives -----------------------------------------------------------------------------

def test_minigpt_cache_dir_moves_the_cache(tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere" / "cache"
    monkeypatch.setenv("MINIGPT_CACHE_DIR", str(moved))
    assert cache_root() == moved and moved.is_dir()  # created on first use
    monkeypatch.delenv("MINIGPT_CACHE_DIR")
    assert cache_root() == REPO_ROOT / ".cache"
