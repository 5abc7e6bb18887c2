# Two commands do all set-up on a fresh clone:  make run  |  make test
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PROFILE ?= cpu
SEED    ?= 0
TORCH   := torch==2.13.0

.PHONY: run seeds decisions test setup env-check clean-cache book colab readme reference

$(BIN)/python:
	$(PY) -m venv $(VENV)

# What `pip install -e .[test]` provides, by import name: the package itself and every test extra in
# pyproject.toml (tests/test_bad_input.py keeps the two lists in step). A missing one is installed;
# if it is still missing (no network), setup stops with one line saying so.
TEST_IMPORTS := pytest xdist nbmake jupytext ipykernel hypothesis nbformat transformers setuptools
define CHECK_TEST_EXTRAS
import importlib.metadata as md, importlib.util as iu, sys
missing = [n for n in sys.argv[1:] if iu.find_spec(n) is None]
try:
    md.distribution("minigpt")
except md.PackageNotFoundError:
    missing.insert(0, "minigpt")
if missing:
    sys.exit(f"error: not installed: {', '.join(missing)}; install them with $(BIN)/pip install -e '.[test]'")
endef
export CHECK_TEST_EXTRAS

# torch first, CPU build: a bare "torch" dependency would otherwise pull the multi-GB CUDA build
setup: $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	@$(BIN)/python -c "$$CHECK_TEST_EXTRAS" $(TEST_IMPORTS) 2>/dev/null || $(BIN)/pip install -q -e ".[test]" || true
	@$(BIN)/python -c "$$CHECK_TEST_EXTRAS" $(TEST_IMPORTS)

run: setup
	$(BIN)/python -m minigpt run --profile $(PROFILE) --seed $(SEED)

# the same for several seeds, then mean and std of gain, oracle gap and routing accuracy
SEEDS ?= 0,1,2
seeds: setup
	$(BIN)/python -m minigpt seeds --profile $(PROFILE) --seeds $(SEEDS)

# unit tests + every notebook run headless (nbmake) at the small `ci` profile; no progress bars in logs;
# one thread per worker: two xdist workers on two cores, oversubscription makes small ops ~10x slower.
# The notebooks run as solved copies (tools/solved.py): each exercise's stub followed by the answer
# key's solution, so every check must pass. nbmake writes each executed notebook back (--overwrite)
# and tools/scan_outputs.py then fails on any warning or error a cell shows
SOLVED := build/solved/chapters
test: setup
	$(BIN)/python tools/solved.py $(SOLVED)
	MINIGPT_PROFILE=ci TQDM_DISABLE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadgroup tests --nbmake --overwrite $(SOLVED)
	$(BIN)/python tools/scan_outputs.py $(SOLVED)

# Colab badges and install cells of every notebook and the README's badges, from the one setting
# in pyproject.toml ([project.urls] Repository): `make colab REPO=owner/name` writes it first
colab: setup
	$(BIN)/python tools/colab.py $(if $(REPO),--repository '$(REPO)')

# every setting the book chose, re-made on the dev split (docs/design.md, "Decision log")
decisions: setup
	$(BIN)/python -m minigpt decisions --profile $(PROFILE) --seed $(SEED)

# README.md's and docs/design.md's measured numbers, rewritten from results/reference/
readme: setup
	$(BIN)/python -m minigpt.readme

# copy results/cpu/ (seeds 0-2 and seed 0's studies) into results/reference/ with the machine, then
# rewrite the README's and design.md's numbers from them
reference: setup
	$(BIN)/python -m minigpt.readme --collect

env-check: setup
	$(BIN)/python -m minigpt.env_check

clean-cache:
	rm -rf .cache results

# the HTML book (jupyter_book/): every notebook executed once at BOOK_PROFILE, warnings fail the build
BOOK_PROFILE ?= ci
book: setup
	@# not "import jupyter_book": the jupyter_book/ folder here would import as a namespace package
	@# jupyter-server-mathjax: a local MathJax, so formulas render without a network
	@test -x $(BIN)/jupyter-book || $(BIN)/pip install -q "jupyter-book<2" jupyter-server-mathjax
	BOOK_PROFILE=$(BOOK_PROFILE) PY=$(BIN)/python jupyter_book/build.sh
