#!/usr/bin/env bash
# Build and tag the ak-remote worker images from the repository root.
#
#   docker/build.sh [--only cpu|gpu] [--push] [--dry-run] [-- extra docker build args]
#
# Tags: $IMAGE_REPO:<version>-cpu and $IMAGE_REPO:<version>-gpu, where <version> is ak-remote's
# version from pyproject.toml, plus :cpu / :gpu moving tags for local use. Agents should point
# at the versioned tag (infra/agents/agent.env.example). Versions on the image labels are read
# from the same lock files the images install, so a label cannot disagree with the contents.
#   IMAGE_REPO  image name without tag (default: ak-remote-worker; e.g. registry/team/ak-remote-worker)
#   DOCKER      the docker executable (default: docker)
set -euo pipefail

cd "$(dirname "$0")/.."

IMAGE_REPO="${IMAGE_REPO:-ak-remote-worker}"
DOCKER="${DOCKER:-docker}"
only=""
push=0
dry_run=0
extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --only) only="${2:?--only needs cpu or gpu}"; shift 2 ;;
        --push) push=1; shift ;;
        --dry-run) dry_run=1; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ -n "$only" && "$only" != cpu && "$only" != gpu ]]; then
    echo "build.sh: --only takes cpu or gpu, not $only" >&2
    exit 2
fi

# `name==version` from a lock file, or fail loudly: a silent empty label is worse than no build.
pin() {
    local version
    version="$(sed -n "s/^$1==\([^ ;]*\).*/\1/p" "$2" | head -n 1)"
    if [[ -z "$version" ]]; then
        echo "build.sh: $1 is not pinned in $2" >&2
        exit 1
    fi
    echo "$version"
}

VERSION="$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' pyproject.toml | head -n 1)"
if [[ -z "$VERSION" ]]; then
    echo "build.sh: no version found in pyproject.toml" >&2
    exit 1
fi
VCS_REF="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

run() {
    printf '%q ' "$@"
    echo
    if [[ $dry_run -eq 0 ]]; then "$@"; fi
}

build() {
    local flavour="$1" lock="$2" tf_package="$3"
    shift 3
    local tag="$IMAGE_REPO:$VERSION-$flavour"
    # Assigned one by one so that a missing pin stops the script (set -e).
    local tf keras autokeras clearml agent
    tf="$(pin "$tf_package" "$lock")"
    keras="$(pin keras "$lock")"
    autokeras="$(pin autokeras "$lock")"
    clearml="$(pin clearml "$lock")"
    agent="$(pin clearml-agent "$lock")"
    run "$DOCKER" build \
        --file "docker/Dockerfile.$flavour" \
        --tag "$tag" \
        --tag "$IMAGE_REPO:$flavour" \
        --build-arg "AK_REMOTE_VERSION=$VERSION" \
        --build-arg "TENSORFLOW_VERSION=$tf" \
        --build-arg "KERAS_VERSION=$keras" \
        --build-arg "AUTOKERAS_VERSION=$autokeras" \
        --build-arg "CLEARML_VERSION=$clearml" \
        --build-arg "CLEARML_AGENT_VERSION=$agent" \
        --build-arg "VCS_REF=$VCS_REF" \
        --build-arg "BUILD_DATE=$BUILD_DATE" \
        "$@" "${extra[@]}" \
        .
    if [[ $push -eq 1 ]]; then
        run "$DOCKER" push "$tag"
    fi
}

if [[ -z "$only" || "$only" == cpu ]]; then
    build cpu requirements/worker.lock tensorflow-cpu
fi
if [[ -z "$only" || "$only" == gpu ]]; then
    cudnn="$(pin nvidia-cudnn-cu12 requirements/worker-gpu.lock)"
    build gpu requirements/worker-gpu.lock tensorflow --build-arg "CUDNN_VERSION=$cudnn"
fi
