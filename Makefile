# VATT experiment template. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Pinned so every machine resolves the same, tested build (pip's cap here: torch<=2.14.1).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.0

# Every `key=value` on the make command line is a Hydra override, passed on exactly as typed, e.g.
#   make train experiment=demo model.droptoken=0.25 trainer.max_epochs=2
#   make train data=shards data.sources='[{path: a, weight: 0.5}, {path: b, weight: 0.5}]'
# make keeps them in MAKEOVERRIDES last-first, with spaces escaped as "\ ", "\" as "\\" and "$" as "$$";
# each is put back in order and single-quoted, so the shell neither splits nor expands it (braces, $, quotes).
_SP := @vatt-space@
_reverse = $(if $(1),$(call _reverse,$(wordlist 2,$(words $(1)),$(1))) $(firstword $(1)))
_quote = '$(subst ','"'"',$(subst \\,\,$(subst $$$$,$$,$(subst $(_SP), ,$(1)))))'
ARGS := $(foreach a,$(filter-out PYTHON=% TORCH_PINS=% VENV=% PYTEST_WORKERS=% ckpt=% out=% format=% run=% vocab=% classes=% list=%,$(call _reverse,$(subst \ ,$(_SP),$(MAKEOVERRIDES)))),$(call _quote,$(a)))

.PHONY: help install test test-fast train sweep eval export convert report data-demo shards tensorboard flops bench bench-data clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-12s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv/ and install the project with its dev extra (skipped when up to date)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS) -e ".[dev]"
	touch $(STAMP)

# test processes (pytest-xdist): two fit the 2-core CI machine; 1 runs the suite in this process.
# loadfile: a test file runs in one worker, so a file whose tests share state (the README walk-through) keeps it,
# and module fixtures (a user copy, a trained run) are built once
PYTEST_WORKERS ?= 2
_XDIST = $(if $(filter 1,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

test: install ## run the whole test suite (PYTEST_WORKERS=2 processes)
	$(PY) -m pytest $(_XDIST)

test-fast: install ## the tests not marked slow (the edit loop; make test runs them all)
	$(PY) -m pytest $(_XDIST) -m "not slow"

train: install ## pretrain (default: experiment=demo, which generates data/demo/ if missing); key=value overrides pass to Hydra
	$(PY) -m vatt.train $(ARGS)

sweep: install ## the same as a Hydra multirun, e.g. make sweep experiment=demo model.droptoken=0.0,0.25,0.5,0.75
	$(PY) -m vatt.train --multirun $(ARGS)

eval: install ## downstream evaluation, e.g. make eval task=linear_probe data=ucf101 data.root=DIR pretrained=PATH
	$(PY) -m vatt.eval $(ARGS)

export: install ## a checkpoint's model for downstream use (out=PATH.safetensors) or serving (out=DIR format=onnx|torch)
	@test -n "$(ckpt)" -a -n "$(out)" || { echo "usage: make export ckpt=PATH out=PATH.safetensors [or out=DIR format=onnx|torch]"; exit 2; }
	$(PY) -m vatt.export --ckpt "$(ckpt)" --out "$(out)" $(if $(format),--format "$(format)")

convert: install ## the authors' TF checkpoint in PyTorch: make convert ckpt=PREFIX out=FILE.safetensors|FOLDER [vocab=howto100m_en.txt] [list=1] [check=outputs.npz]
	@test -n "$(ckpt)" -a \( -n "$(out)" -o -n "$(list)" \) || { echo "usage: make convert ckpt=PATH out=PATH [vocab=FILE] [classes=FILE] [list=1] [check=FILE.npz [tol=1e-4]]"; exit 2; }
	$(PY) -m vatt.convert --ckpt "$(ckpt)" $(if $(out),--out "$(out)") $(if $(vocab),--vocab "$(vocab)") $(if $(classes),--classes "$(classes)") $(if $(list),--list) $(if $(check),--check "$(check)") $(if $(tol),--tol "$(tol)")

data-demo: install ## generate the built-in demo dataset into data/demo/ (skipped when it is there)
	$(PY) -m vatt.data.demo --out data/demo

shards: data-demo ## prepare the demo data as streaming shards in data/shards/demo/{train,val} (skipped when up to date)
	$(PY) -m vatt.data.prepare manifest --manifest data/demo/train.jsonl --out data/shards/demo/train --workers 2
	$(PY) -m vatt.data.prepare manifest --manifest data/demo/val.jsonl --out data/shards/demo/val --workers 2

report: install ## a table and plots of a run or a sweep, e.g. make report run=logs/train/multiruns/<time>
	@test -n "$(run)" || { echo "usage: make report run=PATH (a run folder or a sweep's folder)"; exit 2; }
	$(PY) -m vatt.report $(run)

bench: data-demo ## every benchmark (CPU, ~8 min on 2 cores): bench/results.json and bench/results.md; GPU: bench/gpu.sh
	$(PY) -m vatt.bench --out bench

bench-data: shards ## clips/s of the per-clip pipeline vs decoding every frame, at paper clip settings
	$(PY) -m vatt.data.bench --shards data/shards/demo/val --num-clips 64

tensorboard: install ## serve logs/ on http://localhost:6006 to compare runs
	$(PY) -m tensorboard.main --logdir logs --port 6006

flops: install ## parameter counts and forward GFLOPs of the paper models at DropToken 0/25/50/75 %
	$(PY) -m vatt.flops

clean: ## remove caches and build files (keeps .venv/, data/ and logs/)
	rm -rf .pytest_cache build dist src/*.egg-info
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
