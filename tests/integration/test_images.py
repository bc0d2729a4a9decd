"""The build scripts' bad-input paths and dry runs, and the registry-digest lookup through a
stand-in `docker` (fast: nothing is built here; tests/system/test_docker_agent.py builds and runs
the image).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ak_remote.catalog import PROJECT_ROOT as REPO
from ak_remote.fleet.images import is_pinned, registry_digest
from tests.helpers import IMAGE_ID

# What clearml-agent needs to clone a template's repository (docker/build.sh), escaped as
# the dry run prints it.
GIT_PACKAGES = "git\\ ca-certificates\\ openssh-client"


def script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/bash", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
        timeout=120,
    )


def test_build_without_an_engine_says_how_to_start_one() -> None:
    result = script("docker/build.sh", "--only", "cpu", env={"DOCKER": "false"})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "build.sh: Docker's engine does not answer (docker info failed): start it "
        "(sudo docker/engine.sh ensure, or systemctl start docker)"
    )
    assert result.stdout == ""


def test_engine_check_names_the_fix_when_docker_is_missing(tmp_path: Path) -> None:
    result = script("docker/engine.sh", "check", env={"PATH": str(tmp_path)})
    assert result.returncode == 1
    assert "no docker command; run docker/engine.sh ensure as root" in result.stderr
    assert script("docker/engine.sh", "restart").returncode == 2


def test_wheelhouse_for_a_lock_whose_wheels_cannot_be_had(tmp_path: Path) -> None:
    lock = tmp_path / "broken.lock"
    lock.write_text("ak-remote-no-such-package==1.0\n")
    cache = tmp_path / "cache"
    # Offline: the failure comes from pip finding no wheel, without asking any index.
    result = script(
        "docker/wheelhouse.sh",
        str(lock),
        env={"AK_REMOTE_CACHE": str(cache), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""},
    )
    assert result.returncode == 1
    assert "could not download the wheels of" in result.stderr
    assert "rerun to resume" in result.stderr
    assert result.stdout == ""  # no wheelhouse path is printed, so no build uses it
    # Only the resumable .partial folder exists, never one a build would take as complete.
    assert [p.suffix for p in (cache / "wheelhouse").iterdir()] == [".partial"]
    missing = script("docker/wheelhouse.sh", str(tmp_path / "none.lock"))
    assert missing.returncode == 2
    assert "no lock file" in missing.stderr


@pytest.mark.parametrize("base", ["registry", "debootstrap", "python:3.11.9-slim-bookworm"])
def test_dry_run_names_the_base_it_would_use(base: str) -> None:
    result = script("docker/build.sh", "--only", "cpu", "--base", base, "--dry-run")
    assert result.returncode == 0, result.stderr
    deps = next(line for line in result.stdout.splitlines() if "Dockerfile.deps" in line)
    if base == "registry":
        # The registry image gets git in docker/Dockerfile.base, and that is the base.
        assert "--file docker/Dockerfile.base" in result.stdout
        assert "BASE_IMAGE=python:3.11.14-slim-bookworm " in result.stdout
        assert "BASE_IMAGE=ak-remote-base:3.11.14-slim-bookworm-git-" in deps
    elif base == "debootstrap":
        # Made with git among its packages, and named by them.
        assert "--include=python3\\,python3-venv\\,passwd\\,git\\," in result.stdout
        assert "BASE_IMAGE=ak-remote-base:bookworm-py311-" in deps
    else:
        assert "Dockerfile.base" not in result.stdout  # a given base is used as is
        assert f"BASE_IMAGE={base} " in deps
    assert f"PACKAGES={GIT_PACKAGES}" in result.stdout or base != "registry"


def test_registry_digest_keeps_the_tag_and_adds_the_pushed_digest(tmp_path: Path) -> None:
    """The RepoDigests parsing (a pushed image needs a registry, which this machine lacks: a
    script stands in for `docker image inspect`'s output)."""
    digest = "sha256:" + "cd" * 32
    fake = tmp_path / "docker"
    fake.write_text(
        "#!/bin/sh\n"
        f"printf 'other.example/x@{IMAGE_ID}\\nreg.example/team/ak-remote-worker@{digest}\\n'\n"
    )
    fake.chmod(0o755)
    tag = "reg.example/team/ak-remote-worker:0.1.0-gpu"
    pinned = registry_digest(tag, docker=str(fake))
    assert pinned == f"{tag}@{digest}"
    assert is_pinned(pinned)
    assert registry_digest("reg.example/team/unrelated:1", docker=str(fake)) is None
