"""Colab in one click: every notebook's badge and install cell, and the README's badges, agree with the
one repository setting in pyproject.toml (tools/colab.py writes them; ``make colab REPO=owner/name``),
and the install cell does nothing locally; on Colab it installs the package and keeps the `cpu` profile
(the README's numbers) on a GPU, with the `gpu` profile one line away."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
import torch

from minigpt.config import DEFAULT_PROFILE, PROFILES

ROOT = Path(__file__).resolve().parent.parent


def _load_tool():
    spec = importlib.util.spec_from_file_location("colab_tool", ROOT / "tools" / "colab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


colab = _load_tool()
REPO = colab.read_repository()
NOTEBOOKS = [p.with_suffix(".ipynb") for p in colab.notebook_sources()]


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


# -- the repository's files agree with the setting --------------------------------------------------
def test_badges_and_install_cells_agree_with_the_setting():
    assert len(NOTEBOOKS) >= 10, "the tool found too few notebooks: its globs are broken"
    assert colab.problems() == []


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=_rel)
def test_each_ipynb_opens_itself_and_installs_from_the_setting(nb: Path):
    cells = nbformat.read(nb, as_version=4).cells
    assert colab.badge(REPO, nb.relative_to(ROOT).as_posix()) in cells[0].source, f"{_rel(nb)}: badge; run make colab"
    installs = [c.source for c in cells if c.cell_type == "code" and colab.INSTALL_MARK in c.source]
    assert installs == [colab.install_cell(REPO).rstrip("\n")], f"{_rel(nb)}: install cell; run make colab"


def test_readme_badges_open_existing_notebooks_of_the_setting():
    found = colab.BADGE.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(found) >= 8, "the README's badges were not found"
    assert {repo for repo, _ in found} == {REPO}
    assert [path for _, path in found if not (ROOT / path).is_file()] == []


# -- the tool catches a disagreement and fixes it ------------------------------------------------------
@pytest.fixture
def mini_repo(tmp_path) -> Path:
    """pyproject.toml, the README and one paired notebook, copied."""
    for rel in ("pyproject.toml", "README.md", "jupytext.toml", "chapters/01_shared_trunk.py",
                "chapters/01_shared_trunk.ipynb"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    return tmp_path


def test_a_changed_setting_is_caught_then_regenerated(mini_repo):
    colab.write_repository("alice/fusion-book", mini_repo)
    assert sorted(p.split(":")[0] for p in colab.problems(mini_repo)) == ["README.md", "chapters/01_shared_trunk.py"]
    colab.regenerate(mini_repo)
    assert colab.problems(mini_repo) == []
    py = (mini_repo / "chapters/01_shared_trunk.py").read_text()
    assert "jupytext_version" not in py and 'REPO = "alice/fusion-book"' in py
    nb = (mini_repo / "chapters/01_shared_trunk.ipynb").read_text()
    assert "github/alice/fusion-book/blob/main/chapters/01_shared_trunk.ipynb" in nb and "ORG/" not in nb
    assert "github/alice/fusion-book/blob/main/chapters/08_questions.ipynb" in (mini_repo / "README.md").read_text()
    assert colab.regenerate(mini_repo) == []  # nothing left to change


def test_a_hand_edited_install_cell_is_caught(mini_repo):
    src = mini_repo / "chapters/01_shared_trunk.py"
    flagged = lambda: [p.split(":")[0] for p in colab.problems(mini_repo)]  # noqa: E731
    assert "chapters/01_shared_trunk.py" not in flagged()
    src.write_text(src.read_text().replace('"-q", f"git+', '"-q", "--no-deps", f"git+'))
    assert "chapters/01_shared_trunk.py" in flagged()


@pytest.mark.parametrize("cut", [lambda t: colab.BADGE.sub("", t), lambda t: t.replace(colab.INSTALL_MARK, "False")],
                         ids=["no badge", "no install cell"])
def test_a_notebook_without_badge_or_install_cell_is_refused(cut):
    text = cut((ROOT / "chapters/01_shared_trunk.py").read_text())
    with pytest.raises(ValueError, match="expected one") as err:
        colab.render_notebook(text, REPO, "chapters/01_shared_trunk.ipynb")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad", ["alice", "alice/", "/x", "-alice/x", "al--ice/x", "a/b/c", "alice/..",
                                 "al ice/x", 'x"/y', "alice/x y"])
def test_an_invalid_repository_is_refused_in_one_line(bad, mini_repo):
    before = (mini_repo / "pyproject.toml").read_text()
    with pytest.raises(ValueError) as err:
        colab.write_repository(bad, mini_repo)
    assert "\n" not in str(err.value) and "OWNER/NAME" in str(err.value) and "make colab REPO=" in str(err.value)
    assert (mini_repo / "pyproject.toml").read_text() == before


@pytest.mark.parametrize("good", ["alice/chapter32-fusion", "A-b9/c.d_e", "x/y"])
def test_valid_repositories_are_accepted(good):
    assert colab.check_repository(good) == good


# -- the install cell ---------------------------------------------------------------------------------
def _run_cell(monkeypatch, on_colab: bool, cuda: bool, profile: str | None = None) -> list[list[str]]:
    """Execute the generated install cell; pip is recorded, not run. Returns the commands it ran."""
    ran: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: ran.append(cmd))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Tesla T4")
    monkeypatch.setenv("MINIGPT_PROFILE", "unset")  # recorded, so the cell's own setting is undone after
    monkeypatch.delenv("MINIGPT_PROFILE")
    if profile:
        monkeypatch.setenv("MINIGPT_PROFILE", profile)
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(colab.install_cell(REPO), "<install cell>", "exec"), {})
    return ran


def test_the_install_cell_does_nothing_locally(monkeypatch, capsys):
    assert _run_cell(monkeypatch, on_colab=False, cuda=True) == []
    assert capsys.readouterr().out == "" and "MINIGPT_PROFILE" not in os.environ


OPT_IN = '# os.environ["MINIGPT_PROFILE"] = "gpu"'


@pytest.mark.parametrize("cuda, preset, profile, where", [
    (True, None, DEFAULT_PROFILE, "on the GPU (Tesla T4)"),  # a GPU does not switch the book to other numbers
    (False, None, DEFAULT_PROFILE, "on the CPU"),
    (True, "ci", "ci", "on the GPU"),
])
def test_on_colab_the_cell_installs_and_says_which_profile(monkeypatch, capsys, cuda, preset, profile, where):
    ran = _run_cell(monkeypatch, on_colab=True, cuda=cuda, profile=preset)
    assert ran == [[sys.executable, "-m", "pip", "install", "-q", f"git+https://github.com/{REPO}@main"]]
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and f"profile {profile!r} {where}" in out, out
    assert os.environ.get("MINIGPT_PROFILE", DEFAULT_PROFILE) == profile


def test_the_gpu_profile_is_one_line_to_opt_into(monkeypatch, capsys):
    cell = colab.install_cell(REPO)
    assert cell.count(OPT_IN) == 1 and "gpu" in PROFILES and DEFAULT_PROFILE == "cpu"
    monkeypatch.setattr(colab, "install_cell", lambda repo: cell.replace(OPT_IN, OPT_IN[2:]))
    _run_cell(monkeypatch, on_colab=True, cuda=True)
    assert os.environ["MINIGPT_PROFILE"] == "gpu" and "profile 'gpu' on the GPU" in capsys.readouterr().out
