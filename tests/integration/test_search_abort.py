"""Issue 20, item 6: `abort SEARCH` of a running search over real agents leaves nothing created
after it. Integration tier (real clearml-agent daemons on the emulator). The controller's side
and the abort order alone: tests/unit/test_search_abort.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from ak_remote.contract import SEARCH_OF_PREFIX
from tests.emulator.agent import running_agent, wait_for_status
from tests.emulator.server import Emulator
from tests.helpers import invoke


@pytest.mark.slow
def test_abort_of_a_running_search_leaves_nothing_created_after_it(
    clearml_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real agents: a search is aborted while a trial trains; no task of the search is created
    after the abort's stop request, and every one of them has ended."""
    emulator = clearml_emulator
    monkeypatch.setenv("AK_REMOTE_HTTP_BACKOFF", "0.01")
    assert invoke("templates", "sync", "--image", "ak-remote-worker:test-cpu").exit_code == 0
    emulator.create_queue("gpu")
    emulator.create_queue("services")
    logs = tmp_path / "agents"
    sets = ["max_trials=6", "epochs=30", "max_samples=150", "histogram_freq=0", "batch_size=8"]
    args = [f"--set={s}" for s in sets]
    with (
        running_agent(emulator, "gpu", log_dir=logs),
        running_agent(emulator, "gpu", log_dir=logs),
        running_agent(emulator, "services", log_dir=logs) as controller_agent,
    ):
        launched = invoke(
            "launch", "structured-classifier", "-q", "gpu", *args, "--parallel", "2",
            "--early-stop", "off",
        )  # fmt: skip
        assert launched.exit_code == 0, launched.output
        search_id = launched.stdout.split()[0]

        def children() -> list[dict[str, Any]]:
            tag = f"{SEARCH_OF_PREFIX}{search_id}"
            with emulator.state.lock:
                return [json.loads(json.dumps(t)) for t in emulator.state.tasks.values()
                        if tag in (t.get("system_tags") or [])]  # fmt: skip

        deadline = time.monotonic() + 600
        while not any(t["status"] == "in_progress" for t in children()):
            assert time.monotonic() < deadline, controller_agent.log()[-3000:]
            time.sleep(0.5)
        asked_at = time.time()
        aborted = invoke("abort", search_id)
        assert aborted.exit_code == 0, aborted.output
        wait_for_status(emulator, search_id, timeout=120)
        time.sleep(5)  # anything the controller would still create shows up by now
        tasks = children()
        created_after = [t["name"] for t in tasks if _created(t) > asked_at]
        assert created_after == [], created_after
        assert all(t["status"] in ("stopped", "completed", "failed") for t in tasks), tasks
        assert search_id in aborted.stdout.split()


def _created(task: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(str(task["created"]).replace("Z", "+00:00")).timestamp()
