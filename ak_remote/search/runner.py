"""The controller's process: the job's oracle from the data, the backend, state, final fit.

A job process whose part is `controller` (ak_remote.search.worker) lands here: it builds the
job's Keras Tuner oracle from the data's shapes once, runs `ak_remote.search.controller` over a
backend (ClearML tasks, or local processes), saves `search_controller.zip` (run folder and
artifact) after every event, restores it when started again on the same search, and finally
gives the search the final fit's model and summary.
"""

from __future__ import annotations

import json
import os
import re
import time
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ak_remote.contract import (
    LIVE_STATUSES,
    PARAM_SECTION,
    SEARCH_CONTROLLER_ARTIFACT,
    SEARCH_CONTROLLER_FILE,
    SEARCH_SECTION,
    SEARCH_SPEC_KEY,
    SEARCH_TAG,
    SUMMARY_FILE,
    is_task_id,
)
from ak_remote.errors import DataError, RunFailedError, ServerError, UsageError
from ak_remote.params import shortest_names
from ak_remote.search import controller as ctl
from ak_remote.search.spec import CONTROLLER, EARLY_STOP_MEDIAN, LOCAL_BACKEND, SearchSpec
from ak_remote.summary import (
    AttemptRecord,
    ControllerRecord,
    FinalFitRecord,
    TrialRecord,
    read_summary,
)

if TYPE_CHECKING:
    from ak_remote.runtime.data import Dataset, Split
    from ak_remote.runtime.run import Run

STATE_FILE = SEARCH_CONTROLLER_FILE
STATE_JSON = "controller.json"
# Oracle files a snapshot holds (relative to the Keras Tuner project folder).
_ORACLE_FILES = re.compile(r"^(oracle\.json|trial_[A-Za-z0-9_-]{1,64}/trial\.json)$")


def build_oracle(run: Run, data: Dataset, split: Split) -> Any:
    """The job's Keras Tuner oracle, with the search space AutoKeras derives from the data.

    The space exists only once AutoKeras has seen the data's shapes; this does what
    `AutoModel.fit` and `AutoTuner.search` do before their first trial (autokeras 3.0.0), and
    stops there.
    """
    import keras

    from ak_remote.runtime.training import build_automodel

    settings, run_dir = run.settings, run.run_dir
    assert run_dir is not None
    keras.utils.set_random_seed(settings.seed)
    automodel = build_automodel(run.job, settings, data, str(run_dir / "autokeras"), None)
    dataset, validation = automodel._check_and_adapt(
        x=data.x[split.train],
        y=data.y[split.train],
        validation_data=(data.x[split.val], data.y[split.val]),
    )
    automodel._analyze_data(dataset)
    automodel._build_hyper_pipeline()
    tuner = automodel.tuner
    tuner.hypermodel.set_fit_args(0, epochs=settings.epochs)
    x, y = dataset
    hp = tuner.oracle.get_space()
    tuner._prepare_model_build(
        hp, x=x, y=y, validation_data=validation, batch_size=settings.batch_size
    )
    tuner._try_build(hp)
    tuner.oracle.update_space(hp)
    return tuner.oracle


class StateStore:
    """The controller's snapshot: controller.json + the oracle's files, zipped atomically."""

    def __init__(
        self, run_dir: Path, oracle_dir: Path, tracker: Any, meta: dict[str, Any] | None = None
    ) -> None:
        self.path = run_dir / STATE_FILE
        self.oracle_dir = oracle_dir
        self.tracker = tracker
        # What a warm start checks against: the data's fingerprint, the job, the tuner.
        self.meta = dict(meta or {})
        self.saves = 0
        self.upload_errors = 0

    def save(self, controller: ctl.Controller, upload: bool = True) -> None:
        """Write the snapshot (run folder) and, with `upload`, replace the task's artifact."""
        controller.oracle.save()
        tmp = self.path.with_name(f".{STATE_FILE}.tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            state = {**controller.to_state(), **self.meta}
            archive.writestr(STATE_JSON, json.dumps(state, indent=1))
            for path in sorted(self.oracle_dir.rglob("*")):
                name = path.relative_to(self.oracle_dir).as_posix()
                if path.is_file() and _ORACLE_FILES.match(name):
                    archive.write(path, f"oracle/{name}")
        os.replace(tmp, self.path)
        self.saves += 1
        if not upload or self.tracker is None or self.tracker.offline:
            return
        try:
            self.tracker.upload(SEARCH_CONTROLLER_ARTIFACT, self.path)
        except Exception as exc:  # noqa: BLE001 - the SDK raises many types; the search goes on
            self.upload_errors += 1
            _say(f"warning: could not upload the search state: {exc}".splitlines()[0])

    def fetch(self) -> Path | None:
        """The snapshot to restore: the task's artifact (a re-enqueued search), else the run
        folder's own (a local restart), else None."""
        if self.tracker is not None and not self.tracker.offline:
            try:
                downloaded = self.tracker.download_artifact(SEARCH_CONTROLLER_ARTIFACT)
            except Exception as exc:  # noqa: BLE001 - must say so, not start afresh silently
                raise DataError(f"cannot download the saved search state: {exc}") from None
            if downloaded is not None:
                return Path(downloaded)
        return self.path if self.path.is_file() else None

    def restore(self, zip_path: Path) -> dict[str, Any]:
        """Write the oracle's files back; returns controller.json. Raises DataError."""
        try:
            with zipfile.ZipFile(zip_path) as archive:
                state = json.loads(archive.read(STATE_JSON))
                for info in archive.infolist():
                    name = info.filename.removeprefix("oracle/")
                    if info.filename.startswith("oracle/") and _ORACLE_FILES.match(name):
                        target = self.oracle_dir / name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(archive.read(info))
        except (zipfile.BadZipFile, zlib.error, KeyError, ValueError, OSError) as exc:
            raise DataError(
                f"the saved search state {zip_path.name} is unusable: {exc}",
                "start a new search",
            ) from None
        if not isinstance(state, dict) or state.get("format") != ctl.STATE_FORMAT:
            raise DataError(f"the saved search state {zip_path.name} has an unknown format")
        return state


def control(spec: SearchSpec, run: Run, data: Dataset, split: Split) -> None:
    """Run the search: trials through the backend, then the final fit. Raises RunFailedError."""
    from ak_remote.search.backends import ClearMLBackend, LocalBackend, local_gpus
    from ak_remote.search.oracle import KerasTunerOracle

    job, run_dir, tracker = run.job, run.run_dir, run.tracker
    assert run_dir is not None
    general = job.params.to_strings(run.params)
    fingerprint = run.summary.fingerprint or ""
    offline = bool(tracker.offline)
    if not spec.search_id:
        spec.search_id = run_dir.name if offline else tracker.task_id
    if not offline:
        _mark_search(tracker)
        # Said first, so a user whose controller dies still knows what to resume or abort.
        _say(
            f"search {spec.search_id}: follow it with `ak-remote status {spec.search_id}`, "
            f"stop it with `ak-remote abort {spec.search_id}`"
        )
    else:
        _say(f"search in {run_dir}: resume it with `ak-remote run {job.name} --resume {run_dir}`")
    oracle = KerasTunerOracle(build_oracle(run, data, split))
    settings = run.settings
    meta = {"fingerprint": fingerprint, "job": job.name, "tuner": settings.tuner}
    store = StateStore(run_dir, Path(oracle.oracle._project_dir), tracker, meta)
    backend: Any
    client: Any = None
    if spec.backend == LOCAL_BACKEND:
        backend = LocalBackend(
            job, general, run_dir, spec, fingerprint, offline, local_gpus(), oracle.direction
        )
    else:
        if offline:
            raise UsageError(
                "a search over ClearML agents needs a ClearML server",
                "configure one (clearml.conf), or run it here: ak-remote run JOB --parallel N",
            )
        from ak_remote.clearml_api import client_from_config

        client = client_from_config()
        backend = ClearMLBackend(
            client, job, general, spec, fingerprint, oracle.objective, oracle.direction
        )

    def on_event(kind: str, controller: ctl.Controller, trial: ctl.Trial | None) -> None:
        if trial is not None and kind in (
            "completed",
            "failed",
            "retried",
            "submitted",
            "stopped-early",
        ):
            attempt = trial.current
            note = ""
            if kind in ("completed", "stopped-early") and trial.objective is not None:
                note = f" {controller.oracle.objective}={trial.objective:.4g}"
            if kind == "submitted" and trial.weights_from:
                note = f" from the weights of trial {trial.parent}"
            failed = trial.attempts[-2] if kind == "retried" else attempt
            why = f": {failed.message}" if kind in ("failed", "retried", "stopped-early") else ""
            _say(f"trial {trial.trial_id} {kind}{note} ({attempt.handle}){why}")
        if kind == "ended":
            _say(f"search ended ({controller.ended_by}): the final fit takes the best so far")
        if kind == "grown":
            _say(f"search grown: up to {controller.parallel} at once")
        persist(kind, controller, trial, tracker, store)

    controller = ctl.Controller(
        oracle,
        backend,
        spec.parallel,
        max_retries=spec.max_retries,
        lost_after_s=spec.lost_after_s,
        poll_s=spec.poll_s,
        on_event=on_event,
        median=(
            ctl.MedianRule(spec.stop_grace, spec.stop_min_trials)
            if spec.early_stop == EARLY_STOP_MEDIAN
            else None
        ),
        budget=ctl.Budget(spec.max_time_s, spec.max_gpu_hours, spec.target),
        handover=spec.handover,
        epochs=settings.epochs,
        refresh=growth_reader(client, spec.search_id) if client is not None else None,
        stop_requested=backend.stop_requested if isinstance(backend, ClearMLBackend) else None,
    )
    snapshot = store.fetch()
    adopted: list[str] = []
    if snapshot is None and spec.warm_start:
        results = warm_results(spec.warm_start, tracker, oracle, meta)
        given = controller.warm_start(spec.warm_start, results)
        _say(f"warm start: {given} result(s) of search {spec.warm_start} given to the oracle")
    if snapshot is not None:
        state = store.restore(snapshot)
        oracle.oracle.reload()
        controller.load_state(state)
        if isinstance(backend, ClearMLBackend):
            known = {a.handle for t in controller.trials.values() for a in t.attempts}
            if controller.final is not None:
                known |= {a.handle for a in controller.final.attempts}
            strays = [
                str(t["id"])
                for t in backend.children()
                if str(t["id"]) not in known and t.get("status") in LIVE_STATUSES
            ]
            # Made after the last snapshot: the restored oracle does not know their candidates.
            backend.stop(strays)
        oracle.reopen(settings.max_trials)
        if controller.ended_by == ctl.ENDED_ORACLE:
            # Ask the oracle again: a search given more trials (max_trials) goes on; one
            # without them stops at the first ask.
            controller.stopped, controller.ended_by = False, ""
        if isinstance(backend, LocalBackend):
            # Its trial processes ended with the old controller: each is trained again.
            again = controller.restart_in_flight()
            what = f"{len(again)} that were in flight are trained again"
        else:
            adopted = controller.adopt()
            what = f"{len(adopted)} still in flight adopted"
        done = sum(t.state != ctl.TRIAL_RUNNING for t in controller.trials.values())
        _say(f"search resumed: {done} trial(s) finished before are not trained again; {what}")
        store.save(controller)
    started = time.time()
    try:
        best = controller.run()
        _say(f"best: trial {best.trial_id} {oracle.objective}={best.objective:.4g}; final fit")
        final = controller.run_final(best)
    except ctl.Aborted:
        # Asked to stop (ak-remote abort): nothing more was created; stop what runs.
        in_flight = [t.current.handle for t in controller.running()]
        if controller.final is not None and controller.final.state == ctl.TRIAL_RUNNING:
            in_flight.append(controller.final.current.handle)
        backend.stop(in_flight)
        store.save(controller)
        raise RunFailedError(
            f"search {spec.search_id} was asked to stop; {len(in_flight)} attempt(s) in "
            "flight were stopped and nothing more was created",
            f"continue it: ak-remote resume {spec.search_id}",
        ) from None
    finally:
        if isinstance(backend, LocalBackend):
            backend.close()
        record = search_summary(controller, spec, adopted, time.time() - started)
        run.summary.search = record
    handle = final.current.handle
    if isinstance(backend, ClearMLBackend):
        final_summary = backend.adopt_final(handle, tracker.task_id)
    else:
        final_summary = read_summary(Path(handle) / SUMMARY_FILE)
    # The search's model is the final fit's: its record becomes the search's.
    summary = run.summary
    summary.metrics = final_summary.metrics
    summary.export = final_summary.export
    summary.model_registration = final_summary.model_registration
    summary.distribution = final_summary.distribution
    summary.tensorboard_dir = final_summary.tensorboard_dir
    summary.baseline = final_summary.baseline
    summary.below_baseline = final_summary.below_baseline
    # The model's environment is the final fit's (its image, Python, packages); the controller's
    # own is kept apart.
    summary.controller_reproducibility = summary.reproducibility
    summary.reproducibility = final_summary.reproducibility
    record.final_fit = FinalFitRecord(handle=handle, run_dir=final_summary.run_dir)
    if final_summary.below_baseline:
        tracker.add_tags(["below-baseline"])  # as the final fit's own task says
    for name, value in final_summary.metrics.items():
        tracker.report_single_value(name, float(value))


# Events after which a restarted controller elsewhere needs nothing new from the artifact (an
# attempt that started: its task says so itself); the run folder's snapshot is written anyway.
_LOCAL_ONLY_EVENTS = frozenset({"started"})


def persist(
    kind: str, controller: ctl.Controller, trial: ctl.Trial | None, tracker: Any, store: StateStore
) -> None:
    """After each controller event: the search's own reports of a finished trial, and its state
    snapshot (uploaded unless nothing a restart needs changed: two requests saved per trial)."""
    if kind == "completed" and trial is not None and trial is not controller.final:
        report_trials(tracker, controller, trial)
    store.save(controller, upload=kind not in _LOCAL_ONLY_EVENTS)


def report_trials(tracker: Any, controller: ctl.Controller, trial: ctl.Trial) -> None:
    """What ClearML's HyperParameterOptimizer shows on its optimizer task, after each trial.

    The objective of each trial and the best so far (x: the trial's number, as in its task name
    `trial 07`), a "summary" table of the finished trials (best first) and a "Parallel
    Coordinates" plot of their values against the objective.
    """
    oracle = controller.oracle
    number = _num(trial.trial_id)
    tracker.report_scalar("objective", "trial", float(trial.objective or 0), number)
    finished = [
        t
        for t in controller.trials.values()
        if t.state == ctl.TRIAL_COMPLETED and t.objective is not None
    ]
    sign = -1.0 if oracle.direction == "max" else 1.0
    # Best so far at trial n: the best of the finished trials numbered up to n. Trials finish
    # out of order; a point reported again for the same trial replaces the earlier one on the
    # server, so the points from this trial on are reported anew.
    best: float | None = None
    for t in sorted(finished, key=lambda t: _num(t.trial_id)):
        value = float(t.objective or 0)
        best = value if best is None or sign * value < sign * best else best
        if _num(t.trial_id) >= number:
            tracker.report_scalar("objective", "best so far", best, _num(t.trial_id))
    finished.sort(key=lambda t: (sign * float(t.objective or 0), _num(t.trial_id)))
    names = sorted({k for t in finished for k in t.values if not k.startswith("tuner/")})
    header = ["trial", "task id", oracle.objective, *names]
    rows: list[list[Any]] = [header]
    for t in finished:
        rows.append(
            [
                f"{_num(t.trial_id):02d}",
                # A warm start's result was trained by the earlier search, not by a task here.
                t.current.handle if t.attempts else f"warm start from {t.warm_from}",
                t.objective,
                *(t.values.get(n, "") for n in names),
            ]
        )
    tracker.report_table("summary", "trials", rows)
    # The plot's axes: the values that differ between the trials (all while they do not),
    # named by their last part ("structured_data_block_1/normalize" -> "normalize").
    varied = [n for n in names if len({repr(t.values.get(n)) for t in finished}) > 1] or names
    short = shortest_names(varied)
    columns: list[tuple[str, list[Any]]] = [("trial", [_num(t.trial_id) for t in finished])]
    columns += [(short[n], [t.values.get(n) for t in finished]) for n in varied]
    objective_values = [float(t.objective or 0) for t in finished]
    dimensions = [_dimension(label, values) for label, values in columns]
    dimensions.append({"label": oracle.objective, "values": objective_values})
    tracker.report_plotly(
        "Parallel Coordinates",
        "",
        {
            "data": [
                {
                    "type": "parcoords",
                    # the better trials in the bright colours, as the optimizer draws them
                    "line": {
                        "color": objective_values,
                        "colorscale": "Viridis",
                        "reversescale": oracle.direction != "max",
                        "showscale": True,
                    },
                    "dimensions": dimensions,
                }
            ],
            "layout": {
                "title": f"{len(finished)} finished trial(s): values and {oracle.objective}"
            },
        },
    )


def _dimension(label: str, values: list[Any]) -> dict[str, Any]:
    """A parallel-coordinates axis: numbers as they are, anything else as ticks."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return {"label": label, "values": [float(v) for v in values]}
    ticks = sorted({str(v) for v in values})
    return {
        "label": label,
        "values": [ticks.index(str(v)) for v in values],
        "tickvals": list(range(len(ticks))),
        "ticktext": ticks,
    }


def search_summary(
    controller: ctl.Controller, spec: SearchSpec, adopted: list[str], seconds: float
) -> ControllerRecord:
    """The `search` record of a controller's summary.json."""
    best = controller.best()
    trials = sorted(controller.trials.values(), key=lambda t: t.trial_id)
    return ControllerRecord(
        role=CONTROLLER,
        search_id=spec.search_id,
        parallel=spec.parallel,
        backend=spec.backend,
        objective=controller.oracle.objective,
        direction=controller.oracle.direction,
        best_trial=best.trial_id if best else None,
        best_objective=best.objective if best else None,
        best_values=best.values if best else None,
        trials_completed=sum(t.state == ctl.TRIAL_COMPLETED and not t.warm_from for t in trials),
        trials_failed=sum(t.state == ctl.TRIAL_FAILED for t in trials),
        trials_stopped=sum(t.state == ctl.TRIAL_STOPPED for t in trials),
        trials_warm=sum(bool(t.warm_from) for t in trials),
        attempts=sum(len(t.attempts) for t in trials),
        adopted_on_resume=adopted,
        controller_seconds=round(seconds, 2),
        polls=controller.polls,
        ended_by=controller.ended_by,
        elapsed_s=round(controller.elapsed_s(), 2),
        gpu_hours=round(controller.gpu_hours(), 5),
        epochs_trained=controller.epochs_trained(),
        curve_reads=controller.curve_reads,
        trials=[
            TrialRecord(
                trial=t.trial_id,
                state=t.state,
                objective=t.objective,
                values=dict(t.values),
                attempts=[
                    AttemptRecord(
                        handle=a.handle,
                        status=a.status,
                        worker=a.worker,
                        message=a.message,
                        epoch=a.epoch,
                    )
                    for a in t.attempts
                ],
                stop_reason=t.stop_reason,
                parent=t.parent,
                weights_from=t.weights_from,
                warm_from=t.warm_from,
                duplicate_of=t.duplicate_of,
            )
            for t in trials
        ],
    )


def warm_results(
    source: str, tracker: Any, oracle: Any, meta: dict[str, Any]
) -> list[tuple[dict[str, Any], float]]:
    """The results of the earlier search `source` (a task id, or a local search's run folder),
    once it is known to share this search's data, job, objective and search space.

    Raises UsageError (not a search, other data, another space) or DataError (unreadable).
    """
    if meta.get("tuner") == "hyperband":
        raise UsageError(
            "--warm-start works with tuner=random, bayesian or greedy",
            "Hyperband's brackets start from new random candidates: drop --warm-start",
        )
    folder = Path(source)
    if folder.is_dir():
        path: Path | None = folder / STATE_FILE
        if path is not None and not path.is_file():
            path = None
    elif is_task_id(source) and tracker is not None and not tracker.offline:
        try:
            path = tracker.download_task_artifact(source, SEARCH_CONTROLLER_ARTIFACT)
        except Exception as exc:  # noqa: BLE001 - the SDK raises many types
            raise DataError(f"cannot download the state of search {source}: {exc}") from None
    else:
        raise UsageError(
            f"--warm-start {source}: no such search here",
            "give a search's task id (with a server) or a local search's run folder",
        )
    if path is None:
        raise UsageError(
            f"--warm-start {source} is not a parallel search (no {STATE_FILE} saved)",
            "give a search started with --parallel",
        )
    with zipfile.ZipFile(path) as archive:
        try:
            state = json.loads(archive.read(STATE_JSON))
            space = json.loads(archive.read("oracle/oracle.json"))["hyperparameters"]["space"]
        except (KeyError, ValueError) as exc:
            raise DataError(f"the state of search {source} is unusable: {exc}") from None
    refusals = warm_refusals(state, space, oracle, meta)
    if refusals:
        raise UsageError(
            f"--warm-start {source} refused: {'; '.join(refusals)}",
            "warm-start only from a search of the same job on the same data",
        )
    done = (ctl.TRIAL_COMPLETED, ctl.TRIAL_STOPPED)
    return [
        (dict(t["values"]), float(t["objective"]))
        for t in state.get("trials") or []
        if t.get("state") in done and t.get("objective") is not None and not t.get("duplicate_of")
    ]


def warm_refusals(
    state: dict[str, Any], space: list[dict[str, Any]], oracle: Any, meta: dict[str, Any]
) -> list[str]:
    """Why an earlier search's results cannot be given to this one ([] when they can)."""
    reasons = []
    if state.get("job") != meta["job"]:
        reasons.append(f"it searched job {state.get('job') or '(unknown)'}, not {meta['job']}")
    theirs, ours = str(state.get("fingerprint") or ""), str(meta["fingerprint"])
    if theirs != ours:
        reasons.append(
            f"its data differs (fingerprint {theirs[:12] or '(not recorded)'} != {ours[:12]})"
        )
    if (state.get("objective"), state.get("direction")) != (oracle.objective, oracle.direction):
        reasons.append(f"it optimised {state.get('objective')}, not {oracle.objective}")

    def by_name(items: list[dict[str, Any]]) -> dict[str, str]:
        return {str(i["config"]["name"]): json.dumps(i, sort_keys=True, default=str) for i in items}

    old, new = by_name(space), by_name(oracle.oracle.hyperparameters.get_config()["space"])
    differ = sorted(set(old) ^ set(new)) + sorted(
        k for k in set(old) & set(new) if old[k] != new[k]
    )
    if differ:
        shown = ", ".join(differ[:4]) + (f" and {len(differ) - 4} more" if len(differ) > 4 else "")
        reasons.append(f"its search space differs ({shown})")
    return reasons


def growth_reader(client: Any, search_id: str, interval_s: float = 10.0) -> ctl.Refresh:
    """Every `interval_s`, read the search task's `max_trials` and `Search/spec` parallel
    (what `ak-remote resume SEARCH --max-trials N --parallel M` edits) and grow to them."""
    last = [float("-inf")]

    def refresh(controller: ctl.Controller) -> None:
        now = time.monotonic()
        if now - last[0] < interval_s:
            return
        last[0] = now
        try:
            found = client.get_tasks(ids=[search_id], only_fields=["hyperparams"])
        except ServerError:
            return  # the next round tries again
        tree = (found[0].get("hyperparams") or {}) if found else {}
        try:
            max_trials = int(tree[PARAM_SECTION]["max_trials"]["value"])
            parallel = int(json.loads(tree[SEARCH_SECTION][SEARCH_SPEC_KEY]["value"])["parallel"])
        except (KeyError, TypeError, ValueError):
            return
        controller.grow(max_trials, parallel)

    return refresh


def _mark_search(tracker: Any) -> None:
    """Tag the controller's own task as a search (a local controller's Task.init made it)."""
    task = tracker.task
    tags = list(task.get_system_tags() or [])
    if SEARCH_TAG not in tags:
        task.set_system_tags([*tags, SEARCH_TAG])


def _num(trial_id: str) -> int:
    return int(trial_id) if trial_id.isdigit() else 0


def _say(message: str) -> None:
    from ak_remote.runtime import console

    console.say(message)


__all__ = ["STATE_FILE", "StateStore", "build_oracle", "control"]
