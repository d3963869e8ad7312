# jobclass — two commands: `make serve` (set up and run) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: serve setup install install-dev test lint bench clean-state

# A virtualenv with torch (CPU build, pinned) installed before anything that depends on it.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(PIP) install --quiet torch==2.13.0
	@touch $@

$(VENV)/.installed: pyproject.toml constraints.txt $(VENV)/.torch
	$(PIP) install --quiet -c constraints.txt -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt $(VENV)/.installed
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## Set up (migrate, ingest the sample, train, index — each only if missing) and serve on 127.0.0.1:8000.
serve: install
	$(BIN)/jobclass serve

setup: install
	$(BIN)/jobclass setup

## Install the test dependencies and run the whole suite.
test: install-dev
	$(BIN)/python -m pytest

## Benchmark every dataset in ../shared/datasets; writes docs/benchmarks.md (embeddings cached in var/cache).
bench: install
	$(BIN)/jobclass bench-all

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app indexing models tests

## Remove the local state (database, index, models, caches).
clean-state:
	rm -rf var
