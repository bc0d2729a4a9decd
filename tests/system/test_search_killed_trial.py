"""System tier (a real SIGKILL to a child process; no training). Issue 20, item 13: a local
trial process killed before it could close its run has its own summary.json marked failed,
naming the signal, and the controller is told so (it used to stay `running`)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from ak_remote.catalog import get_job
from ak_remote.search import controller as ctl
from ak_remote.search.backends import LocalBackend
from ak_remote.search.spec import CONTROLLER, LOCAL_BACKEND, SearchSpec
from ak_remote.summary import RunSummary, read_summary


def test_a_killed_trial_is_recorded_failed_in_its_own_summary(tmp_path: Path) -> None:
    spec = SearchSpec(role=CONTROLLER, backend=LOCAL_BACKEND, parallel=1)
    backend = LocalBackend(get_job("structured-classifier"), {}, tmp_path, spec, "fp", True)
    run_dir = tmp_path / "trials" / "trial_0"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(RunSummary(job="structured-classifier").to_json())
    # Stands for the trial's job process: it runs until killed, as training would.
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    handle = str(run_dir)
    backend.processes[handle], backend.slot_of[handle] = process, 0
    assert backend.poll([handle])[handle].status == ctl.RUNNING
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    seen = backend.poll([handle])[handle]
    assert seen.status == ctl.FAILED
    assert seen.message == "the trial process was killed by SIGKILL"
    recorded = read_summary(run_dir / "summary.json")
    assert recorded.status == "failed"
    assert recorded.error == "the trial process was killed by SIGKILL"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
