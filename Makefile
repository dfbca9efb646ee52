# Targets that need Python create the virtual environment .venv on first use.
# `make help` lists the targets.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

# options passed through to the commands (empty means the command's own default)
DATA ?=
EPOCHS ?=
PORT ?= 5000
# make study: FAMILY=sparse_kl,ncae TRIALS=100 TARGET=0.05 (or TARGET_L0=4) TIMEOUT=600
# PRUNER=median STUDY=name PACK=8 (trials trained at once) WORKERS=4 (also make faults, with
# CYCLES=10) CONFIRM_TOP=3 CONFIRM_SEEDS=3 (0 skips the confirmation on fresh seeds)
# make report: STUDY= STORAGE= OUT= TARGET= TARGET_L0= (another target, from the stored trials)
# make bench: PACKS="1 4 8 16"
FAMILY ?=
TRIALS ?= 400
TIMEOUT ?= 600
TARGET ?=
TARGET_L0 ?=
CONFIRM_TOP ?=
CONFIRM_SEEDS ?=
PRUNER ?=
STUDY ?=
STORAGE ?=
OUT ?=
PACK ?=
PACKS ?=
SEED ?=
WORKERS ?=
CYCLES ?=
comma := ,
TARGETS = $(if $(TARGET),--target $(TARGET)) $(if $(TARGET_L0),--target-l0 $(TARGET_L0))

.DEFAULT_GOAL := help
.PHONY: help install test lint experiments study report bench faults ui clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(STAMP) ## create .venv and install the project with its test dependencies

test: $(STAMP) ## run the test suite (what CI runs), then the training tests on the JAX backend
	$(PY) -m pytest
	KERAS_BACKEND=jax $(PY) -m pytest -q tests/test_packed.py tests/test_metrics.py tests/test_models.py \
		tests/test_regularizers.py tests/test_topk.py

lint: $(STAMP) ## ruff (lint and format check) and mypy over the packages and the tests
	$(PY) -m ruff check experiments study tracking tests
	$(PY) -m ruff format --check experiments study tracking tests
	$(PY) -m mypy

experiments: $(STAMP) ## run the notebooks' six experiments as MLflow runs (DATA=, EPOCHS=)
	$(PY) -m experiments run --all $(if $(DATA),--data $(DATA)) $(if $(EPOCHS),--epochs $(EPOCHS))

study: $(STAMP) ## Optuna study of the sparse AEs, then its winners confirmed on fresh seeds (~8 min)
	$(PY) -m study run --n-trials $(TRIALS) $(if $(TIMEOUT),--timeout $(TIMEOUT)) \
		$(if $(FAMILY),--family $(subst $(comma), ,$(FAMILY))) $(TARGETS) \
		$(if $(CONFIRM_TOP),--confirm-top $(CONFIRM_TOP)) \
		$(if $(CONFIRM_SEEDS),--confirm-seeds $(CONFIRM_SEEDS)) \
		$(if $(DATA),--data $(DATA)) $(if $(EPOCHS),--epochs $(EPOCHS)) \
		$(if $(PRUNER),--pruner $(PRUNER)) $(if $(STUDY),--study-name $(STUDY)) \
		$(if $(STORAGE),--storage $(STORAGE)) $(if $(SEED),--seed $(SEED)) \
		$(if $(PACK),--pack $(PACK)) $(if $(WORKERS),--workers $(WORKERS))

report: $(STAMP) ## report of the latest study to reports/<study>/ (STUDY= STORAGE= OUT= TARGET=)
	$(PY) -m study report $(if $(STUDY),--study-name $(STUDY)) $(TARGETS) \
		$(if $(STORAGE),--storage $(STORAGE)) $(if $(OUT),--out $(OUT))

bench: $(STAMP) ## training, packing and tracking speed against plain fit (bench/results.json)
	$(PY) -m study bench $(if $(DATA),--data $(DATA)) $(if $(EPOCHS),--epochs $(EPOCHS)) \
		$(if $(PACKS),--packs $(PACKS))

faults: $(STAMP) ## kill workers mid-trial with SIGKILL, restart them, count what survived (~6 min)
	$(PY) -m study faults $(if $(WORKERS),--workers $(WORKERS)) $(if $(CYCLES),--cycles $(CYCLES))

ui: $(STAMP) ## serve the MLflow UI on 127.0.0.1 (PORT=5000) and print links per experiment
	$(PY) -m tracking ui --port $(PORT)

clean: ## remove the virtual environment, caches, the local stores and what was made from them
	rm -rf $(VENV) .pytest_cache *.egg-info mlflow.db mlartifacts mlruns studies reports screenshots \
		bench
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
