# `make demo` runs the main job; `make check` (before a commit) and `make test` (everything) test.
# Each creates .venv from the lock on first use, so they work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
JOB ?= image-classifier
# One candidate: AutoKeras' next image candidates are ResNet50 and an ImageNet-pretrained
# EfficientNet-B7 (a download, and minutes per epoch on a CPU). See README, "Jobs".
DEMO_SET ?= --set max_trials=1 --set epochs=5

.PHONY: demo check test test-unit test-integration test-system system-tools lint format \
	benchmark image image-gpu locks clean

$(BIN)/.installed: requirements/ci.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/ci.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

venv: $(BIN)/.installed

## Run the main job on this machine, in ClearML offline mode unless a server is configured.
demo: $(BIN)/.installed
	$(BIN)/ak-remote run $(JOB) $(DEMO_SET)

## Before a commit: lint, types and the unit tier (no processes, no training). docs/testing.md
check: $(BIN)/.installed lint
	$(BIN)/python -m pytest tests/unit

## Lint, type-check and run the whole test suite: every tier (docs/testing.md).
test: $(BIN)/.installed lint system-tools
	$(BIN)/python -m pytest

## One tier at a time (no lint): unit, integration (real training, the SDK, clearml-agent),
## system (Docker, the browser, tmpfs mounts as root, real signals).
test-unit: $(BIN)/.installed
	$(BIN)/python -m pytest tests/unit

test-integration: $(BIN)/.installed
	$(BIN)/python -m pytest tests/integration

test-system: $(BIN)/.installed system-tools
	$(BIN)/python -m pytest tests/system

# What the system tier needs on this machine.
system-tools:
	bash docker/engine.sh ensure   # the Docker-mode test's engine (installed/started if missing)
	bash .ci/browser.sh            # Debian's chromium for the TensorBoard browser tests

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

benchmark: $(BIN)/.installed
	$(BIN)/python benchmarks/run_all.py

## The CPU worker image (docker/README.md); image-gpu the GPU one (several GB of wheels).
image:
	bash docker/build.sh --only cpu

image-gpu:
	bash docker/build.sh --only gpu

locks: $(BIN)/.installed
	bash requirements/lock.sh

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
