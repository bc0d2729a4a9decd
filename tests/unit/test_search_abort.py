"""Issue 20, item 6: `abort SEARCH` stops the controller first and a stopping controller creates
nothing. Unit tier: the controller with a real oracle and an instant backend; the abort order
against the in-process emulator. With real agents: tests/integration/test_search_abort.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ak_remote.clearml_api import client_from_config
from ak_remote.contract import SEARCH_OF_PREFIX, SEARCH_TAG
from ak_remote.search import controller as ctl
from ak_remote.search.abort import abort_with_trials
from ak_remote.search.controller import Controller
from tests.emulator.server import Emulator
from tests.search_doubles import InstantBackend, make_oracle


class SlowBackend(InstantBackend):
    """Attempts that stay running until `release`d, so a stop arrives mid-search."""

    def __init__(self) -> None:
        super().__init__()
        self.released: set[str] = set()

    def poll(self, handles: list[str]) -> dict[str, ctl.Observation]:
        done = super().poll([h for h in handles if h in self.released])
        running = {h: ctl.Observation(ctl.RUNNING, marker=str(time.time())) for h in handles}
        return {**running, **done}


def test_a_controller_asked_to_stop_creates_nothing_more(tmp_path: Path) -> None:
    backend = SlowBackend()
    asked = {"stop": False}
    controller = Controller(
        make_oracle(tmp_path, "random", max_trials=6, epochs=1),
        backend,
        parallel=2,
        poll_s=0.0,
        sleep=lambda _s: None,
        stop_requested=lambda: asked["stop"],
    )
    controller.step()  # two trials in flight
    assert len(backend.attempts) == 2
    backend.released.add(next(iter(backend.attempts)))  # one ends: its slot would be refilled
    asked["stop"] = True
    with pytest.raises(ctl.Aborted):
        controller.step()
    assert len(backend.attempts) == 2  # no new trial, no retry
    with pytest.raises(ctl.Aborted):  # the final fit is not started either
        controller.run_final(next(iter(controller.trials.values())))
    assert len(backend.attempts) == 2


def _search(emulator: Emulator, running_by: str | None) -> tuple[str, list[str]]:
    """A search task (in progress, run by a worker or not) and two trials in flight."""
    search = emulator.create_task("search x", system_tags=[SEARCH_TAG])
    emulator.call("tasks.started", task=search, force=True)
    if running_by:
        emulator.call_api("workers.status_report", worker=running_by, task=search, timestamp=1)
    trials = []
    for n in range(2):
        trial = emulator.create_task(f"trial 0{n}", system_tags=[f"{SEARCH_OF_PREFIX}{search}"])
        emulator.call("tasks.started", task=trial, force=True)
        trials.append(trial)
    return search, trials


def test_abort_waits_for_the_controller_then_stops_its_trials(clearml_emulator: Emulator) -> None:
    emulator = clearml_emulator
    search, trials = _search(emulator, running_by="host:services")
    assert emulator.get_task(search)["status"] == "in_progress"
    late: list[str] = []

    def sleep(_s: float) -> None:
        # While abort waits: the agent ends the controller; the moment after, a trial the
        # controller created just before it noticed shows up.
        if emulator.get_task(search)["status"] != "stopped":
            emulator.call("tasks.stopped", task=search, force=True)
            assert all(emulator.get_task(t)["status"] == "in_progress" for t in trials)
        elif not late:
            late.append(
                emulator.create_task("trial 02", system_tags=[f"{SEARCH_OF_PREFIX}{search}"])
            )
            emulator.call("tasks.started", task=late[0], force=True)

    done = abort_with_trials(client_from_config(), [search], sleep=sleep)
    assert done.still_running == []
    assert sorted(done.result.stopped) == sorted([search, *trials, *late])
    for task_id in [*trials, *late]:
        assert emulator.get_task(task_id)["status"] == "stopped"


def test_a_controller_that_never_stops_is_named_and_its_trials_stopped_anyway(
    clearml_emulator: Emulator,
) -> None:
    emulator = clearml_emulator
    search, trials = _search(emulator, running_by="host:services")
    clock = iter(range(0, 10_000, 30))
    done = abort_with_trials(
        client_from_config(), [search], wait_s=60, sleep=lambda _s: None, clock=lambda: next(clock)
    )
    assert done.still_running == [search]
    assert emulator.get_task(search)["status_message"] == "stopping"
    assert all(emulator.get_task(t)["status"] == "stopped" for t in trials)
