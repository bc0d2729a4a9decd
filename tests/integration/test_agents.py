"""ak_remote.fleet.agents: starting agents, as real processes (a stand-in, then the real
clearml-agent against the emulator). Command lines and the queue file: tests/unit/test_agents.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ak_remote.errors import UsageError
from ak_remote.fleet.agents import (
    build_agent_commands,
    start_agents,
    stop_agents,
)

# --- start_agents ---------------------------------------------------------------------------

_ECHO = (
    "import json, os, sys; print(json.dumps({'argv': sys.argv[1:], "
    "'skip': os.environ.get('CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL'), "
    "'inherited': os.environ.get('AK_TEST_INHERITED')}))"
)


def test_start_agents_runs_each_command_without_a_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AK_TEST_INHERITED", "yes")
    commands = build_agent_commands(
        ["gpu"],
        gpus="0,1",
        per_gpu=True,
        image=None,
        agent=(sys.executable, "-c", _ECHO),
        config_file="$HOME; echo injected",  # a shell would expand or split this
    )
    processes = start_agents(commands, stdout=subprocess.PIPE)
    outputs = []
    for process in processes:
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        outputs.append(json.loads(out))
    assert [o["argv"][o["argv"].index("--gpus") + 1] for o in outputs] == ["0", "1"]
    for output in outputs:
        assert output["argv"][:2] == ["--config-file", "$HOME; echo injected"]
        assert output["skip"] == "1"
        assert output["inherited"] == "yes"


def test_start_agents_missing_executable_is_a_usage_error(tmp_path: Path) -> None:
    good = build_agent_commands(
        ["gpu"], image=None, agent=(sys.executable, "-c", "import time; time.sleep(60)")
    )
    missing = build_agent_commands(["gpu"], image=None, agent=(str(tmp_path / "no-agent"),))
    with pytest.raises(UsageError, match="cannot start") as caught:
        start_agents([*good, *missing])
    assert "ak-remote[agent]" in str(caught.value)


# --- the real clearml-agent, started by start_agents, against the emulator -----------------


def test_started_agents_register_one_worker_per_gpu(clearml_emulator: Any, tmp_path: Path) -> None:
    """`agent up --gpus 0,1 --per-gpu` (non-Docker mode): two real daemons, two workers."""
    from tests.emulator.agent import AGENT_BIN, agent_env

    clearml_emulator.create_queue("gpu")
    commands = build_agent_commands(
        ["gpu"], gpus="0,1", per_gpu=True, image=None, agent=(str(AGENT_BIN),)
    )
    log_path = tmp_path / "agents.log"

    def workers() -> list[dict[str, Any]]:
        listed = clearml_emulator.call_api("workers.get_all")["workers"]
        return [w for w in listed if [q["name"] for q in w.get("queues", [])] == ["gpu"]]

    with log_path.open("wb") as log:
        processes = start_agents(
            commands, stdout=log, stderr=subprocess.STDOUT, base_env=agent_env(clearml_emulator)
        )
    try:
        deadline = time.monotonic() + 120
        while len(registered := workers()) < 2:
            alive = all(p.poll() is None for p in processes)
            log = log_path.read_text(errors="replace")[-4000:]
            assert alive, f"an agent exited before registering:\n{log}"
            assert time.monotonic() < deadline, f"agents did not register:\n{log}"
            time.sleep(0.3)
        # one worker per GPU, named by the agent after its GPU (<host>:gpu0, <host>:gpu1)
        assert sorted(w["id"].rsplit(":", 1)[-1] for w in registered) == ["gpu0", "gpu1"]
    finally:
        stop_agents(processes)  # what `agent up` does when stopped
    assert all(p.poll() is not None for p in processes)
