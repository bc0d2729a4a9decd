# The two commands the README starts with: `make demo` and `make test`.
# Both create .venv from the lock on first use, so they work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
JOB ?= image-classifier
# One candidate: AutoKeras' next image candidates are ResNet50 and an ImageNet-pretrained
# EfficientNet-B7 (a download, and minutes per epoch on a CPU). See README, "Jobs".
DEMO_SET ?= --set max_trials=1 --set epochs=5

.PHONY: demo test lint format benchmark image image-gpu locks clean

$(BIN)/.installed: requirements/ci.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/ci.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

venv: $(BIN)/.installed

## Run the main job on this machine, in ClearML offline mode unless a server is configured.
demo: $(BIN)/.installed
	$(BIN)/ak-remote run $(JOB) $(DEMO_SET)

## Lint, type-check and run the whole test suite.
test: $(BIN)/.installed lint
	bash docker/engine.sh ensure   # the Docker-mode test's engine (installed/started if missing)
	bash .ci/browser.sh            # Debian's chromium for the TensorBoard browser tests
	$(BIN)/python -m pytest

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
