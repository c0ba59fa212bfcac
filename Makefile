# Two commands for a fresh machine: `make run` (install, precompute digits if needed, serve) and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
RUN ?= data/runs/digits
PORT ?= 8501

.PHONY: run test bench

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: $(BIN)/.installed
	@if [ -f $(RUN)/manifest.json ]; then echo "run $(RUN) exists"; \
	 else $(BIN)/python -m precompute train --dataset digits --alpha 0.5 --models 5000 --seed 0 --out $(RUN); fi

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_training.py
