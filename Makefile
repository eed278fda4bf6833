# The two front-door commands (see README.md):
#   make run    set up, then run the whole pipeline (dvc repro) on the embedded synthetic data
#   make test   set up, then run the test suite
#   make bench  benchmarks -> bench/results/latest.md (see README, Benchmarks)
#   make image  the project image with podman or docker (docker/build.sh; BASE_IMAGE, TAG)
#   make lock   rewrite docker/requirements.lock from this venv (after changing dependencies)
#   make exps   the experiments table: params that differ and the headline metrics, 120 columns
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)

.PHONY: setup run test test-fast ui clean bench image lock dvc-deps exps

setup: $(VENV)/.installed

# The versions of docker/requirements.lock (the image's), so the tests run what the image runs.
$(VENV)/.installed: pyproject.toml docker/requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c docker/requirements.lock -e ".[dev]"
	touch $@

run: setup
	$(BIN)/dvc repro
	@echo
	@cat reports/evaluate/classification_report.md
	@echo
	@echo "Headline: reports/evaluate/headline.json ('dvc metrics show'); every number: metrics/*.json"
	@echo "Plots: reports/ and 'dvc plots show' (-> dvc_plots/index.html)"
	@echo "Tracking: mlflow.db -- browse the training runs with: make ui"

# DVC prints a column for every tracked param (over a hundred) and every dependency's hash, and has
# no setting to hide them by default: this is its table with only what differs between the rows,
# dependencies dropped (paths: the only column names with a slash), the headline metrics kept.
exps: setup
	$(BIN)/dvc exp show --no-pager --only-changed --drop '.*/' --keep '^(test_auc|test_acc|threshold|real_as_fake|auc_jpeg_q75)$$'

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

bench: setup  ## benchmarks: bench/results/latest.{json,md}, ~5-15 min on 2 cores
	$(BIN)/python -m bench

# Where no registry is reachable: docker/base-image.sh && make image BASE_IMAGE=localhost/fakeface-base:bookworm
image:  ## the project image with podman or docker (tag: TAG, default localhost/fakeface:<version>)
	docker/build.sh $(TAG)

# dvc.yaml's code deps and params, generated from each stage's imports and the stage registry (a test checks them).
dvc-deps: setup
	$(BIN)/python -m fakeface.stages.codedeps

# From the venv as it is (after `pip install -e .` of changed dependencies), not through setup.
lock:
	$(BIN)/python docker/lock.py

# Prints the URL of the experiment's training runs, then serves the UI on 127.0.0.1:5000.
ui: setup
	$(BIN)/fakeface ui

clean:
	rm -rf data/raw data/manifest.csv data/ingest_report.json data/shards models metrics plots reports checkpoints dvc_plots
