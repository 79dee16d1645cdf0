# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

SEEDS ?= 1
demo: $(STAMP)
	$(BIN)/python -m pipelines.demo --out runs/demo --seeds $(SEEDS)

lint: $(STAMP)
	$(BIN)/ruff check mmsample tests tools pipelines examples
	$(BIN)/ruff format --check mmsample tests tools pipelines examples

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python tools/bench_read.py
	$(BIN)/python tools/bench_signals.py
	$(BIN)/python tools/bench_query.py
	$(BIN)/python tools/bench_loader.py
	$(BIN)/python tools/bench_presets.py
	$(BIN)/python tools/bench_shard.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
