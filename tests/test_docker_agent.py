"""Docker mode, for real: the CPU worker image built from this checkout by docker/build.sh, a real
`clearml-agent daemon --docker` started by `ak-remote agent up` with infra/agents' configuration,
and a run launched with `ak-remote launch` that trains inside the image, installs nothing, and
whose model comes back (`pull --check`) on the host.

The engine comes from docker/engine.sh (installed and started where missing, as in CI); the
image build reuses the wheelhouse and the locked-environment image, so a second run only
rebuilds the ak-remote layer. The agent runs as uid 10001, the image user's uid, exactly as the
systemd unit runs it (infra/README.md): the temporary configuration it hands each container is
readable by that uid only. Like the README's agent host, it runs from its own virtual
environment (Debian's Python 3.11, clearml-agent from the same wheels), since the test's
interpreter may live where that uid cannot go (pyenv under /root).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import string
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomllib
from click.testing import CliRunner, Result

from ak_remote.cli import cli
from tests.emulator.server import Emulator
from tests.processes import tag_env

REPO = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
IMAGE_TAG = f"ak-remote-worker:{VERSION}-cpu"
AGENT_UID = 10001
LOCK = "requirements/worker.lock"
SYSTEM_PYTHON = "/usr/bin/python3.11"  # Debian's, as on an agent host (bookworm)
TINY = ["--set", "max_trials=1", "--set", "epochs=1", "--set", "max_samples=120"]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}"
    return result


def _run(command: list[str], what: str, timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        output = f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        pytest.fail(f"{what} failed ({proc.returncode}):\n{output}")
    return proc


@pytest.fixture(scope="module")
def cpu_image() -> str:
    """The CPU worker image of this checkout, built now (cached parts reused); its image ID."""
    _run(["bash", "docker/engine.sh", "ensure"], "docker/engine.sh ensure", 600)
    built = _run(["bash", "docker/build.sh", "--only", "cpu"], "docker/build.sh --only cpu", 3000)
    assert f"built {IMAGE_TAG}" in built.stderr, built.stderr
    image_id = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", IMAGE_TAG],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert image_id.startswith("sha256:")
    assert image_id in built.stderr
    return image_id


@pytest.fixture(scope="module")
def agent_venv(cpu_image: str) -> Path:
    """clearml-agent, clearml and click at the locked versions, for Debian's Python 3.11,
    installed offline from the CPU wheelhouse; kept next to it for the next run."""
    found = _run(["bash", "docker/wheelhouse.sh", LOCK], "docker/wheelhouse.sh", 900)
    wheelhouse = Path(found.stdout.strip())
    venv = wheelhouse.parent / f"agent-venv-{wheelhouse.name}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        _run([SYSTEM_PYTHON, "-m", "venv", str(venv)], "venv for the agent", 300)
        pins = [f"{name}=={pin(name)}" for name in ("clearml-agent", "clearml", "click")]
        install = [str(python), "-m", "pip", "install", "--quiet", "--no-index"]
        install += ["--find-links", str(wheelhouse), "--constraint", str(REPO / LOCK), *pins]
        _run(install, "installing the agent from the wheelhouse", 600)
        (venv / ".complete").touch()
    return venv


def pin(name: str) -> str:
    for line in (REPO / LOCK).read_text().splitlines():
        if line.startswith(f"{name}=="):
            return line.split("==", 1)[1].split()[0]
    raise AssertionError(f"{name} is not pinned in {LOCK}")


MEMLOCK_ARGS = '"--ulimit", "memlock=-1",'


def memlock_allowed(image: str) -> bool:
    """Whether this host lets containers lift the locked-memory limit (GPU hosts do; a Docker
    engine inside an unprivileged container, like these build machines, may not)."""
    probe = ["docker", "run", "--rm", "--ulimit", "memlock=-1", image, "true"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def render_agent_conf(emulator: Emulator, image: str, path: Path) -> None:
    """infra/agents/clearml.conf.template filled in as the README's envsubst step does."""
    template = (REPO / "infra" / "agents" / "clearml.conf.template").read_text()
    assert template.count(MEMLOCK_ARGS) == 1
    if not memlock_allowed(image):
        # The one setting such a host refuses (runc: "error setting rlimit type 8").
        template = template.replace(MEMLOCK_ARGS, "")
    text = string.Template(template).substitute(
        CLEARML_API_HOST=emulator.api_url,
        CLEARML_WEB_HOST=emulator.web_url,
        CLEARML_FILES_HOST=emulator.files_url,
        AK_REMOTE_GPU_IMAGE=image,
        AK_REMOTE_SHM_SIZE="1g",
    )
    path.write_text(text)


def stop(agent: subprocess.Popen[bytes]) -> None:
    """Ctrl-C for the agent (it unregisters and stops its container), then harder."""
    for sig, wait in ((signal.SIGINT, 30.0), (signal.SIGKILL, 10.0)):
        if agent.poll() is not None:
            break
        try:
            os.killpg(agent.pid, sig)
        except ProcessLookupError:
            break
        try:
            agent.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    # What the agent started may outlive it in its process group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(agent.pid, signal.SIGKILL)


@pytest.fixture
def agent_home() -> Iterator[Path]:
    """A home for the agent owned by its uid (pytest's tmp_path is private to root)."""
    home = Path(tempfile.mkdtemp(prefix="ak-remote-docker-agent-"))
    os.chmod(home, 0o755)
    os.chown(home, AGENT_UID, AGENT_UID)
    try:
        yield home
    finally:
        # Files the containers wrote belong to the agent's uid; root removes them.
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow
def test_a_launched_run_trains_inside_the_cpu_image_through_a_docker_mode_agent(
    clearml_emulator: Emulator,
    cpu_image: str,
    agent_venv: Path,
    agent_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert os.geteuid() == 0, "the Docker-mode test starts the agent as uid 10001 and needs root"
    emulator = clearml_emulator
    monkeypatch.setenv("AK_REMOTE_POLL_INTERVAL", "1")
    monkeypatch.chdir(tmp_path)

    # The template records the image by its ID (the digest build.sh reported); the containers
    # reach the emulator and its fileserver on this host's loopback through host networking.
    ok(invoke("templates", "sync", "--image", cpu_image, "--docker-args", "--network host"))
    emulator.create_queue("cpu")

    conf = agent_home / "clearml.conf"
    render_agent_conf(emulator, cpu_image, conf)
    os.chmod(conf, 0o644)
    worker_id = f"docker-test:{os.getpid()}"
    # ak-remote from this checkout, copied where the agent's uid can read it: a checkout under
    # a root-only folder (mktemp -d, as CI clones are made) is out of its reach.
    source = agent_home / "src"
    shutil.copytree(
        REPO / "ak_remote", source / "ak_remote", ignore=shutil.ignore_patterns("__pycache__")
    )
    for path in [source, *source.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    env = {
        "PATH": f"{agent_venv / 'bin'}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": str(source),
        "HOME": str(agent_home),
        "CLEARML_CONFIG_FILE": str(conf),
        "CLEARML_API_ACCESS_KEY": emulator.access_key,
        "CLEARML_API_SECRET_KEY": emulator.secret_key,
        "CLEARML_WORKER_ID": worker_id,
        "CLEARML_AGENT_QUEUE_POLL_FREQ_SEC": "0.5",
        "PYTHONUNBUFFERED": "1",
        **tag_env(),  # so the session's guard (tests/conftest.py) sees this agent
    }
    docker_gid = os.stat("/var/run/docker.sock").st_gid
    log_path = agent_home / "agent.log"
    # `ak-remote agent up` as the systemd unit runs the agent: uid 10001, group docker.
    command = [
        "setpriv",
        f"--reuid={AGENT_UID}",
        f"--regid={AGENT_UID}",
        f"--groups={docker_gid}",
        str(agent_venv / "bin" / "python"),
        "-m",
        "ak_remote",
        "agent",
        "up",
        "-q",
        "cpu",
        "--cpu-only",
        "--image",
        cpu_image,
    ]
    with log_path.open("wb") as log_file:
        agent = subprocess.Popen(
            command,
            env=env,
            cwd=agent_home,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def agent_log() -> str:
        return log_path.read_text(errors="replace")[-8000:]

    try:
        deadline = time.monotonic() + 90
        while worker_id not in emulator.state.workers:
            assert agent.poll() is None, f"agent exited early:\n{agent_log()}"
            assert time.monotonic() < deadline, f"agent did not register:\n{agent_log()}"
            time.sleep(0.3)

        launched = invoke("launch", "structured-classifier", "-q", "cpu", *TINY, "--wait")
        task_id = launched.stdout.strip().splitlines()[0] if launched.stdout.strip() else ""
        task_log = ok(invoke("logs", task_id)).stdout if task_id else ""
        assert launched.exit_code == 0, (
            f"{launched.output}\n--- task log\n{task_log[-6000:]}\n--- agent\n{agent_log()}"
        )
    finally:
        stop(agent)

    task = emulator.get_task(task_id)
    assert task["status"] == "completed"
    assert task["container"]["image"] == cpu_image
    # It ran in a container of that image, on the image's Python, installing nothing.
    assert f"Running Task {task_id} inside docker: {cpu_image}" in task_log
    assert "'docker', 'run'" in task_log
    assert "'--network', 'host'" in task_log
    # The agent's container preamble found everything in the image's environment...
    assert "Requirement already satisfied: clearml-agent in /opt/venv/" in task_log
    # ...and nothing was installed at run time (pip is offline there, apt is never called).
    for installing in ("Collecting ", "Downloading ", "Successfully installed", "apt-get"):
        assert installing not in task_log, installing
    # The run recorded the image it ran in, by ID.
    summary = json.loads(ok(invoke("status", task_id, "--json")).stdout)[0]
    assert summary["status"] == "completed"

    dest = tmp_path / "pulled"
    pulled = ok(invoke("pull", task_id, "--dest", str(dest), "--check"))
    assert "Check passed" in pulled.stderr
    assert (dest / "model.keras").is_file()
    assert (dest / "savedmodel").is_dir()
    recorded = json.loads((dest / "summary.json").read_text())
    assert recorded["reproducibility"]["image"] == cpu_image

    dry = json.loads(ok(invoke("reproduce", task_id, "-q", "cpu", "--dry-run", "--json")).stdout)
    assert f"image {cpu_image}" in dry["pinned"]


def test_agent_up_refuses_an_image_without_ak_remote_or_one_that_is_gone(cpu_image: str) -> None:
    # The worker image with ak-remote uninstalled: what a plain Python image would look like.
    container = f"ak-remote-test-strip-{os.getpid()}"
    stripped = f"ak-remote-test-no-ak-remote:{os.getpid()}"
    uninstall = "/opt/venv/bin/python -m pip uninstall --yes --quiet ak-remote"
    strip = ["docker", "run", "--user", "0", "--name", container, "--entrypoint", "bash"]
    subprocess.run([*strip, cpu_image, "-c", uninstall], capture_output=True, check=True)
    try:
        subprocess.run(["docker", "commit", container, stripped], capture_output=True, check=True)
        refused = invoke("agent", "up", "-q", "cpu", "--cpu-only", "--image", stripped)
        assert refused.exit_code == 2, refused.output
        assert f"image {stripped} cannot run ak-remote jobs" in refused.stderr
        assert "No module named 'ak_remote'" in refused.stderr
        assert "make image" in refused.stderr
        gone = "sha256:" + "0" * 64
        missing = invoke("agent", "up", "-q", "cpu", "--cpu-only", "--image", gone)
        assert missing.exit_code == 2, missing.output
        assert f"image {gone} is not on this host" in missing.stderr
        # The real image passes the same check (the end-to-end test starts an agent on it).
        from ak_remote.fleet.images import worker_image_problem

        assert worker_image_problem(cpu_image) is None
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
        subprocess.run(["docker", "image", "rm", stripped], capture_output=True, check=False)
