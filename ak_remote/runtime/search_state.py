"""Resumable searches: snapshot the Keras Tuner project after every trial, restore it on restart.

What is saved: the AutoKeras/Keras Tuner project `<run>/autokeras/search` without any weights:
`oracle.json` (search space, random state, trial order), `tuner0.json`, `graph` (the
hypermodel) and each trial's `trial.json`, `build_config.json` and `pipeline`. That is all
Keras Tuner needs to reload the oracle and never train a finished trial again; the size grows
by a few KB a trial, whatever the model size. Trial checkpoints are not saved: AutoKeras
retrains the best candidate from its hyperparameters at the end anyway, so the only thing a
resumed run cannot do is reload a restored trial's own search weights (export.py says so in
its provenance record instead of comparing with them).

When: after every finished trial (`on_trial_end`, after Keras Tuner saved its own files), into
`<run>/search_state.zip` (temporary file + os.replace, so a kill mid-write leaves the previous
snapshot), then uploaded as the task's `search_state` artifact (waiting for the upload).

Restore, decided when the job starts:
- local, `--resume` with `--run-dir DIR`: from `DIR/search_state.zip`. The user asked for it,
  so a corrupt snapshot is an error (exit 3) and one made by another job, other search
  parameters or other data is an error (exit 2); nothing is trained.
- under an agent, when the task already has a `search_state` artifact (the same task run
  again): the task's parameters are the truth there and nobody is at a keyboard, so a corrupt or
  mismatching snapshot is logged and the search starts fresh (summary.json says why).
A restore replaces the project folder with the snapshot's files and builds the AutoModel with
`overwrite=False`: Keras Tuner reloads the oracle and continues up to the same `max_trials`.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ak_remote.catalog import Job
from ak_remote.contract import (
    RUN_COMPLETED,
    SEARCH_CONTROLLER_FILE,
    SEARCH_STATE_ARTIFACT,
    SUMMARY_FILE,
)
from ak_remote.datasets.secrets import mask_credentials
from ak_remote.errors import DataError, UsageError
from ak_remote.runtime import console
from ak_remote.summary import LocalSearch, read_summary

STATE_FILE = "search_state.zip"
MANIFEST = "ak_remote_search_state.json"
FORMAT = 1
PROJECT_DIR = Path("autokeras") / "search"  # training.PROJECT_NAME under <run>/autokeras
# The parameters that decide what the search explores and how a trial is scored; a snapshot is
# only resumed with the same values. The others (export formats and tolerance, histograms,
# devices) may change between runs: a run preempted on one host may continue on another.
SEARCH_PARAMS = (
    "dataset",
    "target",
    "max_samples",
    "max_trials",
    "epochs",
    "tuner",
    "objective",
    "batch_size",
    "validation_split",
    "test_split",
    "seed",
    "early_stopping_patience",
)
# Files a snapshot may hold (paths relative to the project folder); everything else (trial
# checkpoints, best_model.keras, anything unexpected) stays out, so the size stays bounded.
_ALLOWED = re.compile(
    r"^(oracle\.json|tuner[A-Za-z0-9_-]{0,40}\.json|graph"
    r"|trial_[A-Za-z0-9_-]{1,64}/(trial\.json|build_config\.json|pipeline))$"
)
MAX_MEMBER_BYTES = 8 << 20  # any one file; a trial.json is a few KB
MAX_MEMBERS = 4 * 10000 + 8  # four files per trial at most (max_trials <= 10000)
FINISHED = frozenset({"COMPLETED", "INVALID", "FAILED"})


class Uploader(Protocol):
    """Where snapshots go besides the run folder (the ClearML tracker)."""

    def upload(self, name: str, path: Path) -> None: ...


class SearchState:
    """The search state of one run: restored at the start, snapshotted after every trial."""

    def __init__(
        self,
        run_dir: Path,
        job: str,
        params: Mapping[str, str],
        fingerprint: str | None,
        max_trials: int,
        uploader: Uploader | None,
    ) -> None:
        self.run_dir = run_dir
        self.job = job
        self.params = {key: str(params[key]) for key in SEARCH_PARAMS if key in params}
        self.fingerprint = fingerprint
        self.max_trials = max_trials
        self.uploader = uploader
        self.resumed = False
        self.restored_from: str | None = None
        self.trials_restored = 0
        self.trials_trained = 0
        self.snapshots = 0
        self.note: str | None = None
        self.upload_errors = 0

    @property
    def project_dir(self) -> Path:
        return self.run_dir / PROJECT_DIR

    @property
    def state_file(self) -> Path:
        return self.run_dir / STATE_FILE

    # --- restore -------------------------------------------------------------------------------

    def restore(self, zip_path: Path, source: str) -> None:
        """Replace the project folder with the snapshot in `zip_path`.

        Raises DataError for a corrupt snapshot, UsageError for one of another job, other search
        parameters or other data.
        """
        members, manifest = read_snapshot(zip_path)
        self.check_matches(manifest)
        if self.project_dir.exists():
            shutil.rmtree(self.project_dir)
        self.project_dir.mkdir(parents=True)
        kept: set[str] = set()
        for name, data in members.items():
            target = self.project_dir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            if name.endswith("/trial.json") and _trial_status(data) in FINISHED:
                kept.add(name.split("/", 1)[0].removeprefix("trial_"))
        finished = len(kept)
        board = self.run_dir / "tensorboard"
        if board.is_dir():
            from ak_remote.runtime.callbacks import trial_run

            # Logs of the trial the kill interrupted (its id is trained again from scratch) and
            # of an interrupted final fit would mix with the new ones: only finished trials stay.
            runs = {trial_run(trial_id) for trial_id in kept}
            for child in board.iterdir():
                if child.is_dir() and child.name not in runs:
                    shutil.rmtree(child)
        if self.state_file.resolve() != zip_path.resolve():
            # The artifact becomes the run folder's own snapshot, for a later local --resume.
            shutil.copyfile(zip_path, self.state_file)
        self.resumed = True
        self.restored_from = source
        self.trials_restored = finished
        console.say(
            f"search resumed from the {source} ({STATE_FILE}): {finished} finished trial(s) "
            "are not trained again"
        )

    def check_matches(self, manifest: Mapping[str, Any]) -> None:
        """Raise UsageError unless the snapshot was made by this job, params and data."""
        if manifest.get("job") != self.job:
            raise UsageError(
                f"the search state was made by job {manifest.get('job')!r}, not {self.job!r}",
                "resume it with the job that made it",
            )
        theirs = manifest.get("params") or {}
        changed = [
            f"{key}: {theirs.get(key)!r} -> {value!r}"
            for key, value in self.params.items()
            if str(theirs.get(key)) != value
        ]
        if changed:
            raise UsageError(
                "the search state was made with other search parameters ("
                + "; ".join(changed)
                + ")",
                "resume with the same --set values, or start a new run",
            )
        if self.fingerprint and manifest.get("data_fingerprint") not in (None, self.fingerprint):
            raise UsageError(
                "the data changed since the search state was saved (its fingerprint differs)",
                "resume with the same data, or start a new run",
            )

    # --- snapshot ------------------------------------------------------------------------------

    def tuner_class(self, base: type) -> type:
        """`base` (an AutoKeras tuner class) subclassed to snapshot after every trial."""
        state = self

        class Snapshotting(base):  # type: ignore[valid-type,misc]
            def on_trial_end(self, trial: Any) -> None:
                # Keras Tuner ends the trial in the oracle and saves its files first: the
                # snapshot then holds the trial as finished, and no trial as ongoing.
                super().on_trial_end(trial)
                state.trial_ended()

        Snapshotting.__name__ = Snapshotting.__qualname__ = f"Snapshotting{base.__name__}"
        return Snapshotting

    def trial_ended(self) -> None:
        """Count the trial, write the snapshot and upload it; a failure costs a warning only."""
        self.trials_trained += 1
        try:
            self.snapshot()
        except OSError as exc:  # a full disk must not end the search that it would protect
            console.say(f"warning: could not save the search state: {exc}")
            return
        if self.uploader is None:
            return
        try:
            self.uploader.upload(SEARCH_STATE_ARTIFACT, self.state_file)
        except Exception as exc:  # noqa: BLE001 - the SDK raises many types; the search goes on regardless
            self.upload_errors += 1
            console.say(f"warning: could not upload the search state: {exc}".splitlines()[0])

    def snapshot(self) -> Path:
        """Write `<run>/search_state.zip` atomically from the project folder; returns its path."""
        files = snapshot_files(self.project_dir)
        trials = []
        for name, path in files.items():
            if name.endswith("/trial.json"):
                status = _trial_status(path.read_bytes())
                trials.append(
                    {"id": name.split("/", 1)[0].removeprefix("trial_"), "status": status}
                )
        manifest = {
            "format": FORMAT,
            "job": self.job,
            "params": self.params,
            "data_fingerprint": self.fingerprint,
            "max_trials": self.max_trials,
            "trials": trials,
            "trials_finished": sum(t["status"] in FINISHED for t in trials),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        tmp = self.state_file.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST, json.dumps(manifest, indent=2) + "\n")
            for name, path in sorted(files.items()):
                archive.write(path, name)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, self.state_file)
        self.snapshots += 1
        return self.state_file

    def summary(self) -> LocalSearch:
        """The `search` record of summary.json."""
        return LocalSearch(
            resumed=self.resumed,
            restored_from=self.restored_from,
            trials_restored=self.trials_restored,
            trials_trained_this_run=self.trials_trained,
            max_trials=self.max_trials,
            state_file=STATE_FILE if self.snapshots or self.resumed else None,
            snapshots=self.snapshots,
            upload_errors=self.upload_errors or None,
            note=self.note,
        )


def restore_or_start(
    run_dir: Path,
    job: str,
    params: Mapping[str, str],
    fingerprint: str | None,
    max_trials: int,
    tracker: Any,
    resume_local: bool,
) -> SearchState:
    """The run's SearchState, restored from the run folder (`resume_local`) or from the task's
    `search_state` artifact when it has one.

    Raises DataError/UsageError only for a local --resume (see the module docstring).
    """
    uploader = tracker if tracker is not None and hasattr(tracker, "upload") else None
    state = SearchState(run_dir, job, params, fingerprint, max_trials, uploader)
    if resume_local:
        state.restore(run_dir / STATE_FILE, "run folder")
        return state
    if tracker is None or getattr(tracker, "offline", True):
        return state
    try:
        downloaded = tracker.download_artifact(SEARCH_STATE_ARTIFACT)
    except Exception as exc:  # noqa: BLE001 - the SDK raises many types for a failed download
        state.note = f"the saved search state could not be downloaded ({exc}); started afresh"
        console.say(f"warning: {state.note}".splitlines()[0])
        return state
    if downloaded is None:
        return state
    try:
        state.restore(Path(downloaded), "task artifact")
    except (DataError, UsageError) as exc:
        state.note = f"the saved search state was not used: {exc.message}; started afresh"
        console.say(f"warning: {state.note}")
        if state.project_dir.exists():
            shutil.rmtree(state.project_dir)
    return state


def check_resume_dir(run_dir: str | None) -> Path:
    """The run folder a local --resume continues; raises UsageError when there is nothing to
    resume (no --run-dir, no such folder, no snapshot, or a run that already completed), and
    DataError when its summary.json cannot be read or was written by a newer ak-remote."""
    if not run_dir:
        raise UsageError("--resume needs the run folder", "pass --run-dir DIR with --resume")
    folder = Path(run_dir)
    if not folder.is_dir():
        raise UsageError(f"no run folder {run_dir}", "give the folder the run was started in")
    if not (folder / STATE_FILE).is_file() and not (folder / SEARCH_CONTROLLER_FILE).is_file():
        raise UsageError(
            f"nothing to resume in {run_dir}: no {STATE_FILE} (a search) or "
            f"{SEARCH_CONTROLLER_FILE} (a parallel search)",
            "a run saves it once its search has started; start the run again instead",
        )
    summary = folder / SUMMARY_FILE
    if summary.exists():
        try:
            status = read_summary(summary).status
        except DataError as exc:
            # Whether that run finished is unknown: resuming could replace a finished model.
            raise DataError(
                f"cannot resume {run_dir}: {exc.message}",
                exc.hint
                or "restore its summary.json, or start a new run in another --run-dir; "
                "nothing was changed",
            ) from None
        if status == RUN_COMPLETED:
            again = "start a new run to search again"
            if (folder / SEARCH_CONTROLLER_FILE).is_file():
                again += f"; --parallel N --warm-start {run_dir} trains none of its trials again"
            raise UsageError(f"the run in {run_dir} already completed; nothing to resume", again)
    return folder


def snapshot_files(project_dir: Path) -> dict[str, Path]:
    """The project's files that belong in a snapshot, by their name inside it."""
    files: dict[str, Path] = {}
    if not project_dir.is_dir():
        return files
    for path in project_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            name = path.relative_to(project_dir).as_posix()
            if _ALLOWED.match(name) and path.stat().st_size <= MAX_MEMBER_BYTES:
                files[name] = path
    return files


def read_snapshot(zip_path: Path) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The snapshot's project files and its manifest; DataError for anything corrupt or odd
    (a snapshot comes from a server, so names are checked before anything is written)."""

    def corrupt(reason: str) -> DataError:
        return DataError(
            f"the search state {zip_path.name} is unusable: {reason}",
            "start the run afresh (without --resume), or restore a good copy",
        )

    try:
        with zipfile.ZipFile(zip_path) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_MEMBERS:
                raise corrupt(f"{len(infos)} entries")
            members: dict[str, bytes] = {}
            manifest_bytes: bytes | None = None
            for info in infos:
                if info.file_size > MAX_MEMBER_BYTES:
                    raise corrupt(f"{info.filename!r} is too large")
                if info.filename == MANIFEST:
                    manifest_bytes = archive.read(info)
                elif _ALLOWED.match(info.filename):
                    members[info.filename] = archive.read(info)
                else:
                    raise corrupt(f"unexpected entry {info.filename!r}")
    # zlib.error: bytes flipped inside a member's compressed data (the CRC check comes later).
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, EOFError) as exc:
        raise corrupt(str(exc) or type(exc).__name__) from None
    if manifest_bytes is None:
        raise corrupt("no manifest")
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError:
        raise corrupt("the manifest is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise corrupt("unknown manifest format")
    if "oracle.json" not in members or not any(re.match(r"tuner.*\.json$", n) for n in members):
        raise corrupt("no oracle or tuner state")
    parsed: dict[str, Any] = {}
    for name, data in members.items():
        if name.endswith(".json"):
            try:
                parsed[name] = json.load(io.BytesIO(data))
            except ValueError:
                raise corrupt(f"{name} is not JSON") from None
    problem = _shape_problem(parsed)
    if problem:
        raise corrupt(problem)
    return members, manifest


# The keys Keras Tuner reads back, and their JSON types: a snapshot that is valid JSON but not
# what the tuner wrote would otherwise fail deep inside the search, after "search resumed".
_ORACLE_KEYS = {
    "ongoing_trials": dict,
    "hyperparameters": dict,
    "start_order": list,
    "end_order": list,
    "run_times": dict,
}
_TRIAL_KEYS = {"trial_id": str, "hyperparameters": dict, "metrics": dict, "status": str}


def _shape_problem(parsed: Mapping[str, Any]) -> str | None:
    """What is wrong with the snapshot's JSON files for Keras Tuner, or None."""
    oracle = parsed.get("oracle.json")
    if not isinstance(oracle, dict):
        return "oracle.json is not an object"
    for key, kind in _ORACLE_KEYS.items():
        if not isinstance(oracle.get(key), kind):
            return f"oracle.json has no valid {key!r}"
    trial_ids = set()
    for name, value in parsed.items():
        if name.startswith("tuner") and not isinstance(value, dict):
            return f"{name} is not an object"
        if name.endswith("/trial.json"):
            if not isinstance(value, dict):
                return f"{name} is not an object"
            for key, kind in _TRIAL_KEYS.items():
                if not isinstance(value.get(key), kind):
                    return f"{name} has no valid {key!r}"
            trial_ids.add(value["trial_id"])
    unknown = [str(t) for t in oracle["ongoing_trials"].values() if t not in trial_ids]
    if unknown:
        return f"oracle.json names trial {unknown[0]!r}, which the snapshot lacks"
    return None


def _trial_status(data: bytes) -> str:
    try:
        return str(json.loads(data).get("status") or "")
    except (ValueError, AttributeError):
        return ""


def resume_overrides(run_dir: Path, job: Job, overrides: Mapping[str, str]) -> dict[str, str]:
    """The --set values a local resume runs with: the snapshot's search parameters, then the
    user's own, which may change anything but a search parameter.

    A parallel search (no search_state.zip, its controller's search_controller.zip instead)
    keeps the search parameters its controller's summary.json recorded.
    Raises UsageError for another job's snapshot or a search parameter given another value
    (before anything runs), DataError for an unreadable snapshot or summary.
    """
    grows = False
    if (run_dir / STATE_FILE).is_file():
        _, manifest = read_snapshot(run_dir / STATE_FILE)
    else:
        recorded = read_summary(run_dir / SUMMARY_FILE)
        params = {k: v for k, v in recorded.params.items() if k in SEARCH_PARAMS}
        manifest = {"job": recorded.job, "params": params}
        # A parallel search's controller carries on with more trials (as `resume SEARCH
        # --max-trials` gives a search on agents); fewer than it has are refused.
        grows = "max_trials" in overrides and "max_trials" in params
    if manifest.get("job") != job.name:
        raise UsageError(
            f"{run_dir} holds a search of job {manifest.get('job')!r}, not {job.name!r}",
            f"resume it with `ak-remote run {manifest.get('job')} --resume {run_dir}`",
        )
    saved = {str(k): str(v) for k, v in (manifest.get("params") or {}).items()}
    if grows:
        wanted = job.params.resolve({**saved, **overrides})["max_trials"]
        if int(str(wanted)) < int(saved["max_trials"]):
            raise UsageError(
                f"the search has max_trials={saved['max_trials']}: it can grow, not shrink",
                f"drop --set max_trials, or give {saved['max_trials']} or more",
            )
        saved["max_trials"] = str(wanted)
    dataset = saved.get("dataset", "")
    if "***@" in dataset and "dataset" not in overrides:
        # A snapshot records the dataset URL without its credentials: they must come again.
        raise UsageError(
            f"the saved search names the dataset {dataset} without its credentials",
            "pass the full URL again: --set dataset=URL (credentials written as ${NAME} "
            "placeholders are saved as they are)",
        )
    merged = job.params.to_strings(job.params.resolve({**saved, **overrides}))
    changed = [
        f"{key}={mask_credentials(merged[key])} (saved: {value})"
        for key, value in saved.items()
        if key in merged and mask_credentials(merged[key]) != value
    ]
    if changed:
        raise UsageError(
            "a resumed search keeps its search parameters: " + ", ".join(changed),
            "drop those --set values, or start a new run",
        )
    return {**saved, **overrides}
