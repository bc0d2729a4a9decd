"""The deployment files: worker images, locks, server and agent compose files, agent config,
systemd unit, Kubernetes values, read in this process and checked against the locks they must
agree with and with clearml-agent's config loader and argument parser. The checks by the tools
that read them (hadolint, the Compose spec schema, systemd-analyze, the build scripts):
tests/integration/test_infra.py.
"""

from __future__ import annotations

import json
import re
import shlex
import string
from pathlib import Path

import pytest
import tomllib
import yaml

from ak_remote.fleet.agents import build_agent_commands, load_queue_file
from tests.deploy_files import (
    AGENT_ENV,
    AGENTS_COMPOSE,
    CONF_TEMPLATE,
    DEPS_DOCKERFILE,
    DOCKERFILES,
    K8S,
    LOCK_OF_IMAGE,
    LOCKS,
    REPO,
    SERVER_COMPOSE,
    SERVER_ENV,
    UNIT,
    arg_defaults,
    canonical,
    dockerfile_instructions,
    lock_pins,
    pip_installs,
    read_env_file,
)

IMAGE_UID = "10001"
CONF_PLACEHOLDERS = {
    "CLEARML_API_HOST",
    "CLEARML_WEB_HOST",
    "CLEARML_FILES_HOST",
    "AK_REMOTE_GPU_IMAGE",
    "AK_REMOTE_SHM_SIZE",
}
SECRET_WORDS = ("SECRET", "PASSWORD", "TOKEN", "ACCESS_KEY", "PASS")


def test_locked_environment_installs_only_from_the_wheelhouse() -> None:
    """Dockerfile.deps: the lock, from wheels only (no index), in a stage the image leaves out."""
    installs = pip_installs(DEPS_DOCKERFILE)
    assert installs == [
        [
            "--no-index",
            "--find-links",
            "/wheelhouse/wheels",
            "--no-deps",
            "-r",
            "/wheelhouse/lock.txt",
        ]
    ], installs
    instructions = dockerfile_instructions(DEPS_DOCKERFILE)
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert froms == ["${BASE_IMAGE} AS install", "${BASE_IMAGE}"]
    # Only the virtual environment reaches the final stage, never the wheels.
    last_stage = instructions[[k for k, _ in instructions].index("FROM", 3) :]
    assert [rest for k, rest in last_stage if k == "COPY"] == ["--from=install /opt/venv /opt/venv"]


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_image_installs_exactly_its_lock_and_the_project(flavour: str) -> None:
    path = DOCKERFILES[flavour]
    lock = LOCK_OF_IMAGE[flavour]
    installs = pip_installs(path)
    assert installs == [["--no-index", "--no-deps", "/tmp/ak-remote-wheel/*.whl"]], installs
    copies = [rest for keyword, rest in dockerfile_instructions(path) if keyword == "COPY"]
    assert f"{lock} {lock}" in copies
    assert arg_defaults(path)["DEPS_IMAGE"] == f"ak-remote-deps:{flavour}"
    # The build fails unless the environment equals the lock (verify_lock.py runs in the image).
    text = path.read_text()
    assert f"docker/verify_lock.py {lock} --python 3.11" in text
    assert '--project "ak-remote==${AK_REMOTE_VERSION}"' in text


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_image_runs_as_non_root_and_holds_no_secret(flavour: str) -> None:
    instructions = dockerfile_instructions(DOCKERFILES[flavour])
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users == [f"{IMAGE_UID}:{IMAGE_UID}"]
    assert instructions[-2][0] == "USER"  # nothing after it runs as root
    for keyword, rest in instructions:
        if keyword in {"ENV", "ARG"}:
            for word in SECRET_WORDS:
                assert word not in rest.upper(), f"{keyword} {rest}"


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_image_tells_the_agent_to_install_nothing(flavour: str) -> None:
    env_lines = " ".join(
        rest for keyword, rest in dockerfile_instructions(DOCKERFILES[flavour]) if keyword == "ENV"
    )
    for setting in (
        "CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL=1",
        "CLEARML_AGENT_SKIP_CONTAINER_APT=1",
        "CLEARML_AGENT_NO_UPDATE=1",
        "PIP_NO_INDEX=1",
    ):
        assert setting in env_lines
    assert "LOCAL_PYTHON=/opt/venv/bin/python" in env_lines
    assert "PATH=/opt/venv/bin:$PATH" in env_lines


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_image_labels_and_base_carry_the_locked_versions(flavour: str) -> None:
    defaults = arg_defaults(DOCKERFILES[flavour])
    pins = lock_pins(Path(LOCK_OF_IMAGE[flavour]).stem)
    tf_package = "tensorflow-cpu" if flavour == "cpu" else "tensorflow"
    assert defaults["TENSORFLOW_VERSION"] == pins[tf_package]
    assert defaults["KERAS_VERSION"] == pins["keras"]
    assert defaults["AUTOKERAS_VERSION"] == pins["autokeras"]
    assert defaults["CLEARML_VERSION"] == pins["clearml"]
    assert defaults["CLEARML_AGENT_VERSION"] == pins["clearml-agent"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert defaults["AK_REMOTE_VERSION"] == project["version"]
    text = DOCKERFILES[flavour].read_text()
    for label in ("tensorflow", "keras", "autokeras", "clearml", "clearml-agent"):
        assert f"io.ak-remote.{label}.version=" in text
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", defaults["BASE_IMAGE"])
    assert arg_defaults(DEPS_DOCKERFILE)["BASE_IMAGE"] == defaults["BASE_IMAGE"]
    if flavour == "gpu":
        assert defaults["CUDNN_VERSION"] == pins["nvidia-cudnn-cu12"]
        assert "nvidia-cudnn-cu12" in pins  # CUDA and cuDNN as wheels, from PyPI


def test_every_lock_pins_the_versions_ci_tests_with() -> None:
    ci = lock_pins("ci")
    for name in ("launcher", "worker", "worker-gpu"):
        pins = lock_pins(name)
        # the GPU image's `tensorflow` is the package CI tests as `tensorflow-cpu`
        if "tensorflow" in pins and "tensorflow-cpu" not in pins:
            pins["tensorflow-cpu"] = pins.pop("tensorflow")
        differ = {p: (v, ci[p]) for p, v in pins.items() if p in ci and ci[p] != v}
        assert not differ, f"{name}.lock differs from ci.lock: {differ}"
        only_here = set(pins) - set(ci)
        if name == "worker-gpu":  # TensorFlow's CUDA wheels are the only GPU-only packages
            assert all(p.startswith("nvidia-") for p in only_here), only_here
        else:
            assert not only_here, f"{name}.lock has packages CI never installs: {only_here}"


def test_locks_hold_the_pyproject_pins() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def pins_of(requirements: list[str]) -> dict[str, str]:
        pins = {}
        for requirement in requirements:
            spec, _, marker = requirement.partition(";")
            if "darwin" in marker and "!=" not in marker:
                continue  # macOS-only variant; the locks are for Linux
            name, _, version = spec.strip().partition("==")
            pins[canonical(name)] = version.strip()
        return pins

    base = pins_of(project["dependencies"])
    profile = {
        "launcher": base,
        "worker": {**base, **pins_of(extras["train"]), **pins_of(extras["agent"])},
        "ci": {k: v for extra in extras.values() for k, v in pins_of(extra).items()} | base,
    }
    profile["worker-gpu"] = {
        ("tensorflow" if k == "tensorflow-cpu" else k): v for k, v in profile["worker"].items()
    }
    for lock, wanted in profile.items():
        pins = lock_pins(lock)
        for name, version in wanted.items():
            assert pins.get(name) == version, f"{lock}.lock: {name} {pins.get(name)} != {version}"


def test_lock_script_regenerates_the_gpu_lock_from_the_same_pyproject_pin() -> None:
    script = (REPO / "requirements" / "lock.sh").read_text()
    for lock in LOCKS:
        assert f"{lock}.lock" in script
    assert '"tensorflow[and-cuda]==$TF_VERSION"' in script
    assert "--python-version" in script
    assert '"${PYTHON_VERSION:-3.11}"' in script
    assert "http" not in script  # no index host in committed files


def test_dockerignore_sends_only_what_the_images_copy() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                out, i = out + pattern[i : end + 1], end + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out + "$")

    def sent(path: str) -> bool:
        """Docker's rule: the last pattern matching the path or one of its parents wins."""
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            if any(regex(pattern.lstrip("!")).match(p) for p in prefixes):
                excluded = not negate
        return not excluded

    for flavour, dockerfile in DOCKERFILES.items():
        for keyword, rest in dockerfile_instructions(dockerfile):
            if keyword == "COPY":
                for source in shlex.split(rest)[:-1]:
                    source = source.rstrip("/")
                    assert sent(source), f"{flavour}: COPY {source} is excluded"
                    assert sent(f"{source}/x.py") or not (REPO / source).is_dir()
    for private in (
        ".venv/bin/python",
        ".git/config",
        "infra/server/.env",
        "infra/agents/agent.env",
        "runs/x/model.keras",
        "ak_remote/__pycache__/cli.cpython-311.pyc",
        "tests/unit/test_infra.py",
        "clearml.conf",
    ):
        assert not sent(private), private


def default_of(value: str) -> str:
    """`${NAME:-default}` -> default; `${NAME:?msg}` is kept as is (no default: must be set)."""
    match = re.fullmatch(r"\$\{(\w+):-(.*)\}", value)
    return match.group(2) if match else value


def test_server_runs_the_official_images_pinned_with_persistent_volumes() -> None:
    compose = yaml.safe_load(SERVER_COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {
        "apiserver",
        "webserver",
        "fileserver",
        "async_delete",
        "mongo",
        "elasticsearch",
        "redis",
    }
    env = read_env_file(SERVER_ENV)
    images = {name: default_of(service["image"]) for name, service in services.items()}
    for name, image in images.items():
        repository, _, tag = image.rpartition(":")
        assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{name}: {image} is not pinned to a version"
        assert repository in {"clearml/server", "mongo", "elasticsearch", "redis"}
    for name in ("apiserver", "webserver", "fileserver", "async_delete"):
        assert images[name] == env["CLEARML_SERVER_IMAGE"]
    assert images["mongo"] == env["CLEARML_MONGO_IMAGE"]
    assert images["elasticsearch"] == env["CLEARML_ELASTIC_IMAGE"]
    assert images["redis"] == env["CLEARML_REDIS_IMAGE"]
    declared = set(compose["volumes"])
    for name, data_dir in [
        ("mongo", "/data/db"),
        ("elasticsearch", "/usr/share/elasticsearch/data"),
        ("redis", "/data"),
        ("fileserver", "/mnt/fileserver"),
        ("apiserver", "/mnt/fileserver"),
    ]:
        mounts = {m.split(":")[1]: m.split(":")[0] for m in services[name]["volumes"]}
        assert mounts[data_dir] in declared, f"{name}: {data_dir} is not on a named volume"
    for name in ("mongo", "elasticsearch", "redis"):
        assert "ports" not in services[name]  # databases stay on the internal network
    secure = services["apiserver"]["environment"]
    for key in (
        "CLEARML__secure__auth__token_secret",
        "CLEARML__secure__http__session_secret__apiserver",
    ):
        assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", secure[key]), f"{key} must come from .env"


@pytest.mark.parametrize("path", [SERVER_ENV, AGENT_ENV], ids=["server", "agent"])
def test_env_examples_hold_placeholders_only(path: Path) -> None:
    for key, value in read_env_file(path).items():
        if any(word in key for word in SECRET_WORDS):
            assert value == "change-me", f"{path.name}: {key} must be a placeholder"
        assert "change-me" in value or not key.endswith("_HOST"), key


def test_agent_containers_one_gpu_each_on_declared_queues() -> None:
    compose = yaml.safe_load(AGENTS_COMPOSE.read_text())
    queues = {q.name for q in load_queue_file(REPO / "infra" / "queues.toml")}
    env = read_env_file(AGENT_ENV)
    devices = []
    from clearml_agent.interface import get_parser

    for name, service in compose["services"].items():
        command = service["command"]
        assert command[0] == "clearml-agent"
        parsed = get_parser().parse_args(command[1:])
        assert {q.name for q in parsed.queues} <= queues
        assert not parsed.docker  # the agent runs tasks in its own container
        assert "volumes" not in service or all(":/home/ak/" in v for v in service["volumes"])
        assert "/var/run/docker.sock" not in json.dumps(service)
        reservations = service.get("deploy", {}).get("resources", {}).get("reservations", {})
        if name.startswith("gpu"):
            assert default_of(service["image"]).startswith("${AK_REMOTE_GPU_IMAGE")
            (device,) = reservations["devices"]
            assert device["capabilities"] == ["gpu"]
            assert len(device["device_ids"]) == 1
            devices += device["device_ids"]
            assert service["environment"]["CLEARML_WORKER_ID"].endswith(
                f":gpu{device['device_ids'][0]}"
            )
        else:
            assert parsed.cpu_only
            assert not reservations
    assert len(devices) == len(set(devices)) >= 1
    for variable in ("AK_REMOTE_GPU_IMAGE", "AK_REMOTE_CPU_IMAGE", "AK_REMOTE_HOST_NAME"):
        assert variable in env


# --- Agent configuration and systemd unit ---------------------------------------------------


def render_template(values: dict[str, str]) -> str:
    return string.Template(CONF_TEMPLATE.read_text()).substitute(values)


def test_conf_template_placeholders_are_all_in_the_env_example() -> None:
    placeholders = {
        match.group("braced") or match.group("named")
        for match in string.Template.pattern.finditer(CONF_TEMPLATE.read_text())
        if match.group("braced") or match.group("named")
    }
    assert placeholders == CONF_PLACEHOLDERS
    assert placeholders <= set(read_env_file(AGENT_ENV))
    assert "secret" not in CONF_TEMPLATE.read_text().split("api {")[1].split("}")[0].lower()


def test_conf_template_renders_and_parses_with_clearml_agents_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {
        "CLEARML_API_HOST": "http://clearml.test:8008",
        "CLEARML_WEB_HOST": "http://clearml.test:8080",
        "CLEARML_FILES_HOST": "http://clearml.test:8081",
        "AK_REMOTE_GPU_IMAGE": "registry.test/ak-remote-worker:0.1.0-gpu",
        "AK_REMOTE_SHM_SIZE": "16g",
    }
    rendered = tmp_path / "clearml.conf"
    rendered.write_text(render_template(values))
    # Exactly how the agent finds its file: CLEARML_CONFIG_FILE, merged over its defaults.
    monkeypatch.setenv("CLEARML_CONFIG_FILE", str(rendered))
    from clearml_agent.backend_api.config import load

    config = load()
    assert config.get("api.api_server") == values["CLEARML_API_HOST"]
    assert config.get("api.files_server") == values["CLEARML_FILES_HOST"]
    assert config.get("api.credentials", None) in (None, {})  # keys come from the environment
    assert config.get("agent.default_docker.image") == values["AK_REMOTE_GPU_IMAGE"]
    extra = list(config.get("agent.extra_docker_arguments"))
    assert "--shm-size=16g" in extra
    assert extra[extra.index("CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL=1") - 1] == "-e"
    assert config.get("agent.docker_install_opencv_libs") is False
    assert config.get("agent.bootstrap.use_bootstrap") is False
    assert config.get("agent.disable_ssh_mount") is True
    for key, mount in config.get("agent.docker_internal_mounts").items():
        assert not str(mount).startswith("/root"), f"{key}: the image's user cannot enter /root"
    # The default is still there for what the template leaves alone.
    assert config.get("agent.package_manager.type") == "pip"


def test_the_loader_rejects_a_broken_rendering(tmp_path: Path) -> None:
    """The parse test above means something: the same loader fails on a truncated file."""
    from clearml_agent.backend_config.config import Config
    from clearml_agent.backend_config.errors import ConfigurationError

    text = render_template(dict.fromkeys(CONF_PLACEHOLDERS, "x"))
    broken = tmp_path / "broken.conf"
    broken.write_text(text[: text.index("extra_docker_arguments") + 30])
    with pytest.raises(ConfigurationError):
        Config._read_single_file(str(broken), verbose=False)


def read_unit() -> dict[str, dict[str, list[str]]]:
    """Sections of the unit file; a key may repeat (Environment=), so values are lists."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, sep, value = line.partition("=")
            assert sep, f"not Key=Value: {line!r}"
            current.setdefault(key, []).append(value)
    return sections


def test_systemd_unit_starts_the_command_agent_up_would_print() -> None:
    service = {key: values[-1] for key, values in read_unit()["Service"].items()}
    environment = read_unit()["Service"]["Environment"]
    assert service["User"] == "clearml-agent"
    assert "docker" in service["SupplementaryGroups"].split()
    assert service["EnvironmentFile"] == "/etc/clearml-agent/agent.env"
    assert service.get("PrivateTmp", "false") == "false"  # dockerd must see the agent's /tmp
    assert "CLEARML_WORKER_ID=%H:gpu%i" in environment
    assert "CLEARML_CONFIG_FILE=/etc/clearml-agent/clearml.conf" in environment
    argv = shlex.split(
        service["ExecStart"]
        .replace("$AK_REMOTE_QUEUES", "gpu-large gpu")
        .replace("${AK_REMOTE_GPU_IMAGE}", "ak:1-gpu")
        .replace("%i", "3")
    )
    (expected,) = build_agent_commands(
        ["gpu-large", "gpu"],
        gpus="3",
        per_gpu=True,
        image="ak:1-gpu",
        agent=("/opt/clearml-agent/bin/clearml-agent",),
    )
    assert argv == expected.argv


# --- Kubernetes values ----------------------------------------------------------------------


def test_k8s_values_serve_every_declared_queue_with_the_worker_images() -> None:
    common = yaml.safe_load((K8S / "values.yaml").read_text())
    pod = common["agentk8sglue"]["basePodTemplate"]
    assert pod["podSecurityContext"]["runAsUser"] == int(IMAGE_UID)
    assert pod["podSecurityContext"]["runAsNonRoot"] is True
    assert "agentk8sglueSecret" not in common["clearml"]  # keys live in a Kubernetes Secret
    env = read_env_file(AGENT_ENV)
    served = {}
    for path in sorted(K8S.glob("values-*.yaml")):
        glue = yaml.safe_load(path.read_text())["agentk8sglue"]
        served[glue["queue"]] = path.name
        gpus = glue["basePodTemplate"]["resources"]["limits"].get("nvidia.com/gpu", 0)
        image = glue["defaultContainerImage"]
        assert image == (env["AK_REMOTE_GPU_IMAGE"] if gpus else env["AK_REMOTE_CPU_IMAGE"])
    declared = [q.name for q in load_queue_file(REPO / "infra" / "queues.toml")]
    assert sorted(served) == sorted(declared)
