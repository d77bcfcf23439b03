# Two entry points (see README): `make demo` and `make test`. Everything else is a step of those.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.goose-installed

.PHONY: setup demo test test-fast lint lab browser-deps vendor bench clean-reports

setup: $(STAMP) vendor

# torch first, pinned: the CPU build on disk satisfies it, a bare `torch` would pull CUDA.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Offline widget renderer + require.js for the HTML reports (fetched from npm into vendor/).
vendor: $(STAMP)
	$(BIN)/goose vendor

demo: setup
	$(BIN)/goose demo

# Debian's chromium for the browser tier (never `playwright install`).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

# Lint (the rules configured in pyproject.toml), then the whole suite, slower tiers (notebooks,
# multi-process, browser) included.
test: setup browser-deps lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup

lint: $(STAMP)
	$(BIN)/python -m ruff check .

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not browser"

# JupyterLab on notebooks/ (localhost + token; works as root, e.g. in containers)
lab: setup
	$(BIN)/goose lab

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean-reports:
	rm -rf reports/*/ reports/index.html
