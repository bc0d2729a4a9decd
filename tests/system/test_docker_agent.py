"""Docker mode, for real: the CPU worker image built from this checkout by docker/build.sh, a real
`clearml-agent daemon --docker` started by `ak-remote agent up` with infra/agents' configuration,
and a run launched with `ak-remote launch` that trains inside the image, installs nothing, and
whose model comes back (`pull --check`) on the host; then the same with templates synced in a
clone whose remote is served over git's smart HTTP protocol on loopback, so that clearml-agent
clones the repository inside the container, as it does for users' templates.

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
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import tomllib

from ak_remote.catalog import PROJECT_ROOT
from tests.emulator.server import Emulator
from tests.helpers import TINY, invoke, ok, sets
from tests.processes import tag_env

REPO = PROJECT_ROOT
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
IMAGE_TAG = f"ak-remote-worker:{VERSION}-cpu"
AGENT_UID = 10001
LOCK = "requirements/worker.lock"
SYSTEM_PYTHON = "/usr/bin/python3.11"  # Debian's, as on an agent host (bookworm)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def git_http_backend(root: Path) -> Callable[[dict[str, Any], Callable[..., Any]], list[bytes]]:
    """git's smart HTTP protocol, the one GitHub and GitLab serve over https, for the bare
    repositories under `root`: `git http-backend` run as CGI for each request."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        cgi = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": environ["REQUEST_METHOD"],
            "PATH_INFO": environ.get("PATH_INFO", ""),
            "QUERY_STRING": environ.get("QUERY_STRING", ""),
            "CONTENT_TYPE": environ.get("CONTENT_TYPE", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": environ.get("REMOTE_ADDR", ""),
            "HTTP_CONTENT_ENCODING": environ.get("HTTP_CONTENT_ENCODING", ""),
            "GIT_PROTOCOL": environ.get("HTTP_GIT_PROTOCOL", ""),
        }
        backend = ["git", "http-backend"]
        out = subprocess.run(
            backend, input=body, env=cgi, capture_output=True, timeout=60, check=False
        ).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = "200 OK", []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = value.strip()
            elif name:
                headers.append((name, value.strip()))
        start_response(status, headers)
        return [payload]

    return app


@contextlib.contextmanager
def git_server(root: Path) -> Iterator[str]:
    """An HTTP git server for the bare repositories under `root` on loopback; its base URL."""
    server = make_server(
        "127.0.0.1",
        0,
        git_http_backend(root),
        server_class=_ThreadingServer,
        handler_class=_QuietHandler,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def user_checkout(dest: Path, remote: str) -> str:
    """This checkout's tracked files (as on disk) committed in a clone whose `origin` is
    `remote`, as a user's clone of ak-remote looks; the commit."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    identity = ["-c", "user.name=ak-remote test", "-c", "user.email=test@ak-remote.invalid"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "ak-remote"]):
        subprocess.run(["git", "-C", str(dest), *identity, *args], capture_output=True, check=True)
    subprocess.run(["git", "-C", str(dest), "remote", "add", "origin", remote], check=True)
    head = subprocess.run(["git", "-C", str(dest), "rev-parse", "HEAD"], capture_output=True)
    return head.stdout.decode().strip()


def sync_from(checkout: Path, image: str) -> subprocess.CompletedProcess[str]:
    """`ak-remote templates sync` run in the user's checkout, with that checkout's ak_remote."""
    sync = ["templates", "sync", "--image", image, "--docker-args", "--network host"]
    return _run_in(checkout, [sys.executable, "-m", "ak_remote", *sync])


def _run_in(cwd: Path, command: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    proc = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert proc.returncode == 0, f"{command} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def template_of(job: str) -> str:
    rows = json.loads(ok(invoke("templates", "list", "--json")).stdout)
    (task_id,) = [row["id"] for row in rows if row["job"] == job]
    return str(task_id)


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
    """SIGTERM for `agent up`, as systemd sends it (its daemons unregister and stop their
    containers), then harder."""
    for sig, wait in ((signal.SIGTERM, 60.0), (signal.SIGKILL, 10.0)):
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


@contextlib.contextmanager
def running_agent(
    emulator: Emulator, image: str, agent_venv: Path, agent_home: Path
) -> Iterator[Callable[[], str]]:
    """`ak-remote agent up -q cpu --cpu-only --image IMAGE` as the systemd unit runs the agent
    (uid 10001, group docker), registered with the emulator; yields a reader of its log."""
    emulator.create_queue("cpu")
    conf = agent_home / "clearml.conf"
    render_agent_conf(emulator, image, conf)
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
        image,
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
        yield agent_log
    finally:
        stop(agent)


def launch_tiny(agent_log: Callable[[], str]) -> tuple[str, str]:
    """`ak-remote launch structured-classifier -q cpu` (1 trial, 1 epoch) and wait: task id, log."""
    launched = invoke(
        "launch", "structured-classifier", "-q", "cpu", *sets(*TINY, "max_trials=1"), "--wait"
    )
    task_id = launched.stdout.strip().splitlines()[0] if launched.stdout.strip() else ""
    task_log = ok(invoke("logs", task_id)).stdout if task_id else ""
    assert launched.exit_code == 0, (
        f"{launched.output}\n--- task log\n{task_log[-6000:]}\n--- agent\n{agent_log()}"
    )
    return task_id, task_log


def pulled_and_checked(task_id: str, dest: Path) -> dict[str, Any]:
    """`ak-remote pull --check` of the run: the model came back and reloads; its summary."""
    pulled = ok(invoke("pull", task_id, "--dest", str(dest), "--check"))
    assert "Check passed" in pulled.stderr
    assert (dest / "model.keras").is_file()
    assert (dest / "savedmodel").is_dir()
    summary: dict[str, Any] = json.loads((dest / "summary.json").read_text())
    return summary


@pytest.mark.slow
def test_a_launched_run_trains_inside_the_cpu_image_through_a_docker_mode_agent(
    agent_emulator: Emulator,
    cpu_image: str,
    agent_venv: Path,
    agent_home: Path,
    tmp_path: Path,
) -> None:
    assert os.geteuid() == 0, "the Docker-mode test starts the agent as uid 10001 and needs root"
    emulator = agent_emulator

    # The template records the image by its ID (the digest build.sh reported); the containers
    # reach the emulator and its fileserver on this host's loopback through host networking.
    # This checkout has no shared remote, so the job script travels inside the template.
    ok(invoke("templates", "sync", "--image", cpu_image, "--docker-args", "--network host"))
    with running_agent(emulator, cpu_image, agent_venv, agent_home) as agent_log:
        task_id, task_log = launch_tiny(agent_log)

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

    recorded = pulled_and_checked(task_id, tmp_path / "pulled")
    assert recorded["reproducibility"]["image"] == cpu_image

    dry = json.loads(ok(invoke("reproduce", task_id, "-q", "cpu", "--dry-run", "--json")).stdout)
    assert f"image {cpu_image}" in dry["pinned"]


@pytest.mark.slow
def test_a_template_that_records_a_git_repository_is_cloned_inside_the_cpu_image(
    agent_emulator: Emulator,
    cpu_image: str,
    agent_venv: Path,
    agent_home: Path,
    tmp_path: Path,
) -> None:
    """The users' normal case: templates synced from a clone whose remote agents can reach
    record repository + commit, and clearml-agent clones the repository inside the container."""
    assert os.geteuid() == 0, "the Docker-mode test starts the agent as uid 10001 and needs root"
    emulator = agent_emulator
    served = tmp_path / "served"
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    bare = served / "ak-remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "-C", str(bare), "config", "http.receivepack", "true"], check=True)
    with git_server(served) as base_url:
        url = f"{base_url}/ak-remote.git"
        commit = user_checkout(checkout, url)
        # Pushed over HTTP as a user pushes, so origin/main holds the commit (sync checks that).
        push = ["git", "-C", str(checkout), "push", "-q", "-u", "origin", "main"]
        subprocess.run(push, capture_output=True, check=True)

        synced = sync_from(checkout, cpu_image)
        assert "Warning" not in synced.stderr, synced.stderr
        template = emulator.get_task(template_of("structured-classifier"))
        assert template["script"]["repository"] == url
        assert template["script"]["version_num"] == commit
        assert template["script"]["diff"] == ""  # the code can only come from the clone

        with running_agent(emulator, cpu_image, agent_venv, agent_home) as agent_log:
            task_id, task_log = launch_tiny(agent_log)

    task = emulator.get_task(task_id)
    assert task["status"] == "completed"
    assert task["script"]["repository"] == url
    assert f"Running Task {task_id} inside docker: {cpu_image}" in task_log
    # clearml-agent cloned the repository inside the container, checked out the commit and
    # ran the job from the clone.
    assert f"cloning: {url}" in task_log
    assert f"HEAD is now at {commit[:7]}" in task_log
    assert "root: /home/ak/.clearml/venvs-builds/task_repository/ak-remote.git" in task_log
    assert "[.]$ /opt/venv/bin/python -u jobs/structured_classifier.py" in task_log
    recorded = pulled_and_checked(task_id, tmp_path / "pulled")
    assert recorded["reproducibility"]["image"] == cpu_image
    assert recorded["reproducibility"]["git"]["commit"] == commit


def test_the_cpu_image_has_git_and_images_without_it_are_reported(
    cpu_image: str, clearml_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """git in the built image (clearml-agent clones templates' repositories with it), and an
    image without ak_remote or git: `agent up` refuses it, `doctor` names it when templates
    record a repository."""
    version = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", cpu_image, "git", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("git version 2."), version.stdout
    from ak_remote.fleet.images import ImageCheck, check_worker_image, worker_image_problem

    # The real image passes the same checks (the end-to-end tests start agents on it).
    assert check_worker_image(cpu_image) == ImageCheck()
    assert worker_image_problem(cpu_image) is None

    # The worker image with ak-remote uninstalled and git removed: what a plain Python image
    # would look like.
    container = f"ak-remote-test-strip-{os.getpid()}"
    stripped = f"ak-remote-test-no-ak-remote:{os.getpid()}"
    no_git = f"ak-remote-test-no-git:{os.getpid()}"
    uninstall = "/opt/venv/bin/python -m pip uninstall --yes --quiet ak-remote && rm /usr/bin/git"
    strip = ["docker", "run", "--user", "0", "--name", container, "--entrypoint", "bash"]
    subprocess.run([*strip, cpu_image, "-c", uninstall], capture_output=True, check=True)
    try:
        subprocess.run(["docker", "commit", container, stripped], capture_output=True, check=True)
        checked = check_worker_image(stripped)
        assert checked.no_git == (
            f"image {stripped} has no git: runs of templates that record a git repository "
            "(`templates sync` from a checkout with a remote) cannot be cloned in it"
        )
        refused = invoke("agent", "up", "-q", "cpu", "--cpu-only", "--image", stripped)
        assert refused.exit_code == 2, refused.output
        assert f"image {stripped} cannot run ak-remote jobs" in refused.stderr
        assert "No module named 'ak_remote'" in refused.stderr
        assert "make image" in refused.stderr
        gone = "sha256:" + "0" * 64
        missing = invoke("agent", "up", "-q", "cpu", "--cpu-only", "--image", gone)
        assert missing.exit_code == 2, missing.output
        assert f"image {gone} is not on this host" in missing.stderr

        # Templates synced from a checkout with a remote, recording the image without git.
        monkeypatch.setenv("AK_REMOTE_IMAGE", stripped)
        checkout = tmp_path / "checkout"
        checkout.mkdir()
        user_checkout(checkout, "https://git.example.invalid/team/ak-remote.git")
        sync_from(checkout, stripped)
        emulator_queue = "cpu"
        clearml_emulator.create_queue(emulator_queue)
        code = invoke("doctor", "-q", emulator_queue, "--json")
        assert code.exit_code == 4, code.output
        checks = json.loads(code.stdout)
        (failed,) = [c for c in checks if c["name"] == "template image"]
        assert failed["ok"] is False
        assert failed["detail"].startswith(f"image {stripped} has no git")
        assert "templates in ak-remote/templates record one" in failed["detail"]
        assert "make image" in failed["fix"]

        # Without git alone the image is not refused (script-carrying templates still run in
        # it), but `agent up` says so before starting: here it then finds no clearml-agent on
        # PATH, which stops it before any agent starts.
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=True)
        subprocess.run(
            [*strip, cpu_image, "-c", "rm /usr/bin/git"], capture_output=True, check=True
        )
        subprocess.run(["docker", "commit", container, no_git], capture_output=True, check=True)
        only_git = check_worker_image(no_git)
        assert only_git.problem is None
        assert only_git.no_git is not None
        assert only_git.no_git.startswith(f"image {no_git} has no git")
        monkeypatch.setenv("PATH", "/usr/bin:/bin")
        warned = invoke("agent", "up", "-q", "cpu", "--cpu-only", "--image", no_git)
        assert f"Warning: image {no_git} has no git: runs of templates" in warned.stderr
        assert "rebuild it with `make image`" in warned.stderr
        assert "cannot start 'clearml-agent'" in warned.stderr
        assert warned.exit_code == 2, warned.output
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
        for image in (stripped, no_git):
            subprocess.run(["docker", "image", "rm", image], capture_output=True, check=False)
