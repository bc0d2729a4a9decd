"""status, logs, abort and --wait against the emulator (runs moved along through the API)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from ak_remote.clearml_api import client_from_config
from ak_remote.contract import ABORTED_KEY
from ak_remote.launcher import templates
from ak_remote.launcher.launch import LaunchRequest, launch
from ak_remote.launcher.runs import read_log, wait
from tests.emulator.server import Emulator
from tests.helpers import invoke


@pytest.fixture
def sweep(clearml_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Two queued runs of one sweep."""
    monkeypatch.setenv("AK_REMOTE_POLL_INTERVAL", "0.05")
    client = client_from_config()
    templates.sync(client, "ak-remote/templates", "img:1", "")
    clearml_emulator.create_queue("gpu")
    result = launch(client, LaunchRequest("structured-classifier", "gpu", sweep=["epochs=1,2"]))
    return result


def start(emulator: Emulator, task_id: str) -> None:
    """What an agent does when it picks a run."""
    emulator.call("queues.get_next_task", queue=emulator.state.queue_by_name("gpu")["id"])
    emulator.call("tasks.started", task=task_id)


def scalar(
    emulator: Emulator, task_id: str, metric: str, variant: str, value: float, it: int
) -> None:
    emulator.add_events(
        [
            {
                "type": "training_stats_scalar",
                "task": task_id,
                "metric": metric,
                "variant": variant,
                "value": value,
                "iter": it,
            }
        ]
    )


def test_status_by_sweep_ids_and_project(clearml_emulator: Emulator, sweep: Any) -> None:
    first, second = sweep.task_ids
    start(clearml_emulator, first)
    scalar(clearml_emulator, first, "Summary", "test_accuracy", 0.75, -(2**31))
    by_sweep = invoke("status", "--sweep", sweep.plan.sweep_id, "--json")
    assert by_sweep.exit_code == 0, by_sweep.output
    rows = {r["id"]: r for r in json.loads(by_sweep.stdout)}
    assert rows[first]["status"] == "in_progress"
    assert rows[second]["status"] == "queued"
    assert rows[second]["queue"] == "gpu"
    assert rows[first]["metrics"] == {"Summary/test_accuracy": 0.75}
    table = invoke("status")  # default: the ak-remote project
    assert table.exit_code == 0
    assert first in table.stdout
    assert "test_accuracy=0.75" in table.stdout
    assert len(table.stdout.splitlines()) == 2 + 2  # header, rule, two runs: no templates
    unknown = invoke("status", "0" * 32)
    assert unknown.exit_code == 2
    assert "no such task" in unknown.stderr
    bad = invoke("status", "not-an-id")
    assert bad.exit_code == 2
    assert "32 hex" in bad.stderr


def test_abort_stops_queued_and_running_runs(clearml_emulator: Emulator, sweep: Any) -> None:
    first, second = sweep.task_ids
    start(clearml_emulator, first)
    clearml_emulator.call("tasks.edit", task=first, runtime={"gpu_count": "1"}, force=True)
    result = invoke("abort", first, second)
    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.split()) == sorted([first, second])
    assert clearml_emulator.get_task(first)["status"] == "stopped"
    assert clearml_emulator.get_task(second)["status"] == "stopped"
    assert clearml_emulator.state.queue_by_name("gpu")["entries"] == []
    # Each carries the abort's mark (a job an agent starts anyway stops at once), the rest of
    # its runtime properties kept.
    runtime = clearml_emulator.get_task(first)["runtime"]
    assert set(runtime) == {"gpu_count", ABORTED_KEY}
    assert ABORTED_KEY in clearml_emulator.get_task(second)["runtime"]
    again = invoke("abort", first)
    assert again.exit_code == 0
    assert "Already finished" in again.stderr
    assert clearml_emulator.get_task(first)["runtime"] == runtime  # nothing marked again
    # Resuming removes the mark: the run is meant to run now.
    resumed = invoke("resume", first, "-q", "gpu")
    assert resumed.exit_code == 0, resumed.output
    assert clearml_emulator.get_task(first)["status"] == "queued"
    assert clearml_emulator.get_task(first)["runtime"] == {"gpu_count": "1"}


def test_logs_page_through_everything_in_order(clearml_emulator: Emulator, sweep: Any) -> None:
    task_id = sweep.task_ids[0]
    base = 1_700_000_000_000
    # 1200 lines, with several sharing a millisecond across page boundaries
    events = [
        {
            "type": "log",
            "task": task_id,
            "msg": f"line {i}",
            "timestamp": base + i // 3,
            "level": "info",
        }
        for i in range(1200)
    ]
    clearml_emulator.add_events(events)
    lines: list[str] = []
    read_log(client_from_config(), task_id, lines.append)
    assert lines == [f"line {i}" for i in range(1200)]
    result = invoke("logs", task_id)
    assert result.stdout.splitlines()[:2] == ["line 0", "line 1"]


def test_wait_reports_changes_and_the_cli_exits_5_on_failure(
    clearml_emulator: Emulator, sweep: Any
) -> None:
    first, second = sweep.task_ids
    start(clearml_emulator, first)
    clearml_emulator.call("tasks.completed", task=first)
    start(clearml_emulator, second)
    clearml_emulator.call("tasks.failed", task=second, status_message="out of memory")
    seen: list[list[str]] = []
    rows = wait(
        client_from_config(),
        sweep.task_ids,
        interval=0.01,
        on_change=lambda r: seen.append([x.status for x in r]),
    )
    assert [r.status for r in rows] == ["completed", "failed"]
    assert seen == [["completed", "failed"]]
    result = invoke("logs", second, "--follow")
    assert result.exit_code == 5
    assert "ended failed" in result.stderr
