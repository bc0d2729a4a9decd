"""The job's own AutoKeras/Keras Tuner oracle behind the controller's ask/tell seam.

Each in-flight trial holds one Keras Tuner "tuner id" (`worker0`..`workerN-1`), the way Keras
Tuner's distributed mode shares one oracle among workers: `create_trial(tuner_id)` gives each a
different candidate, `update_trial` + `end_trial` record the result, and the oracle writes its
own files (oracle.json, trial_*/trial.json) into its project folder on every change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ak_remote.search.controller import Ask


class KerasTunerOracle:
    """Adapter from a `keras_tuner.Oracle` (already holding the search space) to `Oracle`."""

    def __init__(self, oracle: Any, fast_bayesian: bool = True) -> None:
        from ak_remote.search.bayesian import scalable

        # Keras Tuner's own Bayesian oracle cannot keep up with hundreds of agents (see
        # ak_remote/search/bayesian.py); the benchmarks compare the two.
        self.oracle = oracle = scalable(oracle) if fast_bayesian else oracle
        objective = oracle.objective
        self.objective = str(objective.name)
        self.direction = str(getattr(objective, "direction", "min"))
        # Retries are the controller's (with a new task per attempt); the oracle sees each
        # trial end once. Failures must not stop the search early either: a lost agent is no
        # sign of a broken search space.
        oracle.max_retries_per_trial = 0
        oracle.max_consecutive_failed_trials = 10**9
        oracle.verbose = 0  # its trial tables would flood the controller log

    def ask(self, slot: str) -> Ask:
        from keras_tuner.engine.trial import TrialStatus

        trial = self.oracle.create_trial(slot)
        if trial.status == TrialStatus.STOPPED:
            return Ask("stop")
        if trial.status != TrialStatus.RUNNING:
            return Ask("idle")
        values = dict(trial.hyperparameters.values)
        return Ask("trial", str(trial.trial_id), {str(k): _plain(v) for k, v in values.items()})

    def tell(self, trial_id: str, objective: float | None, message: str = "") -> None:
        from keras_tuner.engine.trial import TrialStatus

        trial = self.oracle.trials[trial_id]
        if objective is not None and math.isfinite(objective):
            self.oracle.update_trial(trial_id, {self.objective: float(objective)})
            trial.status = TrialStatus.COMPLETED
        else:
            trial.status = TrialStatus.FAILED
            trial.message = message
        self.oracle.end_trial(trial)

    def adopt(self, slot: str, trial_id: str) -> None:
        """A trial that kept running while the controller was away: in flight again, no retry."""
        from keras_tuner.engine.trial import TrialStatus

        oracle = self.oracle
        if trial_id in oracle._retry_queue:
            oracle._retry_queue.remove(trial_id)
        trial = oracle.trials[trial_id]
        trial.status = TrialStatus.RUNNING
        oracle.ongoing_trials[slot] = trial
        oracle.save()

    def save(self) -> None:
        self.oracle.save()

    def add_result(self, values: Mapping[str, Any], objective: float) -> str:
        """Record a result trained elsewhere (a warm start) as a finished trial: the oracle
        learns from it and its duplicate check knows it. It counts towards no trial budget:
        `max_trials` goes up by one."""
        from keras_tuner.engine.trial import Trial, TrialStatus

        oracle = self.oracle
        if oracle.max_trials:
            oracle.max_trials += 1
        trial_id = f"{{:0{len(str(oracle.max_trials))}d}}".format(len(oracle.trials))
        hyperparameters = oracle.hyperparameters.copy()
        hyperparameters.values = dict(values)
        trial = Trial(hyperparameters=hyperparameters, trial_id=trial_id)
        trial.status = TrialStatus.RUNNING
        oracle.trials[trial_id] = trial
        oracle.start_order.append(trial_id)
        oracle._record_values(trial)
        oracle.update_trial(trial_id, {self.objective: float(objective)})
        # AutoKeras' greedy oracle starts from its curated candidates whatever it has seen: one
        # that the earlier search trained is not proposed again.
        for index, initial in enumerate(getattr(oracle, "initial_hps", None) or []):
            if all(values.get(k) == v for k, v in initial.items()):
                oracle._tried_initial_hps[index] = True
        trial.status = TrialStatus.COMPLETED
        trial.message = f"{WARM_MESSAGE} a result of an earlier search, not trained here"
        oracle.end_trial(trial)
        return str(trial_id)

    def reopen(self, max_trials: int) -> None:
        """After a restart from a saved state: `max_trials` trained here (warm results on top,
        which Keras Tuner's saved state does not keep); Hyperband, whose state says its
        iterations are done, runs one more when there is room (a grown search)."""
        oracle = self.oracle
        if oracle.max_trials:
            oracle.max_trials = max_trials + sum(1 for t in oracle.trials.values() if _warm(t))
        if hasattr(oracle, "hyperband_iterations") and len(oracle.trials) < oracle.max_trials:
            oracle.hyperband_iterations = max(
                oracle.hyperband_iterations, oracle._current_iteration + 2
            )

    def grow(self, max_trials: int) -> bool:
        """Allow `max_trials` trials trained here in all (warm results on top)."""
        oracle = self.oracle
        given = sum(1 for t in oracle.trials.values() if _warm(t))
        wanted = max_trials + given
        if not oracle.max_trials or wanted <= oracle.max_trials:
            return False
        oracle.max_trials = wanted
        if hasattr(oracle, "hyperband_iterations"):
            # Hyperband stops after its iterations' brackets, whatever max_trials says: one
            # more iteration (new brackets) for the trials asked.
            oracle.hyperband_iterations = oracle._current_iteration + 2
        oracle.save()
        return True


def _warm(trial: Any) -> bool:
    """A trial `add_result` made: its message says so (Keras Tuner keeps it in trial.json)."""
    return str(getattr(trial, "message", "") or "").startswith(WARM_MESSAGE)


WARM_MESSAGE = "warm start:"


def _plain(value: Any) -> Any:
    """numpy scalars as plain JSON values."""
    return value.item() if hasattr(value, "item") else value
