# openai-meter — every target creates .venv and installs what it needs on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin

.DEFAULT_GOAL := help

.PHONY: help run test lint bench bench-compare clean

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(VENV)/.installed-run: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run ## Start the proxy on 127.0.0.1:8080 -> https://api.openai.com (ledger ./openai-meter.db)
	$(BIN)/openai-meter serve

test: $(VENV)/.installed-dev ## Run the whole test suite
	$(BIN)/pytest -q

lint: $(VENV)/.installed-dev ## ruff + mypy --strict on the packages
	$(BIN)/ruff check proxy pricing storage tests bench
	$(BIN)/ruff format --check proxy pricing storage tests bench
	$(BIN)/mypy

bench: $(VENV)/.installed-dev ## Run the benchmarks (results go to docs/performance.md by hand)
	$(PY) -m bench

bench-compare: $(VENV)/.installed-dev ## direct vs floor (uvloop) vs openai-meter vs LiteLLM, one interleaved run
	$(PY) -m bench.compare_bench

clean: ## Remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
