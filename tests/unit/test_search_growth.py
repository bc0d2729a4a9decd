"""Unit tier (the emulator in process, no agents, no training): growing a search, its budget.

`resume SEARCH --max-trials N --parallel M` edits a queued search in place (its controller reads
the numbers through `growth_reader`, the real client against the emulator) and enqueues an ended
one again, a completed one included; refusals change nothing. `status SEARCH` shows each
agent's time and the cost at the configured price.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.emulator.server import Emulator
from tests.helpers import invoke, ok


def numbers(emulator: Emulator, task_id: str) -> tuple[int, int]:
    tree = emulator.get_task(task_id)["hyperparams"]
    spec = json.loads(tree["Search"]["spec"]["value"])
    return int(tree["General"]["max_trials"]["value"]), int(spec["parallel"])


class Grower:
    """What `Controller.grow` sees (the controller's own tests run the real one)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int | None, int | None]] = []

    def grow(self, max_trials: int | None = None, parallel: int | None = None) -> bool:
        self.calls.append((max_trials, parallel))
        return True


def test_a_search_grows_running_or_ended(
    clearml_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ak_remote.clearml_api import client_from_config
    from ak_remote.search.runner import growth_reader

    emulator = clearml_emulator
    monkeypatch.chdir(tmp_path)
    ok(invoke("templates", "sync", "--image", "ak-remote-worker:test-cpu"))
    emulator.create_queue("gpu")
    emulator.create_queue("services")
    launched = ok(
        invoke(
            "launch",
            "structured-classifier",
            "-q",
            "gpu",
            "--set",
            "max_trials=4",
            "--parallel",
            "2",
            "--max-time",
            "90m",
            "--target",
            "0.99",
            "--early-stop",
            "off",
        )
    )
    search = launched.stdout.split()[0]
    spec = json.loads(emulator.get_task(search)["hyperparams"]["Search"]["spec"]["value"])
    assert (spec["max_time_s"], spec["target"], spec["early_stop"]) == (5400.0, 0.99, "off")
    assert numbers(emulator, search) == (4, 2)

    # Refused, nothing changed: a search cannot shrink, --parallel above max_trials, no search.
    refused = invoke("resume", search, "--max-trials", "3")
    assert refused.exit_code == 2
    assert "cannot shrink" in refused.stderr
    refused = invoke("resume", search, "--parallel", "5")
    assert refused.exit_code == 2
    assert "more than max_trials=4" in refused.stderr
    template = next(t for t in emulator.state.tasks.values() if t["id"] != search)
    refused = invoke("resume", str(template["id"]), "--max-trials", "9")
    assert refused.exit_code == 2
    assert "is not one" in refused.stderr
    assert numbers(emulator, search) == (4, 2)

    # Queued (its controller would be running): edited in place, not enqueued again.
    grown = ok(invoke("resume", search, "--max-trials", "6", "--parallel", "3"))
    assert "takes the new numbers" in grown.stderr
    assert numbers(emulator, search) == (6, 3)
    assert emulator.get_task(search)["status"] == "queued"
    grower = Grower()
    refresh = growth_reader(client_from_config(), search, interval_s=0.0)
    refresh(grower)  # type: ignore[arg-type]
    assert grower.calls == [(6, 3)]
    # Its other settings are kept.
    spec = json.loads(emulator.get_task(search)["hyperparams"]["Search"]["spec"]["value"])
    assert (spec["max_time_s"], spec["target"]) == (5400.0, 0.99)

    # Completed: marked stopped, then enqueued again on the controller's queue.
    emulator.call("tasks.dequeue", task=search)
    emulator.call("tasks.started", task=search, force=True)
    emulator.call("tasks.completed", task=search, force=True)
    grown = ok(invoke("resume", search, "--max-trials", "8", "--json"))
    assert json.loads(grown.stdout)["previous_status"] == "stopped"
    assert numbers(emulator, search) == (8, 3)
    task: dict[str, Any] = emulator.get_task(search)
    assert task["status"] == "queued"
    services = next(q for q in emulator.state.queues.values() if q["name"] == "services")
    assert task["execution"]["queue"] == services["id"]


def test_the_budget_view_counts_each_agents_time_and_the_cost() -> None:
    from ak_remote.errors import UsageError
    from ak_remote.search.read import budget_of, parse_prices

    assert parse_prices("gpu=2.5, gpu-large=4") == {"gpu": 2.5, "gpu-large": 4.0}
    assert parse_prices("") == {}
    for bad in ("gpu", "gpu=cheap", "=3", "gpu=-1"):
        with pytest.raises(UsageError, match="is not QUEUE=PRICE"):
            parse_prices(bad)
    spec = {"queue_name": "gpu", "max_gpu_hours": 2.0, "max_time_s": 7200.0, "target": 0.9}
    search = {
        "status": "completed",
        "started": "2026-12-06T10:00:00+00:00",
        "last_update": "2026-12-06T11:00:00+00:00",
        "hyperparams": {"Search": {"spec": {"value": json.dumps(spec)}}},
    }
    rows = [
        {"trial": "0", "worker": "a", "busy_s": 1800.0, "queued_s": 5.0, "setup_s": 20.0},
        {"trial": "1", "worker": "b", "busy_s": 900.0, "queued_s": 1.0, "setup_s": 10.0},
        {"trial": "2", "worker": "a", "busy_s": 900.0, "queued_s": 2.0, "setup_s": None},
        {"trial": "3", "worker": "b", "busy_s": None, "queued_s": None, "setup_s": None},
        {"trial": "final", "worker": "a", "busy_s": 600.0, "queued_s": 1.0, "setup_s": 5.0},
    ]
    budget = budget_of(search, rows, {"gpu": 3.0})
    assert budget.elapsed_s == 3600.0
    assert budget.gpu_hours == pytest.approx(1.0)  # trials only, the final fit is not counted
    assert budget.cost == pytest.approx(3.0)
    by_agent = {a.worker: (a.trials, a.busy_s, a.queued_s, a.setup_s) for a in budget.agents}
    assert by_agent == {"a": (2, 2700.0, 7.0, 20.0), "b": (1, 900.0, 1.0, 10.0)}
    assert budget_of(search, rows, {}).cost is None
