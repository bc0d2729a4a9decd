#!/usr/bin/env bash
# Download the wheels of a lock on this host, for the image's Python (3.11, manylinux x86_64),
# into a cache folder keyed by the lock's hash, and print that folder.
#
#   docker/wheelhouse.sh requirements/worker.lock
#
# The image build installs from it with `pip install --no-index --find-links`, so nothing is
# fetched inside the build: builds work where containers cannot reach PyPI (air-gapped sites,
# or a proxy only the host trusts). A finished folder is marked `.complete` and reused; an
# interrupted download resumes (pip skips wheels already there).
#   AK_REMOTE_CACHE  cache root (default /var/cache/ak-remote, or ~/.cache/ak-remote when that
#                    is not writable)
set -euo pipefail

lock="${1:?usage: docker/wheelhouse.sh LOCK}"
if [[ ! -f "$lock" ]]; then
    echo "wheelhouse.sh: no lock file $lock" >&2
    exit 2
fi
default_cache=/var/cache/ak-remote
if ! mkdir -p "$default_cache" 2>/dev/null || [[ ! -w "$default_cache" ]]; then
    default_cache="${XDG_CACHE_HOME:-$HOME/.cache}/ak-remote"
fi
cache="${AK_REMOTE_CACHE:-$default_cache}"
key="$(sha256sum "$lock" | cut -c1-16)"
dir="$cache/wheelhouse/$(basename "$lock" .lock)-$key"

# At least one wheel per pin (an interrupted run may have left an extra tag of one): the check
# both for a finished download and for a cache someone pruned.
pins="$(grep -cE '^[A-Za-z0-9_.-]+==' "$lock")"
count_wheels() { find "$1" -maxdepth 1 -name '*.whl' 2>/dev/null | wc -l; }

if [[ -f "$dir/.complete" && "$(count_wheels "$dir")" -ge "$pins" ]]; then
    echo "$dir"
    exit 0
fi

partial="$dir.partial"
mkdir -p "$partial"
python="${PYTHON:-python3}"
# Wheels only, for CPython 3.11 on manylinux x86_64 whatever this host runs; the lock is
# complete, so --no-deps. Progress goes to stderr: stdout is the folder's path.
# PIP_CONSTRAINT is cleared: a host-wide constraints file must not veto the lock's pins.
# Bookworm's glibc is 2.36: any manylinux tag up to that runs in the image.
platforms=()
for minor in $(seq 36 -1 17); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
if ! PIP_CONSTRAINT="" "$python" -m pip download --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
    "${platforms[@]}" --platform any \
    --progress-bar off -r "$lock" -d "$partial" >&2; then
    echo "wheelhouse.sh: could not download the wheels of $lock into $partial (network? see pip's error above); rerun to resume" >&2
    exit 1
fi
got="$(count_wheels "$partial")"
if [[ "$got" -lt "$pins" ]]; then
    echo "wheelhouse.sh: $partial holds $got wheels for the $pins pins of $lock; remove it and rerun" >&2
    exit 1
fi
rm -rf "$dir"
mv "$partial" "$dir"
touch "$dir/.complete"
echo "$dir"
