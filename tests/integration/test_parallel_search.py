"""One search spread over two real clearml-agent daemons on the emulator, through the CLI.

`launch --parallel 2` puts the controller on a `services` queue (a third agent), which keeps two
trials in flight on `gpu`. Then everything that can die does, in one search (each real step
costs tens of seconds on two cores, so one search serves all checks):
- a trial agent is SIGKILLed (agent first, then the trial it ran) mid-trial: the controller
  notices by its own liveness rule, fails the task and retries the trial on the other agent;
- the controller's agent is SIGKILLed once a trial finished; the search is marked stopped (as
  the server's watchdog would), `ak-remote resume SEARCH` enqueues it again and a fresh agent's
  controller adopts the trial still in flight: finished trials are not trained again, the total
  is max_trials.
The search ends with the final fit, and `pull --check SEARCH` verifies its model.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.emulator.agent import running_agent, wait_for_status
from tests.emulator.fixtures import wait_for
from tests.emulator.server import Emulator
from tests.helpers import TINY, invoke, ok, sets


def _kill_tree(pid: int) -> None:
    """SIGKILL the agent first (so it cannot report its trial failed), then what it ran: only
    the controller's liveness rule can notice."""
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


@pytest.mark.slow
def test_a_search_over_two_agents_survives_a_killed_agent(
    agent_emulator: Emulator, tmp_path: Path
) -> None:
    emulator = agent_emulator
    ok(invoke("templates", "sync", "--image", "ak-remote-worker:test-cpu"))
    emulator.create_queue("gpu")
    emulator.create_queue("services")
    before = len(emulator.state.tasks)

    # Bad input first: nothing may be created.
    refused = invoke("launch", "structured-classifier", "-q", "gpu", "--parallel", "0")
    assert refused.exit_code == 2
    assert "--parallel 0" in refused.stderr
    refused = invoke(
        "launch", "structured-classifier", "-q", "gpu", "--set", "max_trials=2", "--parallel", "3"
    )
    assert refused.exit_code == 2
    assert "more than max_trials=2" in refused.stderr
    refused = invoke(
        "launch", "structured-classifier", "-q", "gpu", "--sweep", "epochs=1,2", "--parallel", "2"
    )
    assert refused.exit_code == 2
    assert "--sweep" in refused.stderr
    refused = invoke(
        "launch", "structured-classifier", "-q", "gpu", "--parallel", "2",
        "--controller-queue", "nope",
    )  # fmt: skip
    assert refused.exit_code == 2
    assert "controller queue 'nope'" in refused.stderr
    assert len(emulator.state.tasks) == before

    logs = tmp_path / "agents"
    # The trial agents name an image, the controller's does not: the search's summary must
    # record the final fit's environment as the model's (issue 20, item 8).
    image = {"AK_REMOTE_IMAGE": "registry.example/ak-remote-worker@sha256:" + "ab" * 32}
    with (
        running_agent(emulator, "gpu", log_dir=logs, env=image) as first,
        running_agent(emulator, "gpu", log_dir=logs, env=image) as second,
    ):
        with running_agent(emulator, "services", log_dir=logs) as controller_agent:
            launched = invoke(
                "launch", "structured-classifier", "-q", "gpu",
                *sets(*TINY, "histogram_freq=0", "max_trials=4"),
                "--parallel", "2", "--controller-queue", "services", "--lost-after", "20",
            )  # fmt: skip
            ok(launched)
            search_id = launched.stdout.split()[0]
            assert "ak-remote-search" in emulator.get_task(search_id)["system_tags"]

            def children() -> list[dict[str, Any]]:
                tag = f"ak-remote-search-of:{search_id}"
                return [
                    t for t in emulator.state.tasks.values() if tag in (t.get("system_tags") or [])
                ]

            def running_on(worker: str) -> str | None:
                for task in children():
                    if task["status"] == "in_progress" and task.get("last_worker") == worker:
                        return str(task["id"])
                return None

            victim = wait_for(lambda: running_on(second.worker_id), 600, 0.5, "a trial on agent 2")
            time.sleep(3)  # mid-trial
            _kill_tree(second.process.pid)

            # The controller dies once it has recorded a finished trial (and saved its state).
            wait_for(
                lambda: " completed val_accuracy=" in controller_agent.log(),
                600,
                0.5,
                "the controller to record a finished trial",
            )
            finished_before = {str(t["id"]) for t in children() if t["status"] == "completed"}
            _kill_tree(controller_agent.process.pid)
        emulator.call("tasks.stopped", task=search_id, force=True)  # the server's watchdog
        with running_agent(emulator, "services", log_dir=logs) as controller_agent:
            resumed = ok(invoke("resume", search_id, "-q", "services"))
            assert search_id in resumed.stdout
            assert "its saved search state is restored" in resumed.stderr
            done = wait_for_status(emulator, search_id, timeout=900, agent=controller_agent)
            agent_logs = f"{controller_agent.log()[-6000:]}\n--- first\n{first.log()[-4000:]}"
            assert done["status"] == "completed", agent_logs
            resumed_log = controller_agent.log()
            assert "search resumed" in resumed_log
            assert "search resumed: 0 trial(s)" not in resumed_log  # it kept a finished one

        status = json.loads(ok(invoke("status", search_id, "--json")).stdout)
        trials = [r for r in status["trials"] if r["trial"] != "final"]
        completed = [r for r in trials if r["status"] == "completed"]
        assert sorted(r["trial"] for r in completed) == ["0", "1", "2", "3"], status
        assert all(r["objective"] is not None for r in completed)
        killed = next(r for r in trials if r["id"] == victim)
        assert killed["status"] == "failed"  # lost, and marked so by the controller
        retry = next(r for r in completed if r["trial"] == killed["trial"])
        assert retry["attempt"] == 1
        assert retry["worker"] == first.worker_id
        assert {r["worker"] for r in trials} == {first.worker_id, second.worker_id}
        finals = [r for r in status["trials"] if r["trial"] == "final"]
        assert [r["status"] for r in finals] == ["completed"]
        # Never the same candidate twice (a retry keeps its trial's values).
        keys = {json.dumps(r["values"], sort_keys=True) for r in completed}
        assert len(keys) == 4
        # Finished before the controller died: still the one and only attempt of their trial.
        for task_id in finished_before:
            row = next(r for r in trials if r["id"] == task_id)
            assert [r["id"] for r in completed if r["trial"] == row["trial"]] == [task_id]

        table = ok(invoke("status", search_id)).stdout
        assert "trial" in table
        assert "final" in table
        compared = json.loads(ok(invoke("compare", search_id, "--format", "json")).stdout)
        assert sorted(r["id"] for r in compared["runs"]) == sorted(r["id"] for r in completed)

        # One trial again, on its own: the same candidate and data, compared with the original;
        # it is not one of the search's trials.
        again = json.loads(ok(invoke("reproduce", retry["id"], "--wait", "--json")).stdout)
        objective = next(d for d in again["deltas"] if d["metric"] == "objective")
        assert objective["original"] == retry["objective"]
        assert objective["reproduced"] is not None
        assert "same data (fingerprints match)" in again["notes"]
        rerun = emulator.get_task(again["reproduction"])
        assert not any(t.startswith("ak-remote-search-of:") for t in rerun["system_tags"])
        after = json.loads(ok(invoke("status", search_id, "--json")).stdout)
        assert [r["id"] for r in after["trials"]] == [r["id"] for r in status["trials"]]

    # Its finished trials' TensorBoard logs, one run per trial and split, as in a single search.
    printed = ok(
        invoke("tensorboard", search_id, "--print-command", "--logdir", str(tmp_path / "tb"))
    ).stdout
    assert "--logdir_spec" in printed
    for row in completed:
        board = tmp_path / "tb" / row["id"]
        assert sorted(p.name for p in board.iterdir()) == [f"trial-{int(row['trial']):02d}"]
        assert any(board.glob("trial-*/train/events.out.tfevents.*"))
        assert any(board.glob("trial-*/validation/events.out.tfevents.*"))

    pulled = ok(invoke("pull", search_id, "--dest", str(tmp_path / "model"), "--check"))
    assert "Check passed" in pulled.stderr
    summary = json.loads((tmp_path / "model" / "summary.json").read_text())
    assert summary["search"]["role"] == "controller"
    assert summary["search"]["trials_completed"] == 4
    assert summary["export"]["verification"]["passed"] is True
    assert summary["reproducibility"]["image"] == image["AK_REMOTE_IMAGE"]
    assert summary["controller_reproducibility"]["image"] is None
