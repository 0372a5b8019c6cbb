# casebook: two commands do all the set-up. `make run` runs every case; `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CASE   ?= video-recommendation
BENCH  ?= all
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup run test screenshots lint format bench serve ui clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "casebook needs Python >= 3.10, found " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the pinned dependencies (fast when nothing changed)

run: setup  ## run every case end to end on built-in data, then print a summary table
	$(BIN)/casebook run all

test: setup  ## run the test suite (excludes slow and gpu tests)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

screenshots: setup  ## rerun the browser tests, saving each page as cases/<case>/page/screenshot.png
	CASEBOOK_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/test_pages.py

lint: setup  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup  ## ruff format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup  ## run the benchmarks (BENCH=rnn|serving|retrieval|scale|all)
	$(BIN)/casebook bench $(BENCH)

serve: setup  ## serve a case on 127.0.0.1:8000 (CASE=<name from `casebook list`>)
	$(BIN)/casebook serve $(CASE)

ui: setup  ## the runs in a browser on 127.0.0.1:8050 (list, reports, compare two)
	$(BIN)/casebook ui

clean:  ## remove the virtual environment and run outputs
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
