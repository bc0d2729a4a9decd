"""`queues apply`, `agent up`, `agents` and `doctor` against the emulator and a real agent."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.emulator import fixtures as emulator_fixtures
from tests.emulator.agent import agent_env, running_agent, wait_for_status
from tests.emulator.server import Emulator
from tests.helpers import alive, invoke, outcome, wait_for
from tests.processes import as_foreground_job

SKIP = "CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL=1"
DECLARED = ["gpu", "gpu-large", "cpu", "services"]


def queue_names(emulator: Emulator) -> list[str]:
    return sorted(q["name"] for q in emulator.state.queues.values())


def test_queues_apply_creates_the_missing_ones_and_is_idempotent(
    clearml_emulator: Emulator,
) -> None:
    gpu_id = clearml_emulator.create_queue("gpu")
    code, out, err = outcome(invoke("queues", "apply", "--json"))
    assert code == 0, err
    assert json.loads(out) == {
        "created": ["gpu-large", "cpu", "services"],
        "existing": ["gpu"],
        "dry_run": False,
    }
    assert queue_names(clearml_emulator) == sorted(DECLARED)
    assert clearml_emulator.state.queues[gpu_id]["name"] == "gpu"  # untouched, same id
    assert set(
        clearml_emulator.state.queues[
            next(i for i, q in clearml_emulator.state.queues.items() if q["name"] == "cpu")
        ]["tags"]
    ) == {"ak-remote", "cpu"}

    clearml_emulator.reset_log()
    code, out, _ = outcome(invoke("queues", "apply", "--json"))
    assert code == 0
    assert json.loads(out)["created"] == []
    assert clearml_emulator.count("queues.create") == 0
    assert queue_names(clearml_emulator) == sorted(DECLARED)


def test_queues_apply_dry_run_creates_nothing(clearml_emulator: Emulator) -> None:
    code, out, _ = outcome(invoke("queues", "apply", "--dry-run"))
    assert code == 0
    assert "would create gpu" in out
    assert clearml_emulator.state.queues == {} or queue_names(clearml_emulator) == []
    assert clearml_emulator.count("queues.create") == 0


def test_queues_apply_rejects_a_bad_file_before_any_request(
    clearml_emulator: Emulator, tmp_path: Path
) -> None:
    bad = tmp_path / "queues.toml"
    bad.write_text('[[queue]]\nname = "gpu; rm -rf /"\n')
    clearml_emulator.reset_log()
    code, _, err = outcome(invoke("queues", "apply", str(bad)))
    assert code == 2
    assert "invalid or missing queue name" in err
    assert clearml_emulator.count() == 0


def test_queues_list(clearml_emulator: Emulator) -> None:
    clearml_emulator.create_queue("gpu")
    code, out, _ = outcome(invoke("queues", "list", "--json"))
    assert code == 0
    assert [q["name"] for q in json.loads(out)] == ["gpu"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["-q", "gpu", "--gpus", "0,1", "--per-gpu", "--image", "reg/w:1-gpu"],
            [
                "clearml-agent daemon --queue gpu --gpus 0 --foreground --docker reg/w:1-gpu",
                "clearml-agent daemon --queue gpu --gpus 1 --foreground --docker reg/w:1-gpu",
            ],
        ),
        (
            ["-q", "gpu-large", "-q", "gpu", "--gpus", "0-3"],
            [f"{SKIP} clearml-agent daemon --queue gpu-large gpu --gpus 0,1,2,3 --foreground"],
        ),
        (
            ["-q", "cpu", "--cpu-only", "--detached"],
            [f"{SKIP} clearml-agent daemon --queue cpu --cpu-only --detached"],
        ),
    ],
)
def test_agent_up_print(argv: list[str], expected: list[str]) -> None:
    code, out, err = outcome(invoke("agent", "up", *argv, "--print"))
    assert code == 0, err
    assert out.splitlines() == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-q", "gpu", "--gpus", "0,x"], "is not a GPU index"),
        (["-q", "gpu", "--per-gpu"], "--per-gpu needs --gpus"),
        (["-q", "gpu", "--gpus", "0", "--cpu-only"], "contradict"),
        (["-q", "gpu;reboot"], "invalid queue name"),
    ],
)
def test_agent_up_rejects_bad_flags(argv: list[str], message: str) -> None:
    code, _, err = outcome(invoke("agent", "up", *argv, "--print"))
    assert code == 2
    assert message in err


def test_doctor_without_configuration_says_how_to_configure() -> None:
    code, out, _ = outcome(invoke("doctor"))
    assert code == 4
    assert "FAIL configuration" in out
    assert "clearml-init" in out


def test_doctor_reports_each_broken_part(clearml_emulator: Emulator) -> None:
    code, out, _ = outcome(invoke("doctor", "-q", "gpu", "--json"))
    assert code == 4
    checks = {c["name"]: c for c in json.loads(out)}
    assert checks["server"]["ok"] is True
    assert checks["queue gpu"]["ok"] is False
    assert "queues apply" in checks["queue gpu"]["fix"]

    clearml_emulator.create_queue("gpu")
    code, out, _ = outcome(invoke("doctor", "-q", "gpu", "--json"))
    checks = {c["name"]: c for c in json.loads(out)}
    assert checks["queue gpu"]["ok"] is True
    assert checks["workers on gpu"]["ok"] is False
    assert "ak-remote agent up --queue gpu" in checks["workers on gpu"]["fix"]


def test_doctor_reports_bad_credentials(
    clearml_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLEARML_API_SECRET_KEY", "not-the-secret")
    monkeypatch.setenv("AK_REMOTE_HTTP_ATTEMPTS", "1")
    code, out, _ = outcome(invoke("doctor", "-q", "gpu", "--json"))
    assert code == 4
    checks = {c["name"]: c for c in json.loads(out)}
    assert checks["server"]["ok"] is False
    assert "not-the-secret" not in out


def test_doctor_reports_an_unreachable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARML_API_HOST", "http://127.0.0.1:9")
    monkeypatch.setenv("CLEARML_API_ACCESS_KEY", "k")
    monkeypatch.setenv("CLEARML_API_SECRET_KEY", "s")
    monkeypatch.setenv("AK_REMOTE_HTTP_ATTEMPTS", "1")
    monkeypatch.setenv("AK_REMOTE_HTTP_TIMEOUT", "2")
    code, out, _ = outcome(invoke("doctor", "--json"))
    assert code == 4
    checks = {c["name"]: c for c in json.loads(out)}
    assert checks["server"]["ok"] is False
    assert "doctor" in checks["server"]["fix"] or "CLEARML_API_HOST" in checks["server"]["fix"]


def test_doctor_is_healthy_with_a_real_agent_listening(clearml_emulator: Emulator) -> None:
    clearml_emulator.create_queue("gpu")
    with running_agent(clearml_emulator, "gpu"):
        code, out, _ = outcome(invoke("doctor", "-q", "gpu"))
        assert code == 0, out
        assert "FAIL" not in out
        code, out, _ = outcome(invoke("agents", "--json"))
        assert code == 0
        rows = json.loads(out)
        assert len(rows) == 1
        assert rows[0]["queues"] == ["gpu"]


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
