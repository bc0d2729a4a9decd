"""Plain functions and constants the test tiers share (fixtures are in tests/conftest.py).

Nothing here imports TensorFlow or starts a process on import: the unit tier imports it too.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import urllib.parse
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from click.testing import CliRunner, Result

from ak_remote import contract
from ak_remote.catalog import JOBS, PROJECT_ROOT
from ak_remote.cli import cli
from ak_remote.errors import UsageError
from ak_remote.runtime import search_state
from ak_remote.runtime.rundir import LOCK_FILE
from tests.emulator import fixtures as emulator_fixtures
from tests.emulator.server import Emulator
from tests.processes import as_terminal_job

T = TypeVar("T")
# The project `templates sync` writes to by default.
TEMPLATES = "ak-remote/templates"
# The job most tests run: wine, a small table that trains in seconds.
JOB = "structured-classifier"
# The smallest training a job still does: 120 rows, one epoch. Tests add what they need
# (batch_size, max_trials, histogram_freq, ...).
TINY = ["max_samples=120", "epochs=1"]
# Settings a test's processes must not inherit from the shell (tests/conftest.py strips them
# from every test's own environment too).
STRIPPED_ENV = ("CLEARML_", "TRAINS_", "AK_REMOTE_", "KERASTUNER_")
# An image ID, as `docker image inspect` gives it: pinned, whatever it is tagged.
IMAGE_ID = "sha256:" + "0123456789abcdef" * 4


def sets(*items: str) -> list[str]:
    """`--set ITEM` for each item."""
    out: list[str] = []
    for item in items:
        out += ["--set", item]
    return out


# The browser tests' Chromium: Debian's (.ci/browser.sh installs it), driven by Playwright.
CHROMIUM = os.environ.get("AK_REMOTE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


# --- the CLI in this process (click's runner) ----------------------------------------------


def invoke(*args: str) -> Result:
    """`ak-remote ARGS` in this process; stdout and stderr apart."""
    return CliRunner().invoke(cli, list(args))


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}"
    return result


def cli_json(*args: str) -> Any:
    """`ak-remote ARGS --json`, which must succeed, as parsed JSON."""
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def outcome(result: Result) -> tuple[int, str, str]:
    """The exit code, stdout and stderr of an `invoke`."""
    return result.exit_code, result.stdout, result.stderr


def value_or_refusal(action: Callable[[], T]) -> T | UsageError:
    """What `action()` returns, or the UsageError it raises; anything else it raises fails the
    test (property tests: whatever a user types gives a value or a clean refusal)."""
    try:
        return action()
    except UsageError as exc:
        return exc


def error_lines(text: str) -> list[str]:
    """The lines of `text` that start with `Error:` (the CLI's one-line errors)."""
    return [line for line in text.splitlines() if line.startswith("Error:")]


# --- processes ------------------------------------------------------------------------------


def job_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process' environment without ClearML settings, with its own HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(STRIPPED_ENV)}
    env.update({"HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


def run_captured(
    argv: list[str],
    env: dict[str, str],
    cwd: Path | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` to its end, its output captured as text; the exit code is the test's to check."""
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def run_job(
    job: str, items: list[str], cwd: Path, home: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python jobs/<job>.py --set ... --offline` the way an agent runs it, in cwd/run."""
    home.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, str(PROJECT_ROOT / JOBS[job].script), *sets(*items)]
    argv += ["--run-dir", str(cwd / "run"), "--offline"]
    return run_captured(argv, job_env(home, extra_env), cwd, timeout=600)


def run_sets(*extra: str) -> list[str]:
    """The `--set` options of the tiny `ak-remote run` most process tests start (batch 16, no
    histograms), then `extra`."""
    return sets(*TINY, "batch_size=16", "histogram_freq=0", *extra)


def run_argv(*args: str) -> list[str]:
    """`ak-remote run JOB --offline ARGS` as a fresh process' argv."""
    return [sys.executable, "-m", "ak_remote", "run", JOB, "--offline", *args]


def run_cli(
    home: Path, cwd: Path, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`ak-remote run JOB --offline ARGS` to its end, with its own HOME."""
    home.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    return run_captured(run_argv(*args), job_env(home), cwd, timeout)


def start_run(
    home: Path,
    cwd: Path,
    run_dir: Path,
    procs: list[subprocess.Popen[str]],
    *items: str,
    new_session: bool = False,
) -> tuple[subprocess.Popen[str], int]:
    """`ak-remote run JOB --offline --run-dir RUN_DIR`, the tiny run with `items` added, started
    and put in `procs` (the fixture kills what is left of it); in a session of its own if asked
    (so a test can send it a terminal's Ctrl-C). Returns it and its training process' pid, once
    that claimed the run folder."""
    home.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        run_argv("--run-dir", str(run_dir), *run_sets(*items)),
        cwd=cwd,
        env=job_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_terminal_job if new_session else None,
    )
    procs.append(proc)
    return proc, holder_pid(run_dir)


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    """Poll `condition()` until it is truthy and return it; fail the test after `timeout`."""
    return emulator_fixtures.wait_for(condition, timeout, what=what)


def holder_pid(run_dir: Path) -> int:
    """The training process, as the run folder's lock file names it once it claimed it."""

    def read() -> int | None:
        try:
            return int(json.loads((run_dir / LOCK_FILE).read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    return int(wait_for(read, 120, "the training process to claim the run folder"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def http_get(
    url: str, headers: dict[str, str] | None = None, method: str = "GET", body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    parsed = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=10)
    try:
        path = parsed.path + (f"?{parsed.query}" if parsed.query else "")
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def free_port() -> int:
    """A loopback port nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_summary(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / "summary.json").read_text()))


def write_image_folder(root: Path, count: int = 150) -> Path:
    """scikit-learn digits as root/<digit>/<n>.png (8x8 grayscale PNGs)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images[:count], digits.target, strict=False)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 15).astype(np.uint8)).save(folder / f"{i}.png")
    return root


# --- a search's state (search_state.zip) ---------------------------------------------------

MAX_TRIALS = 3
# The resumable search's parameters, as a job reads them.
SEARCH_PARAMS = dict(
    item.split("=", 1) for item in [*TINY, "batch_size=16", f"max_trials={MAX_TRIALS}"]
)


def search_manifest(zip_bytes: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
        return dict(json.loads(archive.read(search_state.MANIFEST)))


def assert_small_search_state(zip_bytes: bytes) -> None:
    """Only oracle, tuner, graph and per-trial JSON/pipeline files: no weights, small."""
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
        names = archive.namelist()
    assert not [n for n in names if n.endswith((".h5", ".keras", ".weights", ".ckpt"))], names
    manifest = search_state.MANIFEST
    assert all(n == manifest or search_state._ALLOWED.match(n) for n in names), names
    assert len(zip_bytes) < 64 * 1024  # a few KB a trial, whatever the model size


# --- the ClearML API emulator ---------------------------------------------------------------


def snapshot(emulator: Emulator) -> tuple[int, int, int]:
    """How many tasks, queues and projects the server holds."""
    with emulator.state.lock:
        state = emulator.state
        return len(state.tasks), len(state.queues), len(state.projects)


def refused(emulator: Emulator, *args: str) -> str:
    """`ak-remote launch JOB ARGS` is refused (exit 2) with one error line, and the server holds
    what it held before; returns that line."""
    before = snapshot(emulator)
    result = invoke("launch", JOB, *args)
    assert result.exit_code == 2, result.output
    assert snapshot(emulator) == before
    lines = error_lines(result.output)
    assert len(lines) == 1, result.output
    return lines[0]


def launched(emulator: Emulator) -> list[dict[str, Any]]:
    """Every task on the server that is not a template."""
    with emulator.state.lock:
        tasks = list(emulator.state.tasks.values())
    return [t for t in tasks if contract.TEMPLATE_TAG not in (t.get("system_tags") or [])]


def queue_entries(emulator: Emulator, name: str = "gpu") -> list[str]:
    """The ids of the tasks waiting in a queue, first first."""
    queue = emulator.state.queue_by_name(name)
    assert queue is not None
    return [e["task"] for e in queue["entries"]]


COMMIT = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "reg/ak-remote-worker@sha256:" + "ab" * 32
# A finished run's summary.json holding everything reproduce pins.
FINISHED_SUMMARY = {
    "metrics": {"test_accuracy": 0.9},
    "data": {"fingerprint": "f" * 64},
    "reproducibility": {
        "seed": 7,
        "packages": {"autokeras": "3.0.0"},
        "image": DIGEST,
        "git": {"commit": COMMIT, "dirty": False},
    },
}


def finished_run(emulator: Emulator, summary: dict[str, Any], **fields: Any) -> str:
    """A completed task with a summary.json artifact on the fileserver."""
    general = {
        "seed": {"section": "General", "name": "seed", "value": "7", "type": "int"},
        "epochs": {"section": "General", "name": "epochs", "value": "3", "type": "int"},
    }
    task_id = emulator.create_task(
        "wine run",
        project="ak-remote",
        hyperparams={"General": general},
        system_tags=["ak-remote-job:structured-classifier"],
        **fields,
    )
    path = f"/ak-remote/wine run.{task_id}/artifacts/summary.json/summary.json"
    emulator.state.files[path] = json.dumps(summary).encode()
    emulator.call("tasks.started", task=task_id)
    emulator.call(
        "tasks.add_or_update_artifacts",
        task=task_id,
        artifacts=[{"key": "summary.json", "type": "custom", "uri": emulator.file_url(path)}],
        force=True,
    )
    emulator.call("tasks.completed", task=task_id)
    return task_id


def web_ui_clone(emulator: Emulator, source: dict[str, Any], name: str) -> str:
    """A clone as the Web UI makes it: same project, the source's system tags kept."""
    response = emulator.call_api(
        "tasks.clone",
        task=source["id"],
        new_task_name=name,
        new_task_project=source["project"],
        new_task_system_tags=list(source["system_tags"]),
    )
    return str(response["id"])


class Wire:
    """A minimal HTTP client that sends exactly what the test says (no SDK in between)."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        parsed = urllib.parse.urlsplit(emulator.api_url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.token = self.login()

    def basic(self, key: str | None = None, secret: str | None = None) -> str:
        raw = f"{key or self.emulator.access_key}:{secret or self.emulator.secret_key}"
        return "Basic " + base64.b64encode(raw.encode()).decode()

    def login(self) -> str:
        status, envelope = self.send("GET", "/auth.login", None, auth=self.basic())
        assert status == 200, envelope
        return str(envelope["data"]["token"])

    def send(
        self,
        method: str,
        path: str,
        body: Any,
        *,
        auth: str | None = "token",
        raw: bytes | None = None,
        content_type: str = "application/json",
        timeout: float = 10.0,
    ) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        headers = {"Content-Type": content_type}
        if auth == "token":
            headers["Authorization"] = f"Bearer {self.token}"
        elif auth:
            headers["Authorization"] = auth
        payload = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    def call(self, endpoint: str, version: str | None = "2.23", **body: Any) -> dict[str, Any]:
        path = f"/v{version}/{endpoint}" if version else f"/{endpoint}"
        status, envelope = self.send("GET", path, {**body, "method": "get"})
        assert status == 200, envelope["meta"]
        return dict(envelope["data"])

    def error(self, endpoint: str, body: Any, **kwargs: Any) -> tuple[int, int, str]:
        status, envelope = self.send("POST", f"/v2.23/{endpoint}", body, **kwargs)
        meta = envelope["meta"]
        assert status == meta["result_code"]
        assert envelope["data"] == {}
        return meta["result_code"], meta["result_subcode"], meta["result_msg"]
