"""`ak-remote agent up` for real: its daemon runs a task, and Ctrl-C, SIGTERM or SIGKILL to
`agent up` alone stops the daemon and what it runs.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.emulator import fixtures as emulator_fixtures
from tests.emulator.agent import agent_env, wait_for_status
from tests.emulator.server import Emulator
from tests.helpers import alive, wait_for
from tests.processes import as_foreground_job


def enqueue_script(emulator: Emulator, tmp_path: Path, name: str, body: str) -> str:
    """A task running `body` as its script, queued on `cpu`; returns its id."""
    script = tmp_path / f"{name}.py"
    script.write_text(f"from clearml import Task\nTask.init()\n{body}")
    created = emulator_fixtures.run_python(
        emulator,
        "import json\nfrom clearml import Task\n"
        f"t = Task.create(project_name='fleet', task_name={name!r}, script={str(script)!r})\n"
        "Task.enqueue(t, queue_name='cpu')\nprint('RESULT ' + json.dumps(t.id))\n",
        tmp_path,
    )
    return str(emulator_fixtures.script_result(created))


def start_agent_up(emulator: Emulator, tmp_path: Path) -> subprocess.Popen[bytes]:
    """`ak-remote agent up -q cpu --cpu-only` (no Docker), its output in agent.log."""
    with (tmp_path / "agent.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "ak_remote", "agent", "up", "-q", "cpu", "--cpu-only"],
            env=agent_env(emulator),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            preexec_fn=as_foreground_job,  # the test sends it Ctrl-C
        )


def daemon_pids(tmp_path: Path) -> list[int]:
    """The daemons' pids, as `agent up` announced them."""
    found = wait_for(
        lambda: re.search(r"started \d+ agent\(s\): pids ([\d, ]+)", log_text(tmp_path)),
        60,
        "agent up to start its agents",
    )
    return [int(pid) for pid in found.group(1).split(",")]


def test_agent_up_starts_a_real_agent_that_runs_a_launched_task(
    clearml_emulator: Emulator, tmp_path: Path
) -> None:
    """`ak-remote agent up` (no Docker) registers, completes a queued task, and Ctrl-C to it
    alone (kill -INT, as a supervisor sends it) stops the daemon: nothing is left running."""
    clearml_emulator.create_queue("cpu")
    task_id = enqueue_script(clearml_emulator, tmp_path, "hello", "print('hello from the agent')\n")
    agent = start_agent_up(clearml_emulator, tmp_path)
    try:
        (daemon,) = daemon_pids(tmp_path)
        task = wait_for_status(clearml_emulator, task_id, timeout=180)
        assert task["status"] == "completed", (task.get("status_message"), log_text(tmp_path))
        assert clearml_emulator.state.workers, "the agent never registered"
        agent.send_signal(signal.SIGINT)
        assert agent.wait(timeout=60) == 130, log_text(tmp_path)
        wait_for(lambda: not alive(daemon), 30, "the daemon to end")
        assert daemon_unregistered(clearml_emulator), "the daemon did not unregister"
    finally:
        kill_if_alive(agent)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_stopping_agent_up_stops_its_daemon_and_the_running_task(
    clearml_emulator: Emulator, tmp_path: Path, stop: signal.Signals
) -> None:
    """The daemon used to outlive a SIGTERM to `agent up`, polling forever once its server was
    gone. Now SIGTERM (or SIGKILL: the kernel's death signal) to `agent up` alone stops the
    daemon cleanly, which aborts the task it runs and ends the task's process."""
    clearml_emulator.create_queue("cpu")
    pid_file = tmp_path / "task.pid"
    body = f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
    body += "time.sleep(600)\n"
    task_id = enqueue_script(clearml_emulator, tmp_path, "sleeper", body)
    agent = start_agent_up(clearml_emulator, tmp_path)
    try:
        (daemon,) = daemon_pids(tmp_path)
        task_pid = int(wait_for(lambda: pid_file.is_file() and pid_file.read_text(), 180, "task"))
        agent.send_signal(stop)
        code = agent.wait(timeout=60)
        assert code == (143 if stop == signal.SIGTERM else -signal.SIGKILL), log_text(tmp_path)
        wait_for(lambda: not alive(daemon), 60, "the daemon to end")
        wait_for(lambda: not alive(task_pid), 30, "the task's process to end")
        assert daemon_unregistered(clearml_emulator), "the daemon did not unregister"
        task = wait_for_status(clearml_emulator, task_id, timeout=30)
        assert task["status"] != "completed"
    finally:
        kill_if_alive(agent)


def daemon_unregistered(emulator: Emulator) -> bool:
    """Whether the daemon sent workers.unregister, which names its queues (the `execute`
    process that ran a task unregisters too, without queues). Not read off the worker list:
    a status report still in flight registers the worker again, as the server does on a
    first report."""
    return any(call.body.get("queues") for call in emulator.calls("workers.unregister"))


def kill_if_alive(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(10)


def log_text(tmp_path: Path) -> str:
    return (tmp_path / "agent.log").read_text(errors="replace")[-3000:]
