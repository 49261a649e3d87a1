# Two commands on a fresh machine: `make train` and `make test`. Both create a virtual environment first.
#
# Python 3.11, 3.12 and 3.13 are supported. By default the first of python3.11, python3.12, python3.13 and
# python3 that runs and is one of them builds .venv. 3.11 comes first because this project's machines (CI's
# included) keep a CPU build of torch 2.13.0 for it on disk, which pip installs in seconds; for 3.12 and
# 3.13 pip fetches torch 2.13.0 from PyPI, on Linux x86_64 a CUDA build that brings about 2.7 GB of wheels
# with its nvidia-* packages (the CPU code runs the same). Another Python, in its own .venv-X.Y:
#     make test PYTHON=python3.12
ifeq ($(origin PYTHON),undefined)
PYTHON := $(firstword $(foreach py,python3.11 python3.12 python3.13 python3,$(shell \
	$(py) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null && echo $(py))))
VENV := .venv
else
VENV := .venv-$(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
endif
BIN := $(VENV)/bin

.PHONY: setup train test lint

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "make: no Python 3.11-3.13 found; name one with PYTHON=..." >&2; exit 1; }
	@test "$(VENV)" != ".venv-" || { echo "make: $(PYTHON) does not run" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	echo '*' > $(VENV)/.gitignore  # git and ruff skip it, as Python 3.13's venv does by itself
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0  # first, so that on 3.11 nothing pulls a CUDA build
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

train: setup  ## pretrain with the embedded default (configs/default.yaml); logs in lightning_logs/
	$(BIN)/rlfm fit --config configs/default.yaml

test: setup  ## lint and the whole test suite
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
