"""The deployment files, each checked by the tool that will read it: hadolint, the Compose spec
schema (check-jsonschema), systemd-analyze, the build script's dry run and the image scripts
(docker/verify_lock.py, docker/cuda_wheel_libs.py). Nothing here needs Docker.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import tomllib

from tests.deploy_files import (
    AGENTS_COMPOSE,
    DEPS_DOCKERFILE,
    DOCKERFILES,
    LOCK_OF_IMAGE,
    REPO,
    SERVER_COMPOSE,
    UNIT,
    arg_defaults,
    lock_pins,
)

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A dev tool installed next to this Python (from requirements/ci.lock)."""
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed: install requirements/ci.lock (make test does)"
    return found


# --- Dockerfiles ----------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", [*sorted(DOCKERFILES), "deps"])
def test_dockerfile_passes_hadolint(flavour: str) -> None:
    path = DOCKERFILES.get(flavour, DEPS_DOCKERFILE)
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_really_lints() -> None:
    """Guard against a hadolint that passes everything (e.g. a stub binary)."""
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "-"],
        input="FROM python:latest\nRUN cd /tmp && pip install flask\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest
    assert "DL3013" in result.stdout  # unpinned pip install


def test_build_script_tags_and_labels_from_the_locks() -> None:
    result = subprocess.run(
        ["bash", str(REPO / "docker" / "build.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "IMAGE_REPO": "registry.invalid/team/ak"},
    )
    lines = [shlex.split(line) for line in result.stdout.splitlines()]
    # Per image: its wheels on the host, the locked environment from them, then the image.
    assert [c[:3] for c in lines if c[0] == "docker/wheelhouse.sh"] == [
        ["docker/wheelhouse.sh", LOCK_OF_IMAGE["cpu"]],
        ["docker/wheelhouse.sh", LOCK_OF_IMAGE["gpu"]],
    ]
    deps = [c for c in lines if c[:4] == ["docker", "build", "--file", "docker/Dockerfile.deps"]]
    assert len(deps) == 2
    # First, once: the registry base plus git, with the package list Dockerfile.base defaults to.
    base = [c for c in lines if c[:4] == ["docker", "build", "--file", "docker/Dockerfile.base"]]
    assert len(base) == 1
    assert lines.index(base[0]) == 0
    base_args = dict(
        base[0][i + 1].split("=", 1) for i, word in enumerate(base[0]) if word == "--build-arg"
    )
    default = arg_defaults(REPO / "docker" / "Dockerfile.base")["PACKAGES"].strip('"')
    assert base_args["PACKAGES"] == default
    assert "git" in base_args["PACKAGES"].split()
    commands = [c for c in lines if c[:2] == ["docker", "build"] and c not in deps + base]
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for command, flavour in zip(commands, ["cpu", "gpu"], strict=True):
        assert command[command.index("--file") + 1] == f"docker/Dockerfile.{flavour}"
        tags = [command[i + 1] for i, word in enumerate(command) if word == "--tag"]
        assert tags == [
            f"registry.invalid/team/ak:{version}-{flavour}",
            f"registry.invalid/team/ak:{flavour}",
        ]
        args = dict(
            command[i + 1].split("=", 1) for i, word in enumerate(command) if word == "--build-arg"
        )
        pins = lock_pins(Path(LOCK_OF_IMAGE[flavour]).stem)
        defaults = arg_defaults(DOCKERFILES[flavour])
        for key in (
            "TENSORFLOW_VERSION",
            "KERAS_VERSION",
            "AUTOKERAS_VERSION",
            "CLEARML_AGENT_VERSION",
        ):
            assert args[key] == defaults[key]
        assert args["CLEARML_VERSION"] == pins["clearml"]
        deps_tag = deps[["cpu", "gpu"].index(flavour)][5]
        assert args["DEPS_IMAGE"] == deps_tag
        assert deps_tag.startswith(f"ak-remote-deps:{flavour}-")
        # Built on the registry image with git, which Dockerfile.base made from the default.
        assert base_args["BASE_IMAGE"] == defaults["BASE_IMAGE"]
        assert args["BASE_IMAGE"] == base[0][base[0].index("--tag") + 1]
        assert command[-1] == "."
    bad = subprocess.run(
        ["bash", str(REPO / "docker" / "build.sh"), "--only", "tpu"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "cpu or gpu" in bad.stderr


def test_verify_lock_accepts_the_installed_versions_and_rejects_others(tmp_path: Path) -> None:
    script = REPO / "docker" / "verify_lock.py"
    good = tmp_path / "good.lock"
    good.write_text(
        f"pytest=={metadata.version('pytest')}\n    # via x\nclick=={metadata.version('click')}\n"
    )
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    ok = subprocess.run(
        [sys.executable, str(script), str(good), "--python", python],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "2 pins match" in ok.stdout
    bad = tmp_path / "bad.lock"
    bad.write_text("pytest==0.0.1\nno-such-package-here==1.0\n")
    failed = subprocess.run(
        [sys.executable, str(script), str(bad), "--python", "2.7", "--project", "click==0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert failed.returncode == 1
    for message in (
        "pytest: locked 0.0.1, installed",
        "no-such-package-here: locked 1.0, not installed",
        "click: locked 0, installed",
        "the lock is for 2.7",
    ):
        assert message in failed.stderr


def test_cuda_wheel_libs_lists_each_wheel_library_folder(tmp_path: Path) -> None:
    for component in ("cudnn", "cublas"):
        (tmp_path / "nvidia" / component / "lib").mkdir(parents=True)
    (tmp_path / "nvidia" / "include-only").mkdir()
    script = str(REPO / "docker" / "cuda_wheel_libs.py")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    found = subprocess.run(
        [sys.executable, script], capture_output=True, text=True, check=True, env=env
    )
    assert found.stdout.split() == [
        str(tmp_path / "nvidia" / "cublas" / "lib"),
        str(tmp_path / "nvidia" / "cudnn" / "lib"),
    ]
    env["PYTHONPATH"] = str(tmp_path / "empty")
    missing = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env)
    assert missing.returncode == 1


# --- Compose files --------------------------------------------------------------------------


@pytest.mark.parametrize("path", [SERVER_COMPOSE, AGENTS_COMPOSE], ids=["server", "agents"])
def test_compose_file_validates_against_the_compose_spec(path: Path) -> None:
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_really_rejects(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yml"
    broken.write_text("services:\n  api:\n    image: x:1\n    gpus_please: 2\n")
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(broken)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0


def test_systemd_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze (package systemd) is needed for this check"
    # Verify an instance with what only a real GPU host has (Docker, the agent) swapped out.
    text = (
        UNIT.read_text()
        .replace("/opt/clearml-agent/bin/clearml-agent", shutil.which("true") or "/bin/true")
        .replace("Requires=docker.service\n", "")
        .replace(" docker.service", "")
    )
    instance = tmp_path / "clearml-agent@0.service"
    instance.write_text(text)
    result = subprocess.run(
        [analyze, "verify", str(instance)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Unknown" not in result.stderr, result.stderr
    assert "ignoring" not in result.stderr, result.stderr
