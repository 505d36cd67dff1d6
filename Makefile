# spikeforge: `make demo` and `make test` set everything up on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv demo test test-slow bench lint clean

venv: $(STAMP)

# torch==2.13.0: the local CPU build (the package metadata admits a range)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[all,dev,neurobench,plot]' 'torch==2.13.0'
	touch $(STAMP)

demo: venv
	$(BIN)/spikeforge demo

test: venv
	$(BIN)/python -m pytest -m "not slow" -n 2 $(PYTEST_ARGS)

test-slow: venv
	$(BIN)/python -m pytest -m slow -n 2 $(PYTEST_ARGS)

bench: venv
	$(BIN)/python bench/golden_vs_snntorch.py

# the digits demo for every board with a host link; figures in build/bitstreams/<board>.json
.PHONY: bitstreams boards-doc
bitstreams: venv
	$(BIN)/python -m spikeforge.bitstreams build/bitstreams

# regenerate docs/boards.md's board table from the catalog and the mapper
boards-doc: venv
	$(BIN)/python -m spikeforge.boards.doc docs/boards.md

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf build sim_build .pytest_cache .hypothesis
