#!/usr/bin/env bash
# Build and tag the ak-remote worker images from the repository root, with no network inside
# the build.
#
#   docker/build.sh [--only cpu|gpu] [--base auto|registry|debootstrap|IMAGE] [--push] [--dry-run]
#                   [-- extra docker build args]
#
# Steps per image: the lock's wheels are downloaded on this host (docker/wheelhouse.sh, cached by
# lock hash); the base plus the locked environment becomes ak-remote-deps:<flavour>-<lock>-<base>
# (docker/Dockerfile.deps, reused while lock and base are unchanged); ak-remote's own wheel and
# jobs/ go on top (docker/Dockerfile.<flavour>). Prints the base it used and the image ID.
#
# Base (--base): `registry` is python:3.11.14-slim-bookworm from a registry plus git
# (docker/Dockerfile.base, whose apt-get is the one step that uses the network inside a build);
# `debootstrap` makes one from Debian bookworm packages (Python 3.11, git) on this host and
# imports it as ak-remote-base:bookworm-py311-<packages hash>, for hosts that reach no image
# registry; `auto` (default) takes the registry image when it is here or can be pulled, else
# debootstrap; anything else is used as the base image as is (it needs git for templates that
# record a git repository: the build warns when it has none).
# Tags: $IMAGE_REPO:<version>-<flavour> and the moving $IMAGE_REPO:<flavour>.
#   IMAGE_REPO              image name without tag (default: ak-remote-worker)
#   DOCKER                  the docker executable (default: docker)
#   AK_REMOTE_DEBIAN_MIRROR Debian mirror for debootstrap (default: http://deb.debian.org/debian)
set -euo pipefail

cd "$(dirname "$0")/.."

IMAGE_REPO="${IMAGE_REPO:-ak-remote-worker}"
DOCKER="${DOCKER:-docker}"
REGISTRY_BASE="python:3.11.14-slim-bookworm"
# What clearml-agent needs to clone a template's repository inside the container (templates
# synced from a checkout with a remote record repository + commit, not the script): git, CA
# certificates for https remotes, ssh for git@host: remotes. Both bases get the same packages.
GIT_PACKAGES="git ca-certificates openssh-client"
# Packages of the debootstrap base: Python 3.11 with venv (pip comes as a wheel with it),
# useradd for the image's user, and the git packages.
DEBOOTSTRAP_PACKAGES="python3,python3-venv,passwd,${GIT_PACKAGES// /,}"
# Named by its package list, so a changed list makes a new base instead of reusing an old one.
DEBOOTSTRAP_BASE="ak-remote-base:bookworm-py311-$(printf %s "$DEBOOTSTRAP_PACKAGES" | sha256sum | cut -c1-8)"
MIRROR="${AK_REMOTE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
only=""
base_choice=auto
push=0
dry_run=0
extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --only) only="${2:?--only needs cpu or gpu}"; shift 2 ;;
        --base) base_choice="${2:?--base needs auto, registry, debootstrap or an image}"; shift 2 ;;
        --push) push=1; shift ;;
        --dry-run) dry_run=1; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ -n "$only" && "$only" != cpu && "$only" != gpu ]]; then
    echo "build.sh: --only takes cpu or gpu, not $only" >&2
    exit 2
fi

say() { echo "build.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# `name==version` from a lock file, or fail loudly: a silent empty label is worse than no build.
pin() {
    local version
    version="$(sed -n "s/^$1==\([^ ;]*\).*/\1/p" "$2" | head -n 1)"
    [[ -n "$version" ]] || die "$1 is not pinned in $2"
    echo "$version"
}

VERSION="$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' pyproject.toml | head -n 1)"
[[ -n "$VERSION" ]] || die "no version found in pyproject.toml"
VCS_REF="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
# The commit's time, not the clock's: the same checkout and lock then build the same image ID.
BUILD_DATE="$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo unknown)"

run() {
    printf '%q ' "$@"
    echo
    if [[ $dry_run -eq 0 ]]; then "$@"; fi
}

have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }
image_id() { "$DOCKER" image inspect --format '{{.Id}}' "$1"; }

cleanup_dirs=()
cleanup() { [[ ${#cleanup_dirs[@]} -eq 0 ]] || rm -rf "${cleanup_dirs[@]}"; }
trap cleanup EXIT

debootstrap_base() {
    if have_image "$DEBOOTSTRAP_BASE"; then
        say "base image: $DEBOOTSTRAP_BASE (made earlier with debootstrap, reused)"
        return
    fi
    command -v debootstrap >/dev/null 2>&1 \
        || die "debootstrap is not installed: apt-get install debootstrap (docker/engine.sh ensure does), or pass --base IMAGE"
    [[ $(id -u) -eq 0 ]] || die "debootstrap needs root: run as root, or pass --base IMAGE"
    local root
    root="$(mktemp -d "${TMPDIR:-/tmp}/ak-remote-base.XXXXXX")"
    cleanup_dirs+=("$root")
    say "making the base with debootstrap bookworm from $MIRROR (about a minute)"
    local started=$SECONDS
    debootstrap --variant=minbase --include="$DEBOOTSTRAP_PACKAGES" bookworm "$root" "$MIRROR" \
        >"$root.log" 2>&1 || { tail -n 20 "$root.log" >&2; rm -f "$root.log"; die "debootstrap failed (mirror $MIRROR reachable? set AK_REMOTE_DEBIAN_MIRROR)"; }
    rm -f "$root.log"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    # `docker import` is all or nothing: a failed import leaves no tag behind.
    tar -C "$root" -c . | "$DOCKER" import \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$DEBOOTSTRAP_BASE" >/dev/null
    say "base image: $DEBOOTSTRAP_BASE (made now with debootstrap bookworm, $((SECONDS - started))s)"
}

# The registry image plus the git packages (docker/Dockerfile.base), tagged by that file, the
# package list and the registry image's ID, so it is built once per change of any of them.
registry_base_with_git() {
    local key tag
    key="$( { cat docker/Dockerfile.base; echo "$GIT_PACKAGES"; image_id "$REGISTRY_BASE"; } \
        | sha256sum | cut -c1-12)"
    tag="ak-remote-base:${REGISTRY_BASE##*:}-git-$key"
    BASE="$tag"
    if have_image "$tag"; then
        say "base image: $tag ($REGISTRY_BASE with git, reused)"
        return
    fi
    local started=$SECONDS context
    # Dockerfile.base copies nothing: an empty folder is its whole context.
    context="$(mktemp -d "${TMPDIR:-/tmp}/ak-remote-base-context.XXXXXX")"
    cleanup_dirs+=("$context")
    run "$DOCKER" build --file docker/Dockerfile.base --tag "$tag" \
        --build-arg "BASE_IMAGE=$REGISTRY_BASE" --build-arg "PACKAGES=$GIT_PACKAGES" \
        "$context" \
        || die "adding git to $REGISTRY_BASE failed (apt-get inside the build needs its Debian mirror); pass --base debootstrap, or --base an image that has git"
    say "base image: $tag ($REGISTRY_BASE with git, built in $((SECONDS - started))s)"
}

# A given base is used as is; say so when it cannot clone a template's repository.
warn_without_git() {
    if ! "$DOCKER" run --rm --network none --entrypoint sh "$1" -c 'command -v git' >/dev/null 2>&1; then
        say "warning: base image $1 has no git: templates that record a git repository (synced from a checkout with a remote) cannot run in this image; add $GIT_PACKAGES to it, or use --base auto"
    fi
}

resolve_base() {
    case "$base_choice" in
        debootstrap) debootstrap_base; BASE="$DEBOOTSTRAP_BASE" ;;
        registry|auto)
            if have_image "$REGISTRY_BASE"; then
                say "base image: $REGISTRY_BASE (already here)"
                registry_base_with_git
            elif "$DOCKER" pull --quiet "$REGISTRY_BASE" >/dev/null 2>&1; then
                say "base image: $REGISTRY_BASE (pulled)"
                registry_base_with_git
            elif [[ "$base_choice" == registry ]]; then
                die "cannot pull $REGISTRY_BASE (no registry reachable?); pass --base debootstrap"
            else
                say "no registry reachable for $REGISTRY_BASE: making the base from Debian packages"
                debootstrap_base
                BASE="$DEBOOTSTRAP_BASE"
            fi
            ;;
        *)
            have_image "$base_choice" || "$DOCKER" pull --quiet "$base_choice" >/dev/null \
                || die "base image $base_choice is neither here nor pullable"
            say "base image: $base_choice (given)"
            BASE="$base_choice"
            warn_without_git "$BASE"
            ;;
    esac
}

# The base plus the locked environment, tagged by lock and base so it is built once per change.
deps_image() {
    local flavour="$1" lock="$2" wheelhouse key tag context
    key="$(sha256sum "$lock" | cut -c1-12)"
    if [[ $dry_run -eq 1 ]]; then
        DEPS="ak-remote-deps:$flavour-$key"
        run docker/wheelhouse.sh "$lock"
        run "$DOCKER" build --file docker/Dockerfile.deps --tag "$DEPS" \
            --build-arg "BASE_IMAGE=$BASE" WHEELHOUSE_STAGING_DIR
        return
    fi
    tag="ak-remote-deps:$flavour-$key-$(image_id "$BASE" | sed 's/^sha256://' | cut -c1-12)"
    DEPS="$tag"
    if have_image "$tag"; then
        say "locked environment: $tag (reused)"
        return
    fi
    local started=$SECONDS
    wheelhouse="$(docker/wheelhouse.sh "$lock")" \
        || die "the wheels of $lock are missing and could not be downloaded (see above); rerun docker/wheelhouse.sh $lock where PyPI is reachable"
    # Staging folder on the wheelhouse's file system, so the wheels are hard links, not copies.
    context="$(mktemp -d "$(dirname "$wheelhouse")/context.XXXXXX")"
    cleanup_dirs+=("$context")
    cp -al "$wheelhouse" "$context/wheels" 2>/dev/null || cp -a "$wheelhouse" "$context/wheels"
    cp "$lock" "$context/lock.txt"
    say "wheels of $lock ready in $((SECONDS - started))s: $wheelhouse"
    started=$SECONDS
    run "$DOCKER" build --file docker/Dockerfile.deps --tag "$tag" \
        --build-arg "BASE_IMAGE=$BASE" "$context"
    rm -rf "$context"
    say "locked environment $tag built in $((SECONDS - started))s"
}

project_wheel() {
    [[ -n "${PROJECT_WHEEL_DONE:-}" ]] && return
    [[ $dry_run -eq 1 ]] || rm -rf build/ak-remote-wheel
    # Built on the host (the build backend comes from PyPI here), installed --no-index inside.
    run "${PYTHON:-python3}" -m pip wheel --quiet --no-deps --wheel-dir build/ak-remote-wheel .
    PROJECT_WHEEL_DONE=1
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
    deps_image "$flavour" "$lock"
    project_wheel
    local started=$SECONDS
    run "$DOCKER" build \
        --file "docker/Dockerfile.$flavour" \
        --tag "$tag" \
        --tag "$IMAGE_REPO:$flavour" \
        --build-arg "DEPS_IMAGE=$DEPS" \
        --build-arg "BASE_IMAGE=$BASE" \
        --build-arg "AK_REMOTE_VERSION=$VERSION" \
        --build-arg "TENSORFLOW_VERSION=$tf" \
        --build-arg "KERAS_VERSION=$keras" \
        --build-arg "AUTOKERAS_VERSION=$autokeras" \
        --build-arg "CLEARML_VERSION=$clearml" \
        --build-arg "CLEARML_AGENT_VERSION=$agent" \
        --build-arg "VCS_REF=$VCS_REF" \
        --build-arg "BUILD_DATE=$BUILD_DATE" \
        "$@" ${extra[@]+"${extra[@]}"} \
        .
    [[ $dry_run -eq 1 ]] && return
    # The image ID is the digest of the image's configuration: what `docker run` and the agents'
    # `--docker sha256:...` accept, and what a run records (AK_REMOTE_IMAGE).
    say "built $tag in $((SECONDS - started))s on $BASE: $(image_id "$tag")"
    if [[ $push -eq 1 ]]; then
        run "$DOCKER" push "$tag"
        say "pushed $("$DOCKER" image inspect --format '{{join .RepoDigests " "}}' "$tag")"
    fi
}

if [[ $dry_run -eq 0 ]]; then
    "$DOCKER" info >/dev/null 2>&1 \
        || die "Docker's engine does not answer (docker info failed): start it (sudo docker/engine.sh ensure, or systemctl start docker)"
    resolve_base
else
    case "$base_choice" in
        auto|registry)
            BASE="ak-remote-base:${REGISTRY_BASE##*:}-git-KEY"
            run "$DOCKER" build --file docker/Dockerfile.base --tag "$BASE" \
                --build-arg "BASE_IMAGE=$REGISTRY_BASE" --build-arg "PACKAGES=$GIT_PACKAGES" \
                EMPTY_DIR
            ;;
        debootstrap)
            run debootstrap --variant=minbase --include="$DEBOOTSTRAP_PACKAGES" bookworm ROOT "$MIRROR"
            BASE="$DEBOOTSTRAP_BASE"
            ;;
        *) BASE="$base_choice" ;;
    esac
fi

if [[ -z "$only" || "$only" == cpu ]]; then
    build cpu requirements/worker.lock tensorflow-cpu
fi
if [[ -z "$only" || "$only" == gpu ]]; then
    cudnn="$(pin nvidia-cudnn-cu12 requirements/worker-gpu.lock)"
    build gpu requirements/worker-gpu.lock tensorflow --build-arg "CUDNN_VERSION=$cudnn"
fi
