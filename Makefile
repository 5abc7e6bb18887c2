# Two commands do all set-up on a fresh clone:  make run  |  make test
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PROFILE ?= cpu
SEED    ?= 0
TORCH   := torch==2.13.0

.PHONY: run seeds test setup env-check clean-cache book

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch first, CPU build: a bare "torch" dependency would otherwise pull the multi-GB CUDA build
setup: $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	@$(BIN)/python -c "import minigpt, pytest, nbmake" 2>/dev/null || $(BIN)/pip install -q -e ".[test]"

run: setup
	$(BIN)/python -m minigpt run --profile $(PROFILE) --seed $(SEED)

# the same for several seeds, then mean and std of gain, oracle gap and routing accuracy
SEEDS ?= 0,1,2
seeds: setup
	$(BIN)/python -m minigpt seeds --profile $(PROFILE) --seeds $(SEEDS)

# unit tests + every notebook run headless (nbmake) at the small `ci` profile; no progress bars in logs;
# one thread per worker: two xdist workers on two cores, oversubscription makes small ops ~10x slower
test: setup
	MINIGPT_PROFILE=ci TQDM_DISABLE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadgroup tests --nbmake chapters

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
