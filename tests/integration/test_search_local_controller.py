"""Integration tier (real agents on the emulator, a real SIGTERM). Issue 20, item 4: a search
whose controller runs in this terminal (`--controller local`) records what a queued one does,
so when it is stopped it continues through the server (`ak-remote resume SEARCH -q services`)
as the same kind of run: its finished trials kept, then the final fit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ak_remote.contract import SEARCH_OF_PREFIX, SEARCH_SECTION, SEARCH_TAG
from tests.emulator.agent import running_agent, wait_for_status
from tests.emulator.server import Emulator
from tests.helpers import invoke, wait_for

SETS = ["max_trials=3", "epochs=2", "max_samples=120", "histogram_freq=0", "batch_size=16"]


@pytest.mark.slow
def test_a_local_controller_stopped_here_continues_through_the_server(
    clearml_emulator: Emulator, tmp_path: Path
) -> None:
    emulator = clearml_emulator
    assert invoke("templates", "sync", "--image", "ak-remote-worker:test-cpu").exit_code == 0
    emulator.create_queue("gpu")
    emulator.create_queue("services")
    logs, work = tmp_path / "agents", tmp_path / "work"
    work.mkdir()
    stderr_path = tmp_path / "cli.err"
    argv = [str(Path(sys.executable).parent / "ak-remote"), "launch", "structured-classifier"]
    argv += ["-q", "gpu", *(f"--set={s}" for s in SETS), "--parallel", "2"]
    argv += ["--controller", "local", "--early-stop", "off"]
    with running_agent(emulator, "gpu", log_dir=logs), running_agent(emulator, "gpu", log_dir=logs):
        with stderr_path.open("w") as err:
            cli_proc = subprocess.Popen(
                argv, cwd=work, env=dict(os.environ), stdout=subprocess.PIPE, stderr=err, text=True
            )
        try:
            wait_for(lambda: " completed " in stderr_path.read_text(), 600, "a finished trial")
            searches = [t for t in emulator.state.tasks.values() if SEARCH_TAG in t["system_tags"]]
            (search,) = searches
            search_id = str(search["id"])
            # What a queued controller carries: a clone of the template with its Search/spec.
            assert SEARCH_SECTION in (search.get("hyperparams") or {})
            assert search.get("parent")  # the template it was cloned from
            assert f"search {search_id}" in stderr_path.read_text()
            cli_proc.send_signal(signal.SIGTERM)
            cli_proc.wait(timeout=120)
        finally:
            if cli_proc.poll() is None:
                cli_proc.kill()
                cli_proc.wait()
        stderr = stderr_path.read_text()
        assert cli_proc.returncode == 143, stderr[-3000:]
        assert f"ak-remote resume {search_id}" in stderr
        assert emulator.get_task(search_id)["status"] in ("failed", "stopped")
        tag = f"{SEARCH_OF_PREFIX}{search_id}"
        done_before = {
            str(t["id"])
            for t in emulator.state.tasks.values()
            if tag in t["system_tags"] and t["status"] == "completed"
        }
        assert done_before

        # Its run folder says where it continues, and so does resume without a queue.
        (run_dir,) = (work / "runs" / "structured-classifier").iterdir()
        local = invoke("run", "structured-classifier", "--resume", str(run_dir))
        assert local.exit_code == 2
        assert f"ak-remote resume {search_id} -q services" in local.stderr
        no_queue = invoke("resume", search_id)
        assert no_queue.exit_code == 2
        assert "-q services" in no_queue.stderr

        with running_agent(emulator, "services", log_dir=logs) as controller_agent:
            resumed = invoke("resume", search_id, "-q", "services")
            assert resumed.exit_code == 0, resumed.output
            done = wait_for_status(emulator, search_id, timeout=900, agent=controller_agent)
            assert done["status"] == "completed", controller_agent.log()[-6000:]
            assert "search resumed" in controller_agent.log()

    status = json.loads(invoke("status", search_id, "--json").stdout)
    trials = [r for r in status["trials"] if r["trial"] != "final"]
    assert sorted(r["trial"] for r in trials if r["status"] == "completed") == ["0", "1", "2"]
    for task_id in done_before:  # finished before the stop: never trained again
        row = next(r for r in trials if r["id"] == task_id)
        again = [r for r in trials if r["trial"] == row["trial"] and r["status"] == "completed"]
        assert [r["id"] for r in again] == [task_id]
    assert [r["status"] for r in status["trials"] if r["trial"] == "final"] == ["completed"]
