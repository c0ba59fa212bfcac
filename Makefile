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

# Each stage is skipped when its last artifact exists; an interrupted stage resumes.
run: $(BIN)/.installed
	@test -f $(RUN)/metrics.json || $(BIN)/python -m precompute all --dataset digits --alpha 0.5 --models 5000 --seed 0 --out $(RUN)
	@test -f $(RUN)/analysis.json || $(BIN)/python -m precompute analyze --run $(RUN)
	$(BIN)/streamlit run app.py --server.address localhost --server.port $(PORT)  # settings: .streamlit/config.toml

# The tests also cover the cluster extra (Ray), which `make run` does not need.
$(BIN)/.installed-cluster: $(BIN)/.installed
	$(BIN)/pip install -q -e '.[test,cluster]'
	touch $@

# Passive OpenMP waits: tests run a Streamlit server or CLI subprocesses beside the test process,
# and spinning torch threads would starve them on 2 cores.
test: $(BIN)/.installed-cluster
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_training.py
