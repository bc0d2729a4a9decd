"""Integration tier: searches that spend agent time well, through real clearml-agent daemons on
the emulator and real AutoKeras training (wine, a few samples, a few epochs).

- Hyperband: the controller is killed while the first round's last trial runs; that trial ends
  unwatched, its agent goes away, and `resume SEARCH` carries on (the trial adopted, not trained
  again): the promoted candidate runs on the other agent and starts from its parent's best-epoch
  weights, fetched as an artifact of the parent's task (checked by its first epoch's training
  loss, not a log line).
- The median rule: a trial worse than the finished one at the same epoch is stopped early (its
  task stopped and tagged, its best so far its result), and the next candidate is queued before
  the stopped task has even ended, so its agent goes on at once; then a warm-started search
  (`--warm-start FIRST`) trains none of the first search's candidates, and is resumed after its
  controller dies.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import Result

from tests.emulator.agent import running_agent, wait_for_status
from tests.emulator.fixtures import wait_for
from tests.emulator.server import Emulator
from tests.helpers import invoke, ok, sets

# 150 rows, no histograms; the epochs are each test's.
SMALL = sets("max_samples=150", "histogram_freq=0")


def kill_tree(pid: int) -> None:
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def children(emulator: Emulator, search_id: str) -> list[dict[str, Any]]:
    tag = f"ak-remote-search-of:{search_id}"
    with emulator.state.lock:
        tasks = [t for t in emulator.state.tasks.values() if tag in (t.get("system_tags") or [])]
    return sorted(tasks, key=lambda t: str(t.get("created")))


def trial_of(task: dict[str, Any]) -> str:
    tags = task.get("system_tags") or []
    return next((t.split(":", 1)[1] for t in tags if t.startswith("ak-remote-trial:")), "final")


def spec_of(task: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(task["hyperparams"]["Search"]["spec"]["value"]))


def train_losses(emulator: Emulator, task_id: str) -> dict[int, float]:
    """The epoch training loss a trial reported (TensorBoard's `epoch_loss` of its train run,
    as the job reports it to ClearML), by epoch: the iteration is the epoch, counted from 1."""
    with emulator.state.lock:
        events = list(emulator.state.events.get(task_id, []))
    losses = {}
    for event in events:
        if event.get("type") != "training_stats_scalar":
            continue
        metric, variant = str(event.get("metric")), str(event.get("variant"))
        if "loss" in metric and "val" not in metric and "train" in f"{metric} {variant}":
            losses[int(event["iter"])] = float(event["value"])
    return losses


def launch(*args: str) -> Result:
    """`launch structured-classifier` of a one-at-a-time search, its controller on `services`."""
    return invoke(
        "launch", "structured-classifier", "-q", "gpu", *SMALL, "--parallel", "1",
        "--controller-queue", "services", *args,
    )  # fmt: skip


def setup(emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AK_REMOTE_POLL_INTERVAL", "1")
    monkeypatch.chdir(tmp_path)
    ok(invoke("templates", "sync", "--image", "ak-remote-worker:test-cpu"))
    emulator.create_queue("gpu")
    emulator.create_queue("services")


@pytest.mark.slow
def test_hyperband_hands_weights_to_another_agent_and_resumes(
    clearml_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = clearml_emulator
    setup(emulator, tmp_path, monkeypatch)
    logs = tmp_path / "agents"
    # epochs=3, factor 3: bracket 1 trains 3 candidates for 1 epoch, then promotes the best to
    # epochs 2-3; max_trials=4 ends the search there. One trial at a time: with more, Hyperband
    # opens its next bracket while a round waits, and max_trials could end it before a promotion.
    args = ["--set", "tuner=hyperband", "--set", "epochs=3", "--set", "max_trials=4", *SMALL]
    refused = invoke(
        "launch",
        "structured-classifier",
        "-q",
        "gpu",
        *args,
        "--parallel",
        "2",
        "--warm-start",
        "0" * 32,
    )
    assert refused.exit_code == 2
    assert "--warm-start works with tuner=random" in refused.stderr

    with running_agent(emulator, "gpu", log_dir=logs) as first:
        with running_agent(emulator, "services", log_dir=logs) as controller_agent:
            launched = ok(
                invoke(
                    "launch",
                    "structured-classifier",
                    "-q",
                    "gpu",
                    *args,
                    "--parallel",
                    "1",
                    "--controller-queue",
                    "services",
                )
            )
            search_id = launched.stdout.split()[0]

            def running(trial: str) -> dict[str, Any] | None:
                for task in children(emulator, search_id):
                    if trial_of(task) == trial and task["status"] == "in_progress":
                        return task
                return None

            last = wait_for(lambda: running("2"), 900, 0.5, "the bracket's last first-round trial")
            # The controller dies; the last trial of the round finishes while nobody watches.
            kill_tree(controller_agent.process.pid)
        wait_for_status(emulator, str(last["id"]), timeout=900, agent=first)
    emulator.call("tasks.stopped", task=search_id, force=True)  # the server's watchdog
    # The agent that trained the first round is gone: the promotion can only run elsewhere.
    with (
        running_agent(emulator, "gpu", log_dir=logs) as second,
        running_agent(emulator, "services", log_dir=logs) as controller_agent,
    ):
        resumed = ok(invoke("resume", search_id))
        assert "its saved search state is restored" in resumed.stderr
        done = wait_for_status(emulator, search_id, timeout=900, agent=controller_agent)
        assert done["status"] == "completed", controller_agent.log()[-6000:]
        assert re.search(r"[1-9] still in flight adopted", controller_agent.log())

    waiting = next(t for t in children(emulator, search_id) if spec_of(t).get("weights_from"))
    tasks = {str(t["id"]): t for t in children(emulator, search_id)}
    child = tasks[str(waiting["id"])]
    parent_id = spec_of(child)["weights_from"]
    parent = tasks[parent_id]
    assert child["status"] == "completed"
    assert child["last_worker"] == second.worker_id != parent["last_worker"] == first.worker_id
    candidate = spec_of(child)["candidate"]
    assert candidate["tuner/trial_id"] == trial_of(parent)
    assert candidate["tuner/initial_epoch"] == 1
    assert candidate["tuner/epochs"] == 3
    # Started from the parent's weights: its first epoch (the second of the model's life)
    # trains from a lower loss than the parent's first epoch did from the same seeded weights.
    parent_losses, child_losses = (
        train_losses(emulator, parent_id),
        train_losses(emulator, child["id"]),
    )
    assert sorted(child_losses) == [2, 3], child_losses  # epochs 2-3 only
    assert child_losses[2] < parent_losses[1]
    artifacts = {a["key"] for a in parent["execution"]["artifacts"]}
    assert "trial_weights" in artifacts
    # The trial that finished while the controller was away was adopted, not trained again.
    assert [t["id"] for t in tasks.values() if trial_of(t) == "2"] == [last["id"]]

    status = json.loads(ok(invoke("status", search_id, "--json")).stdout)
    budget = status["budget"]
    assert {a["worker"] for a in budget["agents"]} == {first.worker_id, second.worker_id}
    assert all(a["busy_s"] > 0 and a["setup_s"] > 0 for a in budget["agents"])
    assert budget["gpu_hours"] > 0


@pytest.mark.slow
def test_median_stops_free_the_agent_and_a_warm_start_trains_nothing_twice(
    clearml_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = clearml_emulator
    setup(emulator, tmp_path, monkeypatch)
    logs = tmp_path / "agents"
    # val_loss: a continuous objective (accuracies of a few validation rows tie); epochs of
    # small batches, so the controller sees a trial before its last epoch.
    args = ["--set", "tuner=random", "--set", "epochs=10", "--set", "early_stopping_patience=0"]
    args += ["--set", "objective=val_loss", "--set", "dataset=breast_cancer"]
    args += ["--set", "batch_size=8"]
    controller_env = emulator.add_client("controller")  # its calls, told apart in the log
    with running_agent(emulator, "gpu", log_dir=logs) as agent:
        with running_agent(
            emulator, "services", log_dir=logs, env=controller_env
        ) as first_controller:
            first = ok(
                launch(
                    *args, "--set", "max_trials=3", "--stop-min-trials", "1", "--stop-grace", "1"
                )
            )
            first_id = first.stdout.split()[0]
            done = wait_for_status(emulator, first_id, timeout=900, agent=first_controller)
            assert done["status"] == "completed", first_controller.log()[-6000:]
        tasks = children(emulator, first_id)
        trials = [t for t in tasks if trial_of(t) != "final"]
        stopped = [t for t in trials if "stopped early" in (t.get("tags") or [])]
        assert stopped, [(trial_of(t), t["status"]) for t in trials]
        calls = emulator.calls_by(controller_env)
        trial_ids = {str(t["id"]) for t in tasks}

        def is_poll(call: Any) -> bool:  # the controller's read of its trials in flight
            return (
                call.endpoint == "tasks.get_all"
                and "status" in (call.body.get("only_fields") or [])
                and bool(trial_ids & set(call.body.get("id") or []))
            )

        assert sum(map(is_poll, calls)) > 5  # the check below sees the controller's polls
        for task in stopped:
            assert task["status"] == "stopped"
            later = [t for t in tasks if str(t["created"]) > str(task["created"])]
            assert later
            assert later[0]["last_worker"] == agent.worker_id == task["last_worker"]
            # The slot is freed at once: the next candidate is cloned in the same round as the
            # stop, with no poll of the trials between (not after the stopped task has ended;
            # which of the two the server hears first is the agent's timing, not the rule's).
            stop = next(
                i
                for i, c in enumerate(calls)
                if c.endpoint == "tasks.stop_many" and str(task["id"]) in c.body["ids"]
            )
            clone = next(i for i in range(stop, len(calls)) if calls[i].endpoint == "tasks.clone")
            polls = [c.body for c in calls[stop:clone] if is_poll(c)]
            assert polls == [], polls
        status = json.loads(ok(invoke("status", first_id, "--json")).stdout)
        shown = {r["id"]: r["status"] for r in status["trials"]}
        assert {shown[str(t["id"])] for t in stopped} == {"stopped early"}

        with running_agent(emulator, "services", log_dir=logs) as controller_agent:
            second = ok(launch(*args, "--set", "max_trials=2", "--warm-start", first_id))
            second_id = second.stdout.split()[0]
            wait_for(
                lambda: (
                    "trial" in controller_agent.log() and " completed " in controller_agent.log()
                ),
                900,
                0.5,
                "the warm-started search's first trial",
            )
            assert "warm start: 3 result(s)" in controller_agent.log()
            kill_tree(controller_agent.process.pid)
        emulator.call("tasks.stopped", task=second_id, force=True)
        with running_agent(emulator, "services", log_dir=logs) as controller_agent:
            ok(invoke("resume", second_id))
            done = wait_for_status(emulator, second_id, timeout=900, agent=controller_agent)
            assert done["status"] == "completed", controller_agent.log()[-6000:]

    def trained(search_id: str) -> set[str]:
        return {
            json.dumps({k: v for k, v in spec_of(t)["candidate"].items()}, sort_keys=True)
            for t in children(emulator, search_id)
            if trial_of(t) != "final"
        }

    assert len(trained(second_id)) == 2
    assert trained(first_id).isdisjoint(trained(second_id))
    assert emulator.get_task(second_id)["status"] == "completed"
