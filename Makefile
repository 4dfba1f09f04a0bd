# openai-meter — every target creates .venv and installs what it needs on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
# Pinned versions of everything pip installs (run + dev); refresh with 'make constraints'.
CONSTRAINTS := requirements/constraints.txt

.DEFAULT_GOAL := help

.PHONY: help run demo test lint bench bench-compare clean constraints

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed-run: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	@touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run ## Start the proxy on 127.0.0.1:8080 -> https://api.openai.com (ledger ./openai-meter.db)
	$(BIN)/openai-meter serve

demo: $(VENV)/.installed-run ## No OpenAI key? The proxy in front of a SIMULATED upstream, sample traffic, a report
	$(BIN)/openai-meter demo

test: $(VENV)/.installed-dev ## Run the whole test suite
	$(BIN)/pytest -q

lint: $(VENV)/.installed-dev ## ruff + mypy --strict on the packages
	$(BIN)/ruff check proxy pricing storage tests bench
	$(BIN)/ruff format --check proxy pricing storage tests bench
	$(BIN)/mypy

bench: $(VENV)/.installed-dev ## Run every benchmark, LiteLLM comparison included (results go to docs/performance.md by hand)
	$(PY) -m bench

bench-compare: $(VENV)/.installed-dev ## direct vs floor (uvloop) vs openai-meter vs LiteLLM, one interleaved run
	$(PY) -m bench.compare_bench

constraints: ## Re-resolve pyproject.toml's run + dev dependencies into requirements/constraints.txt
	rm -rf .venv-constraints
	$(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/python -m pip install --quiet --upgrade pip
	.venv-constraints/bin/python -m pip install --quiet -e '.[dev]'
	{ sed -n '1,3p' $(CONSTRAINTS); .venv-constraints/bin/python -m pip freeze --exclude-editable; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf .venv-constraints
	@echo "updated $(CONSTRAINTS); run 'make test', then commit it"

clean: ## Remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
