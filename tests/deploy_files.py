"""The deployment files (worker images, locks, compose files, the agents' config and unit) and how
tests read them; tests/unit/test_infra.py and tests/integration/test_infra.py check them."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from ak_remote.catalog import PROJECT_ROOT

REPO = PROJECT_ROOT
DOCKERFILES = {
    "cpu": REPO / "docker" / "Dockerfile.cpu",
    "gpu": REPO / "docker" / "Dockerfile.gpu",
}
DEPS_DOCKERFILE = REPO / "docker" / "Dockerfile.deps"
LOCK_OF_IMAGE = {"cpu": "requirements/worker.lock", "gpu": "requirements/worker-gpu.lock"}
LOCKS = ["launcher", "worker", "worker-gpu", "ci"]
SERVER_COMPOSE = REPO / "infra" / "server" / "docker-compose.yml"
AGENTS_COMPOSE = REPO / "infra" / "agents" / "docker-compose.yml"
CONF_TEMPLATE = REPO / "infra" / "agents" / "clearml.conf.template"
AGENT_ENV = REPO / "infra" / "agents" / "agent.env.example"
SERVER_ENV = REPO / "infra" / "server" / ".env.example"
UNIT = REPO / "infra" / "agents" / "clearml-agent@.service"
K8S = REPO / "infra" / "k8s"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements" / f"{name}.lock").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+)", line)
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            values[key.strip()] = value.strip()
    return values


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.partition(" ")
        result.append((keyword.upper(), rest.strip()))
        current = ""
    return result


def arg_defaults(path: Path) -> dict[str, str]:
    defaults = {}
    for keyword, rest in dockerfile_instructions(path):
        if keyword == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            defaults[key] = value
    return defaults


def pip_installs(path: Path) -> list[list[str]]:
    """The argument lists of every `pip install` in the Dockerfile's RUN instructions."""
    installs = []
    for keyword, rest in dockerfile_instructions(path):
        if keyword != "RUN":
            continue
        for command in re.split(r"&&|;", rest):
            words = shlex.split(command)
            if "pip" in words and "install" in words:
                installs.append(words[words.index("install") + 1 :])
    return installs
