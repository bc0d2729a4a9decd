"""Test doubles for the search controller: the oracle a search builds for wine (the job's real
Keras Tuner oracle, nothing trained) and a backend that scores each attempt at once. Used by
tests/unit/test_search_controller.py, tests/unit/test_search_rules.py and the two
test_search_abort.py files."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ak_remote.catalog import get_job
from ak_remote.runtime import data as data_module
from ak_remote.runtime.settings import Settings
from ak_remote.search import controller as ctl
from ak_remote.search.controller import Observation, values_key
from ak_remote.search.oracle import KerasTunerOracle
from ak_remote.search.runner import build_oracle


def score(values: dict[str, Any]) -> float:
    """A deterministic objective from the values (what a trained candidate would report)."""
    return (int(values_key(values)[:6], 16) % 1000) / 1000.0


class InstantBackend:
    """Each attempt finishes at the next poll with a score computed from its values.

    `fail_first` makes the first attempt of those trials fail; `hang` keeps those attempts
    running with no sign of life (a dead agent).
    """

    def __init__(self, fail_first: set[str] = frozenset(), hang: set[str] = frozenset()) -> None:
        self.fail_first = set(fail_first)
        self.hang = set(hang)
        self.attempts: dict[str, tuple[str, dict[str, Any], int]] = {}
        self.stopped: list[str] = []
        self.max_in_flight = 0

    def submit(
        self, trial_id: str, values: Any, attempt: int, final: bool, weights_from: str = ""
    ) -> str:
        handle = f"{trial_id}#{attempt}"
        self.attempts[handle] = (trial_id, dict(values), attempt)
        return handle

    def poll(self, handles: list[str]) -> dict[str, Observation]:
        self.max_in_flight = max(self.max_in_flight, len(handles))
        result = {}
        for handle in handles:
            trial_id, values, attempt = self.attempts[handle]
            if handle in self.stopped:
                result[handle] = Observation(ctl.FAILED, message="stopped")
            elif trial_id in self.hang and attempt == 0:
                result[handle] = Observation(ctl.RUNNING, marker="frozen", worker="w0")
            elif trial_id in self.fail_first and attempt == 0:
                result[handle] = Observation(ctl.FAILED, message="task failed: boom")
            else:
                result[handle] = Observation(ctl.COMPLETED, objective=score(values), worker="w1")
        return result

    def stop(self, handles: list[str], reason: str = "") -> None:
        self.stopped += handles

    def abandon(self, handle: str, reason: str) -> None:
        self.stopped.append(handle)

    def curve(self, handle: str) -> list[tuple[int, float]]:
        return []  # no epochs: these trials are scored at once


def make_oracle(path: Path, tuner: str, max_trials: int, epochs: int = 6) -> KerasTunerOracle:
    job = get_job("structured-classifier")
    values = job.params.resolve(
        {"tuner": tuner, "max_trials": str(max_trials), "epochs": str(epochs), "max_samples": "120"}
    )
    settings = Settings.from_values(values)
    data = data_module.load(settings.dataset, job.family, job.kind, settings.target)
    split = data_module.split(
        data, settings.seed, settings.test_split, settings.validation_split, settings.max_samples
    )
    path.mkdir(parents=True, exist_ok=True)
    run = SimpleNamespace(job=job, settings=settings, run_dir=path)
    return KerasTunerOracle(build_oracle(run, data, split))
