# Two commands for a fresh machine: `make run` (install, precompute digits if needed, serve) and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
RUN ?= data/runs/digits
PORT ?= 8501

.PHONY: run methods test bench fashion fashion-analyses

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Each stage is skipped when its last artifact exists; an interrupted stage resumes.
run: $(BIN)/.installed
	@test -f $(RUN)/metrics.json || $(BIN)/python -m precompute all --dataset digits --alpha 0.5 --models 5000 --seed 0 --out $(RUN)
	@test -f $(RUN)/analysis.json || $(BIN)/python -m precompute analyze --run $(RUN)
	@test -f $(RUN)/attribution/methods_eval.json || $(MAKE) --no-print-directory methods RUN=$(RUN)
	$(BIN)/streamlit run app.py --server.address localhost --server.port $(PORT)  # settings: .streamlit/config.toml

# The attribution methods that cost seconds on digits (12 s here) and their LDS on the held-out run, so the
# Methods page has a table after `make run`; TRAK, TracIn and ssl-esvm retrain or train models: run them by hand.
CHEAP_METHODS := datamodels diff-of-means empirical-influence representation
methods: $(BIN)/.installed
	for m in $(CHEAP_METHODS); do $(BIN)/python -m precompute attribute --run $(RUN) --method $$m || exit 1; done
	$(BIN)/python -m precompute attribute --run $(RUN) --method influence --influence-params last
	$(BIN)/python -m precompute methods-eval --run $(RUN) --modes none

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

# Fashion-MNIST at full size on a CPU with the measured recipe (README, "Fashion-MNIST: the CPU recipe and the resumable full-size run").
# Rerun after a kill and it goes on where it stopped: train and fit resume their shards and blocks (and
# are no-ops when done); each later stage reruns only when its inputs are newer than its output (make's
# timestamps), so a kill loses at most the stage in flight. Every variable can be overridden, e.g.
# `make fashion FASHION_TARGETS=test:0-999` to fit a subset first (a later `test` keeps it).
FASHION_RUN ?= data/runs/fashion
FASHION_DATASET ?= fashion-mnist
# 8 models per batch: 200 per batch cost 4.2 CPU s per model at full size, half of it system time (README).
FASHION_TRAIN ?= --arch mlp --hidden 128 --epochs 10 --precision bf16 --alpha 0.5 --batch-models 8
FASHION_MODELS ?= 2000
FASHION_HELDOUT ?= 200
FASHION_TARGETS ?= test
# 32 targets a block: a block shares one working set, so at 60,000 features larger blocks pay for a wider union
# (one thread: 0.274 CPU s a test target at 31 a block, 0.412 at 124), though the 2 GiB budget allows 94.
FASHION_FIT ?= --block-targets 32
FASHION_EVAL ?= --no-complexity
FASHION_ANALYZE ?=
# The methods that scale to 60,000 images here, cheapest first. Not tracin: it keeps every training image's
# gradient at each checkpoint, 24 GB per checkpoint for the 128-unit MLP at 60,000 images (6.1 GB at 32 units).
FASHION_METHODS ?= datamodels diff-of-means empirical-influence representation influence trak
FASHION_ATTRIBUTE_influence ?= --influence-params last
comma := ,
space := $(subst ,, )
PRECOMPUTE = OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m precompute

fashion: $(BIN)/.installed
	$(PRECOMPUTE) train --dataset $(FASHION_DATASET) $(FASHION_TRAIN) --models $(FASHION_MODELS) --seed 0 --out $(FASHION_RUN)
	$(PRECOMPUTE) fit --run $(FASHION_RUN) --targets $(FASHION_TARGETS) $(FASHION_FIT)
	$(PRECOMPUTE) train --dataset $(FASHION_DATASET) $(FASHION_TRAIN) --models $(FASHION_HELDOUT) --seed 1 --out $(FASHION_RUN)/heldout
	@$(MAKE) --no-print-directory fashion-analyses

F := $(FASHION_RUN)
FASHION_ATTRIBUTIONS := $(foreach m,$(FASHION_METHODS),$(F)/attribution/$(m)/meta.json)
fashion-analyses: $(F)/attribution/methods_eval.json

$(F)/metrics.json: $(F)/fit.json $(F)/heldout/masks.npy
	$(PRECOMPUTE) eval --run $(F) --heldout $(F)/heldout $(FASHION_EVAL) --force

$(F)/analysis.json: $(F)/fit.json
	$(PRECOMPUTE) analyze --run $(F) $(FASHION_ANALYZE)

# Every method after analyze: its control models (representation, influence, tracin) are analyze's.
$(F)/attribution/%/meta.json: $(F)/analysis.json
	$(PRECOMPUTE) attribute --run $(F) --method $* $(FASHION_ATTRIBUTE_$*)

$(F)/attribution/methods_eval.json: $(F)/metrics.json $(FASHION_ATTRIBUTIONS)
	$(PRECOMPUTE) methods-eval --run $(F) --methods $(subst $(space),$(comma),$(strip $(FASHION_METHODS))) --modes none
