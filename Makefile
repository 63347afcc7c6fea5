# Two commands for a fresh machine:  `make demo`  and  `make test`.
# torch is installed first and pinned, so pip takes the local CPU wheel instead of
# downloading several GB of CUDA packages. Override for a GPU box: make setup TORCH=torch
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/hybridrec demo

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks RecSys.py
	$(BIN)/ruff format --check src tests benchmarks RecSys.py

bench: setup
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf $(VENV) hybridrec-demo model
