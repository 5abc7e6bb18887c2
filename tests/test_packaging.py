"""What ``pip install`` gets: every subpackage of ``minigpt/`` in the wheel (a fixed package list in
pyproject.toml once left ``minigpt.analysis`` and ``minigpt.studies`` out, so an install from git
failed at the first notebook import), and default folders that stay out of site-packages."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from conftest import require_extra
from minigpt import config

setuptools = require_extra("setuptools")  # the test extra pins a version that builds wheels itself
ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "minigpt"


def source_packages(pkg: Path = PKG) -> set[str]:
    """Dotted names of the folders under ``pkg`` that hold Python files (what must be packaged)."""
    folders = {p.parent for p in pkg.rglob("*.py") if "__pycache__" not in p.parts}
    return {".".join((pkg.name, *f.relative_to(pkg).parts)) for f in folders}


def configured_packages(pyproject_text: str, where: Path = ROOT) -> set[str]:
    """The packages setuptools would build from this pyproject.toml (a fixed list, or a find rule)."""
    tool = tomllib.loads(pyproject_text).get("tool", {}).get("setuptools", {})
    found = tool.get("packages", {})
    if isinstance(found, list):
        return set(found)
    rule = dict(found.get("find", {}))
    finder = setuptools.find_namespace_packages if rule.pop("namespaces", True) else setuptools.find_packages
    return set(finder(where=str(where / rule.pop("where", ["."])[0]), **rule))


def test_every_package_folder_has_an_init():
    missing = sorted(p for p in source_packages() if not (ROOT / p.replace(".", "/") / "__init__.py").exists())
    assert not missing, f"{missing} hold Python files but no __init__.py; add one so setuptools packages them"


def test_pyproject_packages_every_subpackage():
    packaged = configured_packages((ROOT / "pyproject.toml").read_text())
    missing = sorted(source_packages() - packaged)
    assert not missing, (f"pyproject.toml leaves {missing} out of the wheel; use "
                         "[tool.setuptools.packages.find] include = [\"minigpt\", \"minigpt.*\"]")


def test_the_check_catches_a_fixed_package_list():
    old = '[tool.setuptools]\npackages = ["minigpt"]\n'
    assert {"minigpt.analysis", "minigpt.studies"} <= source_packages() - configured_packages(old)


@pytest.mark.slow
def test_the_built_wheel_ships_every_source_file(tmp_path):
    """Build the wheel from a clean copy (no stale build/ folder can fill gaps) and list it."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src / "pyproject.toml")
    shutil.copytree(PKG, src / "minigpt", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("minigpt-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if not n.split("/")[0].endswith(".dist-info")}
    wanted = {p.relative_to(src).as_posix() for p in (src / "minigpt").rglob("*") if p.is_file()}
    assert wanted - shipped == set(), f"the wheel lacks {sorted(wanted - shipped)}"


def test_defaults_stay_in_the_checkout(monkeypatch):
    monkeypatch.delenv("MINIGPT_CACHE_DIR", raising=False)
    monkeypatch.delenv("MINIGPT_RESULTS_DIR", raising=False)
    assert config.cache_dir() == ROOT / ".cache" and config.results_dir() == ROOT / "results"


def test_an_installed_package_defaults_to_the_working_folder(monkeypatch, tmp_path):
    """Installed as a wheel the package's parent is site-packages: .cache/ and results/ go where the
    notebook runs (on Colab /content) instead."""
    monkeypatch.setattr(config, "REPO_ROOT", tmp_path / "site-packages")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MINIGPT_CACHE_DIR", raising=False)
    monkeypatch.delenv("MINIGPT_RESULTS_DIR", raising=False)
    assert config.cache_dir() == tmp_path / ".cache" and config.results_dir() == tmp_path / "results"
