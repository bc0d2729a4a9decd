#!/usr/bin/env bash
# A running Docker engine for docker/build.sh, the Docker-mode tests and CI.
#
#   docker/engine.sh ensure   # as root: install Debian's docker.io, debootstrap and
#                             # python3.11-venv where missing (apt-get); then start dockerd if
#                             # it is not running, and wait until it answers
#   docker/engine.sh check    # exit 0 when `docker info` answers, else one line saying why
#
# For machines without an init system (CI containers, these build hosts): dockerd is started
# in the background, logging to $AK_REMOTE_DOCKERD_LOG (default /var/log/ak-remote-dockerd.log).
# Where systemd manages Docker, start it with `systemctl start docker` instead.
set -euo pipefail

log="${AK_REMOTE_DOCKERD_LOG:-/var/log/ak-remote-dockerd.log}"
wait_s="${AK_REMOTE_DOCKERD_WAIT:-60}"

answers() { docker info >/dev/null 2>&1; }

check() {
    if ! command -v docker >/dev/null 2>&1; then
        echo "engine.sh: no docker command; run docker/engine.sh ensure as root, or install Docker" >&2
        return 1
    fi
    if ! answers; then
        echo "engine.sh: Docker's engine does not answer (docker info failed); run docker/engine.sh ensure as root, or start dockerd" >&2
        return 1
    fi
}

install_missing() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    # Debian's Python 3.11 with venv: the Docker-mode test runs clearml-agent from it, as an
    # agent host would (tests/test_docker_agent.py).
    /usr/bin/python3.11 -c "import ensurepip" >/dev/null 2>&1 || missing+=(python3.11-venv)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "engine.sh: ${missing[*]} missing and cannot install here (needs root and apt-get); install Docker's engine yourself" >&2
        return 1
    fi
    echo "engine.sh: installing ${missing[*]}" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

ensure() {
    if [[ $(id -u) -eq 0 ]]; then
        install_missing
    elif ! answers; then
        echo "engine.sh: Docker's engine does not answer and only root can install or start it here; sudo docker/engine.sh ensure" >&2
        return 1
    fi
    if ! answers; then
        if ! pgrep -x dockerd >/dev/null 2>&1; then
            echo "engine.sh: starting dockerd (log: $log)" >&2
            # setsid: the engine outlives this script and the test or CI step that started it.
            setsid dockerd >>"$log" 2>&1 </dev/null &
        fi
        local waited=0
        until answers; do
            if [[ $waited -ge $wait_s ]]; then
                echo "engine.sh: dockerd did not answer within ${wait_s}s; see $log" >&2
                return 1
            fi
            sleep 1
            waited=$((waited + 1))
        done
    fi
    docker version --format 'engine.sh: Docker engine {{.Server.Version}} is up' >&2
}

case "${1:-}" in
    ensure) ensure ;;
    check) check ;;
    *) echo "usage: docker/engine.sh ensure|check" >&2; exit 2 ;;
esac
