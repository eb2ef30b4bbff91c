# Every target sets itself up: a fresh clone needs only `make demo` or `make test`.
# torch is installed first, pinned to the CPU build on this machine's disk, so that nothing
# pulls a multi-GB CUDA build; the package itself accepts any torch>=2.4.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/distil demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(BIN)/distil bench classic
	$(BIN)/distil bench overhead
	$(BIN)/distil bench losses
	$(BIN)/distil bench diswot
	$(BIN)/distil bench features

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf $(VENV) runs .pytest_cache
