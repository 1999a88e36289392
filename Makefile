# VATT experiment template. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Pinned so every machine resolves the same, tested build (pip's cap here: torch<=2.14.1).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.0

.PHONY: help install test flops clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-12s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv/ and install the project with its dev extra (skipped when up to date)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS) -e ".[dev]"
	touch $(STAMP)

test: install ## run the whole test suite
	$(PY) -m pytest

flops: install ## parameter counts and forward GFLOPs of the paper models at DropToken 0/25/50/75 %
	$(PY) -m vatt.flops

clean: ## remove caches and build files (keeps .venv/, data/ and logs/)
	rm -rf .pytest_cache build dist src/*.egg-info
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
