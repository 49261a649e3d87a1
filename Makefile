# Two commands on a fresh machine: `make train` and `make test`. Both create .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup train test lint

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0  # first, so nothing pulls a CUDA build
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

train: setup  ## pretrain with the embedded default (configs/default.yaml); logs in lightning_logs/
	$(BIN)/rlfm fit --config configs/default.yaml

test: setup  ## lint and the whole test suite
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
