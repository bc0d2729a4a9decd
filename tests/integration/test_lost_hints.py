"""Integration: hints name the command that works (issue 20, item 5).

A remote run stopped on its agent's host says `ak-remote resume ID` (its run folder is on that
host, not the user's), whole, in its log and its status reason; the warning about a queue no
agent serves names `ak-remote agent up -q QUEUE`, which runs. Real clearml-agent, the emulator.
"""

from __future__ import annotations

import shlex
import signal
from pathlib import Path

import psutil
import pytest

from ak_remote.runtime.tracking import status_reason
from tests.emulator.agent import running_agent, wait_for_status
from tests.emulator.fixtures import wait_for
from tests.emulator.server import Emulator
from tests.helpers import invoke, ok


def test_status_reason_keeps_the_hint_whole() -> None:
    hint = "resume it: ak-remote run structured-classifier --resume /srv/" + "deep/" * 20 + "run"
    reason = status_reason("stopped by SIGTERM " + "x" * 300, hint)
    assert len(reason) <= 250
    assert reason.endswith(f"({hint})")
    assert status_reason("short", "do this") == "short (do this)"


def _log_lines(emulator: Emulator, task_id: str) -> list[str]:
    return [str(e.get("msg") or "") for e in emulator.state.task_events(task_id, "log")]


def _job_process(agent_pid: int) -> psutil.Process | None:
    """The job script the agent started (a descendant running jobs/structured_classifier.py)."""
    for child in psutil.Process(agent_pid).children(recursive=True):
        try:
            if any("structured_classifier.py" in part for part in child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


@pytest.mark.slow
def test_a_run_stopped_on_its_agent_hints_resume_by_id(
    clearml_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM to the job on the agent's host (a host shutdown, `docker stop`)."""
    emulator = clearml_emulator
    monkeypatch.chdir(tmp_path)
    ok(invoke("templates", "sync"))
    emulator.create_queue("cpu")
    sets = ["max_trials=3", "epochs=30", "max_samples=120", "histogram_freq=0"]
    args = [a for s in sets for a in ("--set", s)]
    task_id = ok(invoke("launch", "structured-classifier", "-q", "cpu", *args)).stdout.split()[0]
    with running_agent(emulator, "cpu", log_dir=tmp_path / "agent") as agent:
        job = wait_for(
            lambda: (
                any("TensorBoard logs:" in line for line in _log_lines(emulator, task_id))
                and _job_process(agent.process.pid)
            ),
            timeout=240,
            what=f"the job to start training\n{agent.log()[-3000:]}",
        )
        job.send_signal(signal.SIGTERM)
        task = wait_for_status(emulator, task_id, agent=agent)
        lines = wait_for(
            lambda: [ln for ln in _log_lines(emulator, task_id) if "Error: stopped by" in ln],
            timeout=60,
            what="the job's error line in its log",
        )
    assert task["status"] == "failed"
    hint = f"resume it: ak-remote resume {task_id}"
    assert lines[0].strip() == f"Error: stopped by SIGTERM ({hint})"
    assert task["status_message"].endswith(f"({hint})")
    assert "--resume" not in "\n".join(_log_lines(emulator, task_id))
    # The hint works: the run is queued again.
    resumed = ok(invoke("resume", task_id, "-q", "cpu"))
    assert resumed.stdout.strip() == task_id
    assert emulator.get_task(task_id)["status"] == "queued"
    ok(invoke("abort", task_id))


def test_missing_agent_warnings_name_a_command_that_runs(
    clearml_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = clearml_emulator
    monkeypatch.chdir(tmp_path)
    ok(invoke("templates", "sync"))
    emulator.create_queue("gpu")
    emulator.create_queue("services")
    result = ok(
        invoke(
            "launch",
            "structured-classifier",
            "-q",
            "gpu",
            "--set",
            "max_trials=2",
            "--parallel",
            "2",
        )
    )
    warnings = [line for line in result.stderr.splitlines() if "no worker serves" in line]
    assert len(warnings) == 2, result.stderr
    commands = [line[line.rindex("(") + 1 : line.rindex(")")] for line in warnings]
    assert commands == [
        "ak-remote agent up -q services --cpu-only",
        "ak-remote agent up -q gpu",
    ]
    for command in commands:
        argv = shlex.split(command)[1:]
        printed = invoke(*argv, "--print")
        assert printed.exit_code == 0, printed.output
        assert "clearml-agent" in printed.stdout
    ok(invoke("abort", result.stdout.split()[0]))
