"""The session guard of tests/conftest.py: it finds a clearml-agent a test left running, names
the test, and kills it with what it ran. Here a stand-in named clearml-agent (a sleeping Python
script with a sleeping child) is left running on purpose, then found and killed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests import processes
from tests.helpers import alive, wait_for

STAND_IN = """\
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print(child.pid, flush=True)
time.sleep(300)
"""


def test_a_left_agent_is_found_with_its_test_and_killed_with_its_child(tmp_path: Path) -> None:
    agent = tmp_path / "clearml-agent"
    agent.write_text(STAND_IN)
    session = os.environ[processes.SESSION_VAR]
    process = subprocess.Popen(
        [sys.executable, str(agent), "daemon"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        child = int(process.stdout.readline())
        found = [p for p in processes.leftover_agents(session, settle=0) if p.pid == process.pid]
        assert len(found) == 1
        assert found[0].test.endswith(
            "test_process_guard.py::"
            "test_a_left_agent_is_found_with_its_test_and_killed_with_its_child"
        )
        assert "clearml-agent daemon" in found[0].command
        # The child carries the tag too, but it is not an agent: only agents are leftovers.
        assert child not in [p.pid for p in processes.leftover_agents(session, settle=0)]
        assert processes.kill(found) == [child]
        assert process.wait(10) == -9
        wait_for(lambda: not alive(child), 10, "the stand-in's child to die")
        # Another session's processes are never taken for this one's.
        assert processes.tagged_processes(session + "-other") == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
