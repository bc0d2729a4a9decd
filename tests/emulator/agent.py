"""Run the real ``clearml-agent`` against the emulator (or a real server), without Docker.

The agent runs tasks on the test interpreter: ``CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL=1`` makes
it skip creating a virtualenv and installing requirements, and
``CLEARML_AGENT_SKIP_PIP_VENV_INSTALL`` names the interpreter to use.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.emulator.fixtures import RealServer
from tests.emulator.server import Emulator

FINAL_STATUSES = ("completed", "failed", "stopped", "published", "closed")
AGENT_BIN = Path(sys.executable).with_name("clearml-agent")
_worker_numbers = itertools.count(1)


def agent_env(
    emulator: Emulator | RealServer, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment a clearml-agent subprocess needs to run tasks on this interpreter."""
    bin_dir = str(Path(sys.executable).parent)
    merged = {
        **os.environ,
        **emulator.env(),
        "CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL": "1",
        "CLEARML_AGENT_SKIP_PIP_VENV_INSTALL": sys.executable,
        "CLEARML_AGENT_QUEUE_POLL_FREQ_SEC": "0.5",
        "CLEARML_AGENT_STATUS_REPORT_FREQ_SEC": "2",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }
    merged.update(env or {})
    return merged


@dataclass
class AgentProcess:
    """A running ``clearml-agent daemon``; ``log()`` returns its output so far."""

    process: subprocess.Popen[bytes]
    worker_id: str
    queue: str
    log_path: Path

    def log(self) -> str:
        """Everything the agent printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        """True while the daemon process runs."""
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        """Stop the daemon as systemd or Docker would (SIGTERM: it stops its task and
        unregisters), then escalate. Not SIGINT: a test run started in the background inherits
        SIGINT ignored, and clearml-agent takes SIGINT for "abort the task" only."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        code = self.process.wait(5)
        # What the daemon started (it forks per task) may outlive it in its process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return code


@contextmanager
def running_agent(
    emulator: Emulator | RealServer,
    queue: str,
    *extra_args: str,
    env: Mapping[str, str] | None = None,
    worker_id: str | None = None,
    log_dir: Path | None = None,
    register_timeout: float = 60.0,
) -> Iterator[AgentProcess]:
    """Run ``clearml-agent daemon --queue QUEUE --foreground`` until the block exits.

    Waits until the worker has registered with the server (emulator only), and stops the agent
    with SIGTERM on exit. Extra arguments go after ``--foreground`` (more queues, ``--cpu-only``).
    """
    worker_id = worker_id or f"emulator-agent-{os.getpid()}-{next(_worker_numbers)}"
    log_dir = log_dir or Path(emulator.config_file).parent
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{worker_id}.log"
    full_env = agent_env(emulator, {"CLEARML_WORKER_ID": worker_id, **(env or {})})
    command = [str(AGENT_BIN), "daemon", "--queue", queue, "--foreground", *extra_args]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            env=full_env,
            cwd=log_dir,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    agent = AgentProcess(process=process, worker_id=worker_id, queue=queue, log_path=log_path)
    try:
        if isinstance(emulator, Emulator):
            deadline = time.monotonic() + register_timeout
            while worker_id not in emulator.state.workers:
                if not agent.alive():
                    pytest.fail(f"clearml-agent exited early:\n{agent.log()[-4000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"clearml-agent did not register:\n{agent.log()[-4000:]}")
                time.sleep(0.2)
        yield agent
    finally:
        agent.stop()


def wait_for_status(
    emulator: Emulator | RealServer,
    task_id: str,
    statuses: tuple[str, ...] = FINAL_STATUSES,
    timeout: float = 180.0,
    agent: AgentProcess | None = None,
) -> dict[str, Any]:
    """Wait until the task's status is one of ``statuses``; return the task document."""
    deadline = time.monotonic() + timeout
    while True:
        task = emulator.get_task(task_id)
        if task["status"] in statuses:
            return task
        if agent is not None and not agent.alive():
            pytest.fail(f"clearml-agent died, task {task['status']}:\n{agent.log()[-4000:]}")
        if time.monotonic() > deadline:
            log = agent.log()[-4000:] if agent else ""
            pytest.fail(f"task {task_id} still {task['status']} after {timeout:.0f}s\n{log}")
        time.sleep(0.3)


def run_execute(
    emulator: Emulator | RealServer,
    task_id: str,
    *extra_args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 300.0,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``clearml-agent execute --id TASK`` to completion; return the finished process."""
    command = [str(AGENT_BIN), "execute", "--id", task_id, *extra_args]
    return subprocess.run(
        command,
        env=agent_env(emulator, env),
        cwd=cwd or Path(emulator.config_file).parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
