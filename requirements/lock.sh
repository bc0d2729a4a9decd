#!/usr/bin/env bash
# Regenerate every lock from pyproject.toml, for the Python and platform the images and CI run:
#   launcher.lock    base dependencies (what `ak-remote` needs on a laptop)
#   worker.lock      train + agent extras (what the CPU worker image installs)
#   worker-gpu.lock  the same, with `tensorflow[and-cuda]` in place of `tensorflow-cpu`, for the
#                    GPU image: its base (tensorflow/tensorflow:<version>-gpu) already ships
#                    TensorFlow, but its system CUDA/cuDNN are older than the ones TensorFlow
#                    was built with, so the image also installs the CUDA wheels pinned here
#   ci.lock          every extra (what CI and `make test` install)
# The index is uv's configured default; none is named here.
# Usage: bash requirements/lock.sh [extra uv pip compile flags, e.g. --upgrade-package keras]
set -euo pipefail

cd "$(dirname "$0")/.."

UV="${UV:-}"
if [[ -z "$UV" ]]; then
    if command -v uv >/dev/null 2>&1; then UV=uv; else UV=.venv/bin/uv; fi
fi
# Both worker images run Python 3.11: python:3.11-slim, and the TensorFlow GPU image
# (built from tensorflow/build's runtime Dockerfiles, whose PYTHON_VERSION is python3.11).
PYTHON_VERSION="${PYTHON_VERSION:-3.11}"
PLATFORM="${PLATFORM:-x86_64-manylinux_2_28}"

# Read TensorFlow's version from the pyproject pin so the GPU lock cannot drift from it.
TF_VERSION="$(sed -n 's/^ *"tensorflow-cpu==\([^;"]*\).*/\1/p' pyproject.toml | head -n 1)"
if [[ -z "$TF_VERSION" ]]; then
    echo "lock.sh: no tensorflow-cpu==X pin found in pyproject.toml" >&2
    exit 1
fi

compile() {
    local out="$1"
    shift
    "$UV" pip compile pyproject.toml "$@" \
        --python-version "$PYTHON_VERSION" --python-platform "$PLATFORM" \
        --no-header --quiet -o "requirements/$out"
    drop_constraint_notes "requirements/$out"
    echo "wrote requirements/$out"
}

# uv lists "-c requirements/ci.lock" among the reasons of every constrained pin; drop that
# note (it is true of every line) so the "# via" comments say only which package needs what.
drop_constraint_notes() {
    python3 - "$1" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path, encoding="utf-8").read()
text = text.replace("    #   -c requirements/ci.lock\n", "")
# a "via" block left with a single reason goes back to uv's one-line form
text = re.sub(r"    # via\n    #   ([^\n]+)\n(?!    #   )", r"    # via \1\n", text)
open(path, "w", encoding="utf-8").write(text)
PY
}

# CI's lock first; every other lock is constrained by it, so a package shared by two profiles
# has one version everywhere, the one CI tests (without this the launcher alone resolves
# `requests` past the bound clearml-agent puts on it in CI).
compile ci.lock --all-extras "${@}"
compile launcher.lock --constraint requirements/ci.lock "${@}"
compile worker.lock --extra train --extra agent --constraint requirements/ci.lock "${@}"

# GPU: drop tensorflow-cpu (an override whose marker is never true removes a requirement)
# and ask for tensorflow[and-cuda] at the same version; every shared pin resolves as in
# ci.lock (tests/test_infra.py checks it).
overrides="$(mktemp)"
trap 'rm -f "$overrides"' EXIT
echo "tensorflow-cpu; sys_platform == 'never'" >"$overrides"
echo "tensorflow[and-cuda]==$TF_VERSION" |
    compile worker-gpu.lock - --extra train --extra agent --override "$overrides" \
        --constraint requirements/ci.lock "${@}"
