"""A job process's part in a parallel search: controller, one trial, or the final fit.

The part comes from `--search-spec FILE` (local) or the task's `Search/spec` hyperparameter (a
clone run by an agent); without either the job runs as a single search, as always.

- trial: train exactly the given candidate (AutoKeras with `hyperparameters=` all Fixed,
  `tune_new_entries=False`, `max_trials=1`) on the training part, validate on the validation
  part, report its objective every epoch (scalar `objective by epoch`/<objective name> and
  `objective by epoch`/`epoch`, which the controller reads from the task's last_metrics; locally
  `epochs.json`) and at the end (scalar `objective`/<objective name>), and its TensorBoard logs.
  No final refit, no export. No objective, or values that are not the given ones: the run fails.
  Hyperband: a candidate with `weights_from` loads that attempt's weights (an artifact of its
  task, or a file of its run folder) and trains from `tuner/initial_epoch` to `tuner/epochs`;
  one that may be promoted keeps its best epoch's weights the same way.
- final: the single-run path with the candidate fixed: one trial, AutoKeras' final refit on
  train+validation, evaluation, export and verification, the registered model.
- controller: `ak_remote.search.runner` (the oracle from the data's shapes, the controller).
Every trial and final fit checks its data fingerprint against the search's first.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ak_remote.contract import (
    EPOCH_OBJECTIVE_TITLE,
    EPOCH_SERIES,
    EPOCHS_FILE,
    OBJECTIVE_TITLE,
    SEARCH_SECTION,
    SEARCH_SPEC_KEY,
    SETUP_SERIES,
    TRIAL_WEIGHTS_ARTIFACT,
    TRIAL_WEIGHTS_FILE,
    is_task_id,
)
from ak_remote.errors import DataError, RunFailedError
from ak_remote.runtime import console
from ak_remote.search.spec import CONTROLLER, FINAL, TRIAL, SearchSpec
from ak_remote.summary import SearchPartRecord

if TYPE_CHECKING:
    from ak_remote.runtime.data import Dataset, Split
    from ak_remote.runtime.run import Run
    from ak_remote.runtime.tracking import Tracker


class SearchParts:
    """The runtime's `PartSource` for parallel searches: `--search-spec FILE` (a local search's
    processes) or the task's `Search/spec` hyperparameter (a clone run by an agent)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        # Written by ak-remote itself, for the processes of a local search.
        parser.add_argument("--search-spec", default=None, help=argparse.SUPPRESS)

    def part(self, args: argparse.Namespace, tracker: Tracker) -> SearchPart | None:
        """This process's part in a search, or None for a plain run. Raises UsageError."""
        path = getattr(args, "search_spec", None)
        if path:
            return SearchPart(SearchSpec.from_file(path))
        task = getattr(tracker, "task", None)
        if task is None or not getattr(tracker, "running_remotely", False):
            return None
        section = (task.get_parameters_as_dict() or {}).get(SEARCH_SECTION) or {}
        text = section.get(SEARCH_SPEC_KEY)
        return SearchPart(SearchSpec.from_json(str(text))) if text else None


@dataclass
class SearchPart:
    """One process's part in a search: the controller, a trial or the final fit."""

    spec: SearchSpec

    def run(self, run: Run, data: Dataset, split: Split) -> bool:
        """Do the part; True when the run is done, False when the single training continues
        (the final fit, with `run.candidate` set)."""
        return run_part(self.spec, run, data, split)


def run_part(spec: SearchSpec, run: Run, data: Dataset, split: Split) -> bool:
    """See `SearchPart.run`."""
    record = SearchPartRecord(role=spec.role, search_id=spec.search_id, trial=spec.trial)
    run.summary.search = record
    if spec.role == CONTROLLER:
        from ak_remote.search.runner import control

        control(spec, run, data, split)
        return True
    fingerprint = run.summary.fingerprint or ""
    if spec.fingerprint and spec.fingerprint != fingerprint:
        raise DataError(
            f"this worker's data differs from the search's (fingerprint "
            f"{fingerprint[:12]} != {spec.fingerprint[:12]})",
            "the dataset changed after the search started, or the worker reads another copy; "
            "give every worker the same data",
        )
    if spec.role == TRIAL:
        train_trial(spec, run, data, split, record)
        return True
    assert spec.role == FINAL
    run.candidate = candidate_values(spec.candidate)[0]
    record.values = run.candidate
    return False


def candidate_values(values: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """The values to fix and the epochs a Hyperband candidate asks for (its `tuner/*` keys are
    bracket bookkeeping, not model settings)."""
    epochs = values.get("tuner/epochs")
    fixed = {k: v for k, v in values.items() if not k.startswith("tuner/")}
    return fixed, int(epochs) if epochs is not None else None


# -- a trial ----------------------------------------------------------------------------------


def train_trial(
    spec: SearchSpec, run: Run, data: Dataset, split: Split, record: SearchPartRecord
) -> None:
    """Train the spec's candidate once and report its objective. Raises RunFailedError."""
    import keras

    from ak_remote.runtime.callbacks import TensorBoard
    from ak_remote.runtime.training import build_automodel, prepare_devices

    job, settings, run_dir, tracker = run.job, run.settings, run.run_dir, run.tracker
    assert run_dir is not None
    values, hyperband_epochs = candidate_values(spec.candidate)
    epochs = hyperband_epochs or settings.epochs
    weights = parent_weights(spec, tracker, run_dir) if spec.weights_from else None
    initial_epoch = int(spec.candidate.get("tuner/initial_epoch") or 0) if weights else 0
    strategy, run.summary.distribution = prepare_devices(settings)
    automodel = build_automodel(
        job,
        settings,
        data,
        str(run_dir / "autokeras"),
        strategy,
        candidate=values,
        trial=spec.trial,
    )
    board = run_dir / "tensorboard"
    run.summary.tensorboard_dir = str(board)
    # This process's Keras Tuner names its one trial after the search's on disk (`trial-07/train`,
    # as in a single search); its series are `trial/train` in every trial's task, so the Web
    # UI compares trials curve to curve.
    callbacks: list[Any] = [
        TensorBoard(
            str(board),
            settings.histogram_freq,
            str(run_dir / "checkpoints"),
            tracker,
            series_phase="trial",
        ),
        # An EarlyStopping of our own keeps AutoKeras from refitting after its one trial.
        keras.callbacks.EarlyStopping(
            patience=settings.early_stopping_patience or epochs + 1, min_delta=1e-4
        ),
        epoch_reporter(tracker, settings.objective, run_dir / EPOCHS_FILE, weights, run.started),
    ]
    started = time.time()
    automodel.fit(
        data.x[split.train],
        data.y[split.train],
        validation_data=(data.x[split.val], data.y[split.val]),
        epochs=epochs,
        initial_epoch=initial_epoch,
        batch_size=settings.batch_size,
        callbacks=callbacks,
        verbose=2,
    )
    oracle = automodel.tuner.oracle
    trials = list(oracle.trials.values())
    if len(trials) != 1:
        raise RunFailedError(f"the trial ran {len(trials)} candidates instead of one")
    trial = trials[0]
    used = trial.hyperparameters.values
    differ = sorted(k for k, v in values.items() if k in used and used[k] != v)
    if differ:
        raise RunFailedError(
            f"the trained candidate differs from the given one ({', '.join(differ[:5])})",
            "the search space of this worker differs from the controller's: same ak-remote?",
        )
    score = trial.score
    if str(trial.status) != "COMPLETED" or score is None or not math.isfinite(float(score)):
        raise RunFailedError(
            f"the trial reported no {settings.objective} (status {trial.status})",
            "read the log above: the candidate may not fit this data",
        )
    score = float(score)
    tracker.report_scalar(OBJECTIVE_TITLE, settings.objective, score, epochs)
    run.summary.metrics = {"objective": score, "train_seconds": round(time.time() - started, 2)}
    record.values, record.objective, record.epochs = values, settings.objective, epochs
    record.initial_epoch = initial_epoch
    record.weights_from = spec.weights_from if weights is not None else None
    _say(f"trial {spec.trial}: {settings.objective}={score:.4g}")
    if board.is_dir():
        tracker.upload("tensorboard", board)
    if hyperband_epochs is not None and hyperband_epochs < settings.epochs:
        # A rung below max_epochs may be promoted: keep its best epoch's weights (what Keras
        # Tuner's Hyperband loads) where the trial that continues it can fetch them.
        kept = Path(automodel.tuner._get_checkpoint_fname(trial.trial_id))
        if kept.is_file():
            target = run_dir / TRIAL_WEIGHTS_FILE
            shutil.copyfile(kept, target)
            if tracker.running_remotely:
                tracker.upload(TRIAL_WEIGHTS_ARTIFACT, target)
            record.weights_kept = True


def parent_weights(spec: SearchSpec, tracker: Tracker, run_dir: Path) -> Path | None:
    """The weights file of the attempt `spec.weights_from` (a task's artifact, or a file in a
    run folder), copied into this run folder; None (train from scratch) when it cannot be had."""
    source = spec.weights_from
    try:
        if is_task_id(source):
            found = tracker.download_task_artifact(source, TRIAL_WEIGHTS_ARTIFACT)
        else:
            found = Path(source) / TRIAL_WEIGHTS_FILE
            found = found if found.is_file() else None
    except Exception as exc:  # noqa: BLE001 - the SDK raises many types; training goes on
        _say(f"Warning: cannot fetch the weights of {source}: {exc}".splitlines()[0])
        return None
    if found is None:
        _say(f"Warning: {source} kept no weights: this trial trains from scratch")
        return None
    local = run_dir / f"parent.{TRIAL_WEIGHTS_FILE}"
    shutil.copyfile(found, local)
    _say(f"continuing from the weights of {source}")
    return local


def epoch_reporter(
    tracker: Tracker, objective: str, epochs_file: Path, weights: Path | None, started: float
) -> Any:
    """A Keras callback: loads `weights` before the first epoch; after every epoch reports the
    objective and the epoch (scalars for the controller, `epochs_file` for a local one)."""
    import keras

    class EpochReport(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.points: list[list[float]] = []

        def __deepcopy__(self, memo: dict[int, Any]) -> Any:
            # Keras Tuner deep-copies callbacks per trial; the tracker must be shared.
            return epoch_reporter(tracker, objective, epochs_file, weights, started)

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            if weights is not None:
                self.model.load_weights(str(weights))
            tracker.report_single_value(SETUP_SERIES, round(time.time() - started, 2))

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            value = (logs or {}).get(objective)
            if value is None or not math.isfinite(float(value)):
                return
            done = int(epoch) + 1  # Keras counts from 0, and from initial_epoch when given
            # The value first, then the epoch: the controller never pairs an epoch with a
            # value it has not seen yet.
            tracker.report_scalar(EPOCH_OBJECTIVE_TITLE, objective, float(value), done)
            tracker.report_scalar(EPOCH_OBJECTIVE_TITLE, EPOCH_SERIES, float(done), done)
            # At once (one request an epoch): the controller judges a trial by its epochs, and
            # the SDK's own flush can lag behind several short ones.
            tracker.flush()
            self.points.append([done, float(value)])
            tmp = epochs_file.with_name(f".{epochs_file.name}.tmp")
            tmp.write_text(json.dumps({"objective": objective, "epochs": self.points}))
            os.replace(tmp, epochs_file)

    return EpochReport()


def _say(message: str) -> None:
    console.say(message)


__all__ = ["SearchPart", "SearchParts", "train_trial"]
