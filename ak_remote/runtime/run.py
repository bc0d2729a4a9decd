"""One job run from argv to summary.json: parameters, ClearML task, data, search, export, record.

    python jobs/<job>.py [--set KEY=VALUE ...] [--run-dir DIR] [--project P] [--task-name N]
                         [--offline]

Exit codes (ak_remote.errors.ExitCode): 0 ok, 2 bad parameters or run folder, 3 data errors,
5 export verification failed or the disk is full, 143 stopped by SIGTERM/SIGHUP (or the `ak-remote
run` that started it died), 1 anything unexpected. Known errors print one line
`Error: <message> (<hint>)` to stderr (a traceback only with AK_REMOTE_DEBUG=1), mark the ClearML
task failed, and still write summary.json (status "failed").
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from ak_remote import __version__
from ak_remote.catalog import PROJECT_ROOT, Job, get_job
from ak_remote.contract import (
    DEFAULT_PROJECT,
    PARENT_PID_ENV,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_HERE_ENV,
    SEARCH_CONTROLLER_FILE,
    SUMMARY_FILE,
)
from ak_remote.datasets.references import DatasetRef, check_reference
from ak_remote.datasets.secrets import mask_credentials, secret_set_assignments
from ak_remote.errors import (
    AkRemoteError,
    DataError,
    ExitCode,
    RunFailedError,
    ServerError,
    UsageError,
)
from ak_remote.params import Value, parse_assignments
from ak_remote.runtime import console, signals
from ak_remote.runtime.rundir import RunDirLock, claim
from ak_remote.runtime.settings import Settings
from ak_remote.summary import (
    PENDING_IMPORT,
    DataRecord,
    ExportRecord,
    GitRecord,
    Reproducibility,
    RunSummary,
    ServingRecord,
)

if TYPE_CHECKING:
    from ak_remote.runtime.data import Dataset, Split
    from ak_remote.runtime.tracking import Tracker

DEBUG_ENV = "AK_REMOTE_DEBUG"
# What a local `--resume` continues from: a search's or a parallel search's snapshot.
RESUMABLE_FILES = ("search_state.zip", SEARCH_CONTROLLER_FILE)
IMAGE_ENV = "AK_REMOTE_IMAGE"  # set by hand or by an agent's config: the image a run ran in
# clearml-agent's Docker mode sets this in every task container to the image it started, as the
# task names it; ak-remote templates name it by digest (docker/build.sh prints it).
AGENT_IMAGE_ENV = "CLEARML_DOCKER_IMAGE"
# The locked packages whose versions decide whether a run can be reproduced.
KEY_PACKAGES = (
    "ak-remote",
    "autokeras",
    "keras",
    "keras-tuner",
    "tensorflow",
    "tensorflow-cpu",
    "tensorboard",
    "clearml",
    "numpy",
    "scikit-learn",
    "six",
)


class Part(Protocol):
    """What this process does in something larger than one training: a parallel search's
    controller, trial or final fit (ak_remote.search.worker). The runtime knows no search."""

    def run(self, run: Run, data: Dataset, split: Split) -> bool:
        """Do the part once the data is loaded and split; True when the run is done, False when
        the single training continues (with `run.candidate` set, say)."""
        ...


class PartSource(Protocol):
    """Given by the job's entry (ak_remote.entry): its flags, and the part a process plays."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the flags that name a part (hidden: ak-remote writes them itself)."""
        ...

    def part(self, args: argparse.Namespace, tracker: Tracker) -> Part | None:
        """The part this process plays, or None for a plain run. Raises UsageError."""
        ...


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        usage = " ".join(self.format_usage().split()).removeprefix("usage: ")
        raise UsageError(message, f"usage: {usage}")


def parse_argv(job: Job, argv: list[str], parts: PartSource | None = None) -> argparse.Namespace:
    """The runtime's own flags; raises UsageError for anything else."""
    parser = _ArgumentParser(prog=f"python {job.script}", description=job.description)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--project", default=None)
    parser.add_argument("--task-name", default=None)
    parser.add_argument("--offline", action="store_true")
    parser.add_argument(
        "--resume", action="store_true", help="continue the search saved in --run-dir"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace whatever --run-dir already holds"
    )
    if parts is not None:
        parts.add_arguments(parser)
    args = parser.parse_args(argv)
    # Values with credentials come by the environment (ak_remote.datasets.secrets), not argv.
    args.set += secret_set_assignments(os.environ)
    if args.resume:
        # Checked before anything writes into the folder (a failed run writes summary.json).
        from ak_remote.runtime.search_state import check_resume_dir

        check_resume_dir(args.run_dir)
    return args


class Run:
    """State of one run, so a failure at any step still writes a truthful summary."""

    def __init__(self, job: Job, parts: PartSource | None = None) -> None:
        self.job = job
        self.parts = parts
        self.started = time.time()
        self.params: dict[str, Value] = {}
        self.settings = Settings.from_values(job.params.defaults())
        self.run_dir: Path | None = None
        self.tracker: Tracker | Any = None
        self.resume = False  # --resume: continue the search saved in the run folder
        self.search_state: Any = None  # ak_remote.runtime.search_state.SearchState, once prepared
        self.part: Part | None = None  # this process's part in a parallel search, or None
        self.candidate: dict[str, Any] | None = None  # the final fit's fixed candidate
        self.test_answers: Any = None  # the model's answers (or values) on the test split
        self.dataset: DatasetRef | None = None  # `dataset`, checked once (again if it changed)
        self.summary = RunSummary(job=job.name)
        self.lock: RunDirLock | None = None  # the claim on run_dir, held until the process ends

    # --- the steps ---------------------------------------------------------------------------

    def execute(self, args: argparse.Namespace) -> None:
        from ak_remote.contract import server_configured
        from ak_remote.runtime.tracking import Tracker

        job = self.job
        overrides = parse_assignments(args.set)
        self.params = job.params.resolve(overrides)
        if args.run_dir:
            self.run_dir = Path(args.run_dir).resolve()
        # Cheap dataset check before a task exists: a typo costs nothing on the server.
        self.dataset = self._check_dataset(str(self.params["dataset"]))

        self.resume = bool(getattr(args, "resume", False))
        offline = bool(args.offline) or not server_configured()
        dataset = str(self.params["dataset"])
        try:
            self.tracker = Tracker(
                args.project or DEFAULT_PROJECT,
                args.task_name or f"{job.name} on {mask_credentials(dataset)}",
                offline,
            )
        except Exception as exc:  # the SDK raises many types for an unreachable server
            raise ServerError(
                f"could not create the ClearML task: {exc}".splitlines()[0],
                "check the server and credentials (ak-remote doctor), or pass --offline",
            ) from exc
        _restore_fault_signals()  # after the SDK's Task.init installed its handlers
        self.summary.task_id = self.tracker.task_id
        aborted_at = self.tracker.aborted_at()
        if aborted_at:
            raise AbortedBeforeStart(
                f"{aborted_at}, before it began: nothing trained",
                f"to run it after all: ak-remote resume {self.tracker.task_id}",
            )
        zip_path = self.tracker.offline_zip()
        self.summary.offline_session = str(zip_path) if zip_path else None
        if self.run_dir is None:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
            task_part = self.tracker.task_id.removeprefix("offline-")[:8]
            folder = Path.cwd() / "runs" / job.name / f"{stamp}-{task_part}"
            self.lock = claim(folder)
            self.run_dir = folder
        self.run_dir.mkdir(parents=True, exist_ok=True)
        console.log_to(self.run_dir)
        note = self.lock.kept_note() if self.lock is not None else None
        if note:
            console.say(f"--overwrite {note}")
        self.summary.run_dir = str(self.run_dir)
        self.write_summary()  # status "running" from the start: a killed run is never "completed"
        # Under an agent the values that count are the server's (a clone's overrides): they
        # are validated again, and bad ones fail the task with the same one-line message.
        # Credentials in a dataset URL stay in this process: the task, the session and the
        # summary get the masked text, and the masked value maps back to the real one here.
        real = job.params.to_strings(self.params)
        shown = _public(real)
        connected = self.tracker.connect_parameters(shown)
        connected = {k: real[k] if v == shown.get(k) else v for k, v in connected.items()}
        self.params = job.params.resolve(connected)
        if str(self.params["dataset"]) != str(real["dataset"]):  # the server's value differs
            self.dataset = self._check_dataset(str(self.params["dataset"]))
        self.summary.params = _public(job.params.to_strings(self.params))
        self.settings = Settings.from_values(self.params)
        self.summary.reproducibility = reproducibility(self.settings.seed, self.run_dir)
        if self.parts is not None:
            self.part = self.parts.part(args, self.tracker)
        console.say(f"run folder: {self.run_dir}")
        self._train_and_export()

    def _check_dataset(self, reference: str) -> DatasetRef:
        """The checked dataset reference; inside a job a bad one is a data error (exit 3)."""
        try:
            return check_reference(reference, self.job.family, self.job.kind)
        except UsageError as exc:
            raise DataError(exc.message, exc.hint) from None

    def _train_and_export(self) -> None:
        from ak_remote.runtime import data as data_module
        from ak_remote.runtime.training import prepare_devices, search

        job, settings, run_dir = self.job, self.settings, self.run_dir
        assert run_dir is not None
        # Data first: a data error then fails fast, before TensorFlow is even imported.
        assert self.dataset is not None
        data = data_module.load(self.dataset, job.family, job.kind, settings.target)
        for note in data.notes:
            console.say(f"data: {note}")
        split = data_module.split(
            data,
            settings.seed,
            settings.test_split,
            settings.validation_split,
            settings.max_samples,
        )
        _write_atomic(run_dir / "data_split.json", json.dumps(split.to_json()) + "\n")
        classes = data_module.class_names(data) if job.is_classifier else None
        if job.is_classifier and len({str(v) for v in data.y[split.train_val]}) < 2:
            raise DataError(
                "the training part of the data has a single class",
                "use more samples (max_samples) or a dataset with several classes",
            )
        self.summary.data = DataRecord(
            source=data.source,
            fingerprint=data_module.fingerprint(data),
            n_total=len(data),
            n_train=len(split.train),
            n_val=len(split.val),
            n_test=len(split.test),
            classes=classes,
            split_file="data_split.json",
            split_sha256=split.digest(),
        )
        self.write_summary()
        signals.raise_if_stopped()  # one that landed where Python drops exceptions (imports)
        if self.part is not None and self.part.run(self, data, split):
            return

        strategy, self.summary.distribution = prepare_devices(settings)
        tensorboard_dir = run_dir / "tensorboard"
        self.summary.tensorboard_dir = str(tensorboard_dir)
        console.say(
            f"TensorBoard logs: {tensorboard_dir}  (tensorboard --logdir {tensorboard_dir})"
        )
        from ak_remote.runtime.search_state import restore_or_start

        self.search_state = restore_or_start(
            run_dir,
            job.name,
            _public(job.params.to_strings(self.params)),
            self.summary.data.fingerprint,
            settings.max_trials,
            self.tracker,
            self.resume,
        )
        if self.search_state.resumed:
            from ak_remote.runtime.replay import replay_trials

            # The restored trials' curves belong in this session's record too.
            replay_trials(tensorboard_dir, self.tracker)
        result = search(
            job,
            settings,
            data,
            data.x[split.train_val],
            data.y[split.train_val],
            split.autokeras_validation_split,
            str(run_dir),
            strategy,
            self.tracker,
            self.search_state,
            candidate=self.candidate,
        )
        x_test, y_test = data.x[split.test], data.y[split.test]
        self._evaluate(result, x_test, y_test, classes)
        self._baseline(data.y[split.train_val], y_test)
        self.write_summary()
        signals.raise_if_stopped()
        self._export(data, result, x_test)

    def _evaluate(self, result: Any, x_test: Any, y_test: Any, classes: list[str] | None) -> None:
        import numpy as np

        from ak_remote.model.decode import decode
        from ak_remote.runtime.export import output_spec

        pipeline = result.automodel.tuner.get_best_pipeline()
        model = result.final_model
        x_model, y_model = pipeline.transform((x_test, y_test))
        values = model.evaluate(x_model, y_model, verbose=0, return_dict=True)
        metrics = {f"test_{name}": float(value) for name, value in values.items()}
        outputs = model.predict(x_model, verbose=0)
        answers = decode(outputs, output_spec(pipeline, self.job))
        self.test_answers = answers  # the baseline's paired test reads them
        if classes is not None:
            truth = np.asarray(y_test).astype(str)
            metrics["test_label_accuracy"] = float(np.mean(answers == truth))
            index = {name: i for i, name in enumerate(classes)}
            matrix = np.zeros((len(classes), len(classes)), dtype=int)
            for true, predicted in zip(truth, answers, strict=True):
                if predicted in index:
                    matrix[index[true], index[predicted]] += 1
            self.tracker.report_confusion_matrix(matrix, classes)
            (self.run_dir / "confusion_matrix.json").write_text(  # type: ignore[operator]
                json.dumps({"labels": classes, "matrix": matrix.tolist()}) + "\n"
            )
        for name, value in metrics.items():
            self.tracker.report_single_value(name, value)
            # At the last epoch: the test set is scored once the model is trained.
            self.tracker.report_scalar(
                "test", name.removeprefix("test_"), value, self.settings.epochs
            )
        self.summary.metrics = metrics
        console.say("test metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))

    def _baseline(self, y_train: Any, y_test: Any) -> None:
        """The score of a model that learned nothing, on the same test split, and the verdict."""
        from ak_remote.runtime.baseline import baseline

        record = baseline(
            self.job.is_classifier,
            y_train,
            y_test,
            self.summary.metrics,
            self.test_answers,
            self.settings.seed,
        )
        self.summary.metrics[record.metric_name] = record.baseline
        self.tracker.report_single_value(record.metric_name, record.baseline)
        self.summary.baseline = record
        self.summary.below_baseline = not record.beats_baseline
        console.say(
            f"baseline ({record.rule}): {record.metric}={record.baseline:.4g}, "
            f"model {record.model:.4g}; {record.test}: p={record.p_value:.3g}"
        )
        if record.near_constant:  # whatever the score: a better constant is still a constant
            self.tracker.add_tags(["near-constant"])
            what = (
                f"its predictions vary by {record.spread:.2%} of the targets' spread"
                if not self.job.is_classifier
                else f"it gives one answer to {1 - (record.spread or 0):.0%} of the test rows"
            )
            console.say(
                f"WARNING: the model is a near-constant predictor: {what}; it barely reads its "
                "inputs (train longer or on more data, or check that the inputs carry the target)"
            )
        if record.beats_baseline:
            return
        self.tracker.add_tags(["below-baseline"])
        better = (record.model > record.baseline) == self.job.is_classifier
        how = (
            f"better, but by no more than noise explains ({record.test}: p={record.p_value:.3g}"
            f" >= {record.alpha:g})"
            if better and record.p_value is not None
            else "it learned nothing useful"
        )
        message = (
            f"the model does not beat the baseline ({record.metric} {record.model:.4g} "
            f"vs {record.baseline:.4g} for {record.rule}): {how}"
        )
        if self.settings.require_better_than_baseline:
            raise RunFailedError(
                message, "train longer (epochs, max_trials) or check the data and its target"
            )
        console.say(f"WARNING: {message}")

    def _export(self, data: Any, result: Any, x_test: Any) -> None:
        from ak_remote.runtime.export import export_and_verify

        assert self.run_dir is not None
        # Exported into a staging folder and moved into models/ only once verified: a kill or a
        # failed check never leaves a half-written or unverified model where a good one was.
        models_dir = self.run_dir / "models"
        staging = self.run_dir / "models.tmp"
        if staging.exists():
            shutil.rmtree(staging)
        formats = self.settings.export_formats
        tolerance = self.settings.export_tolerance
        exported = export_and_verify(self.job, data, x_test, result, staging, formats, tolerance)
        verification = exported.verification
        self.summary.export = ExportRecord(
            formats={name: f"models/{path}" for name, path in exported.formats.items()},
            inference="models/inference.json",
            check_samples="models/check_samples.npz",
            # Keyed by path in the run folder: where the files are once moved in.
            checksums={
                _moved(name, staging.name, models_dir.name): digest
                for name, digest in exported.checksums.items()
            },
            verification=verification,
            serving=ServingRecord(
                path=exported.inference["serving"]["path"],
                signatures=sorted(exported.serving.get("signatures", {})),
                class_names=exported.serving.get("class_names", []),
            ),
        )
        for name, diff in verification["max_abs_diff"].items():
            self.tracker.report_single_value(f"export_max_abs_diff_{name}", diff)
        self.tracker.report_single_value("export_verified", 1.0 if exported.passed else 0.0)
        if not exported.passed:
            detail = ", ".join(
                f"{k}: {v:.3g}" for k, v in verification["max_abs_diff"].items()
            ) or "; ".join(verification.get("errors", {}).values())
            serving_check = verification.get("serving") or {}
            if not serving_check.get("passed", True):
                detail = (
                    "serving model on raw inputs: "
                    + (
                        serving_check.get("error")
                        or ", ".join(
                            f"{k}: {v:.3g}" for k, v in serving_check["max_abs_diff"].items()
                        )
                        + f"; answers match: {serving_check['answers_match']}"
                    )
                    + (f"; {detail}" if detail else "")
                )
            rejected = self.run_dir / "models.unverified"
            if rejected.exists():
                shutil.rmtree(rejected)
            staging.rename(rejected)
            self.summary.export.formats = {}
            raise RunFailedError(
                f"exported model failed verification ({detail}; tolerance {tolerance:g})",
                "the files are kept in models.unverified/ for inspection; do not serve them",
            )
        _replace_folder(staging, models_dir)
        serving_diffs = verification["serving"]["max_abs_diff"]
        console.say(
            "export verified: "
            + ", ".join(f"{k} max|diff|={v:.2g}" for k, v in verification["max_abs_diff"].items())
            + "; serving model on raw inputs: "
            + ", ".join(f"{k} max|diff|={v:.2g}" for k, v in serving_diffs.items())
        )
        self._attach_artifacts(models_dir, exported)

    def _attach_artifacts(self, models_dir: Path, exported: Any) -> None:
        assert self.run_dir is not None
        tracker = self.tracker
        for name, relative in exported.formats.items():
            artifact = {"keras": "model.keras", "savedmodel": "savedmodel", "h5": "model.h5"}[name]
            tracker.upload(artifact, models_dir / relative)
        tracker.upload("serving", models_dir / "serving")
        tracker.upload("inference.json", models_dir / "inference.json")
        tracker.upload("pipeline.json", models_dir / "pipeline.json")
        tracker.upload("check_samples.npz", models_dir / "check_samples.npz")
        tracker.upload("data_split.json", self.run_dir / "data_split.json")
        tracker.upload("tensorboard", self.run_dir / "tensorboard")
        if tracker.offline:
            # OutputModel raises in offline mode (clearml 2.1.12); import-offline registers it.
            self.summary.model_registration = PENDING_IMPORT
        else:
            labels = {name: i for i, name in enumerate(exported.class_names)}
            serving = exported.serving
            metadata = {
                "format": "TF Serving base folder (zip): 1/saved_model.pb",
                "signature": json.dumps(serving["signatures"]),
                "class_names": json.dumps(serving["class_names"]),
                "family": serving["family"],
                "task": serving["task"],
            }
            self.summary.model_registration = tracker.register_model(
                models_dir / "serving", labels, f"{self.job.name} model", metadata
            )

    # --- the ending --------------------------------------------------------------------------

    def write_summary(self) -> Path | None:
        if self.run_dir is None:
            return None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.summary.wall_time_s = round(time.time() - self.started, 2)
        if self.search_state is not None:
            self.summary.search = self.search_state.summary()
        path = self.run_dir / SUMMARY_FILE
        text = self.summary.to_json()
        try:
            _write_atomic(path, text)
        except OSError as exc:
            if exc.errno != errno.ENOSPC or self.lock is None or not self.lock.free_reserve():
                raise
            _write_atomic(path, text)  # the space kept for this last summary
        return path

    def finish(self, error: AkRemoteError | None) -> None:
        """Write summary.json, attach it, and close the task as completed or failed."""
        if error is None:
            self.summary.status = RUN_COMPLETED
        else:
            self.summary.status = RUN_FAILED
            self.summary.error = mask_credentials(str(error).splitlines()[0])
        path = self.write_summary()
        if self.lock is not None:
            self.lock.free_reserve()  # the run is over: its folder keeps only what it wrote
        if self.tracker is None:
            return
        try:
            if path is not None:
                self.tracker.upload(SUMMARY_FILE, path)
        finally:
            if error is None:
                self.tracker.complete()
            elif isinstance(error, AbortedBeforeStart):
                self.tracker.stop(error.message)
            else:
                self.tracker.fail(
                    mask_credentials(error.message),
                    mask_credentials(error.hint) if error.hint else None,
                )


def _moved(name: str, old: str, new: str) -> str:
    """`name` (a path in the run folder) after its first part moved from `old` to `new`."""
    head, _, rest = name.partition("/")
    return f"{new}/{rest}" if head == old and rest else name


def _public(values: dict[str, str]) -> dict[str, str]:
    """Parameter values as they may be recorded: credentials in URLs masked."""
    return {key: mask_credentials(value) for key, value in values.items()}


def _write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so a reader, or a kill mid-write, sees the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _replace_folder(new: Path, target: Path) -> None:
    """Move `new` to `target`, replacing it: the old folder is removed only after the rename."""
    old = target.with_name(f"{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    new.rename(target)
    if old.exists():
        shutil.rmtree(old)


def reproducibility(seed: int, run_dir: Path) -> Reproducibility:
    """Seed, key package versions, git commit (and local changes, saved as git.diff in the run
    folder), and the worker image if the agent's environment names one."""
    packages: dict[str, str] = {}
    for name in KEY_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return Reproducibility(
        seed=seed,
        python=sys.version.split()[0],
        packages=packages,
        ak_remote=__version__,
        image=os.environ.get(IMAGE_ENV) or os.environ.get(AGENT_IMAGE_ENV) or None,
        git=_git_state(run_dir),
    )


def _git_state(run_dir: Path) -> GitRecord | None:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        diff = git("diff", "HEAD", "--", "ak_remote", "jobs")
    except (OSError, subprocess.SubprocessError):
        return None
    if not diff.strip():
        return GitRecord(commit=commit, dirty=False)
    (run_dir / "git.diff").write_text(diff)
    return GitRecord(commit=commit, dirty=True, diff="git.diff", diff_sha256=_sha256(diff))


def _sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def _stop_with_parent() -> None:
    """End this job when the `ak-remote run` that started it dies, however it dies.

    Linux: the kernel sends SIGTERM on the parent's death (PR_SET_PDEATHSIG). Elsewhere, and as
    a second line, a thread compares getppid() with the parent the CLI named.
    """
    parent = os.environ.get(PARENT_PID_ENV, "")
    if not parent.isdigit():
        return
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if os.getppid() != int(parent):  # the parent died before we could ask
        os.kill(os.getpid(), signal.SIGTERM)
        return
    import threading

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="ak-remote-parent-watch", daemon=True).start()


def _restore_fault_signals() -> None:
    """Give SIGSEGV and its kin back to the OS (the SDK installs Python handlers for them).

    A Python handler for a synchronous fault returns into the faulting instruction: the process
    spins at 100 % CPU forever and no other signal gets through. Dying is the honest outcome.
    """
    for name in ("SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE"):
        signum = getattr(signal, name, None)
        if signum is not None and callable(signal.getsignal(signum)):
            signal.signal(signum, signal.SIG_DFL)


def _disk_full(run_dir: Path | None, exc: BaseException) -> bool:
    """Whether `exc` is, or was most likely caused by, a full disk under the run folder."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    if run_dir is None:
        return False
    try:  # Keras Tuner and h5py turn ENOSPC into their own errors
        return shutil.disk_usage(run_dir).free < 1024 * 1024
    except OSError:
        return False


def _remote_task(run: Run | None) -> str | None:
    """The task id when this process runs under an agent (its user resumes it by id)."""
    tracker = run.tracker if run is not None else None
    if tracker is None or not getattr(tracker, "running_remotely", False):
        return None
    return str(tracker.task_id)


def _resume_hint(run: Run | None, job_name: str) -> str | None:
    """How the user continues a stopped run: by task id under an agent (its run folder is on
    the agent's host), by run folder here."""
    remote = _remote_task(run)
    if remote is not None and os.environ.get(RUN_HERE_ENV):
        # Its task ran here, never from a queue: an agent on a CPU queue continues it.
        return f"resume it: ak-remote resume {remote} -q services (or another CPU queue)"
    if remote is not None:
        return f"resume it: ak-remote resume {remote}"
    if run is not None and run.run_dir is not None:
        return f"resume it: ak-remote run {job_name} --resume {run.run_dir}"
    return None


class AbortedBeforeStart(RunFailedError):
    """The task was stopped by ak-remote (`abort`, a search's controller) after an agent had
    pulled it from its queue:
    clearml-agent starts such a task anyway, marking it in_progress again (contract.ABORTED_KEY).
    The job marks it stopped and trains nothing."""


# How long an aborted job waits for its agent to end it. The agent reads the task's status every
# few seconds (its queue poll period, 5 s by default) and kills a stopped task's processes; had
# the job exited first, the agent would take the exit code for the run's end and mark the task
# completed or failed instead of stopped.
AGENT_END_WAIT_S = 60.0


def _wait_for_the_agent(seconds: float = AGENT_END_WAIT_S) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)


def main(job_name: str, argv: list[str] | None = None, parts: PartSource | None = None) -> int:
    """Run `job_name` with `argv` (default: sys.argv[1:]); returns the exit code. `parts` (from
    ak_remote.entry) says what part a process plays in a parallel search."""
    previous = signals.install()
    try:
        return _main(job_name, argv, parts)
    finally:  # a caller in the same process (a test) gets its own handlers back
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _main(job_name: str, argv: list[str] | None, parts: PartSource | None) -> int:
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    console.quiet_libraries()  # before TensorFlow loads: its warnings go to the run's log file
    run: Run | None = None
    error: AkRemoteError | None = None
    disk_full = False
    trace = ""
    code = ExitCode.OK
    try:
        _stop_with_parent()
        job = get_job(job_name)
        run = Run(job, parts)
        args = parse_argv(job, list(sys.argv[1:] if argv is None else argv), parts)
        if args.run_dir:
            folder = Path(args.run_dir).resolve()
            # Claimed before anything is written there; a refused claim writes nothing.
            run.lock = claim(folder, bool(args.resume), bool(args.overwrite))
            run.run_dir = folder
        run.execute(args)
    except AkRemoteError as exc:
        error, code, trace = exc, exc.exit_code, traceback.format_exc()
    except KeyboardInterrupt:
        error, code = RunFailedError("interrupted"), ExitCode.INTERRUPTED
    except signals.Stopped as exc:
        error = RunFailedError(
            f"stopped by {signal.Signals(exc.signum).name}", _resume_hint(run, job_name)
        )
        code = ExitCode.STOPPED
    except Exception as exc:  # noqa: BLE001 - a bug or an upstream failure: one line, traceback on request
        trace = traceback.format_exc()
        run_dir = run.run_dir if run is not None else None
        disk_full = _disk_full(run_dir, exc)
        if disk_full:
            resumable = run_dir is not None and any(
                (run_dir / name).is_file() for name in RESUMABLE_FILES
            )
            remote = _remote_task(run)
            if remote is not None:  # the folder is on the agent's host, not the user's
                again = f"ak-remote resume {remote}"
            elif resumable:
                again = f"resume: ak-remote run {job_name} --resume {run_dir}"
            else:
                again = f"run it again (--overwrite {run_dir} to reuse the folder)"
            error = RunFailedError(
                f"no space left on the device of the run folder {run_dir}",
                f"free some space, then {again}",
            )
            code = ExitCode.RUN_FAILED
        else:
            error = AkRemoteError(
                f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
                f"rerun with {DEBUG_ENV}=1 for the traceback",
            )
            code = ExitCode.INTERNAL
    signals.hold()  # closing: a second signal must not cut the run's record short
    if trace and debug:
        console.error(trace.rstrip())
    if run is not None:
        if error is not None and run.params:
            run.summary.params = _public(run.job.params.to_strings(run.params))
        try:
            run.finish(error)
        except Exception as exc:  # noqa: BLE001 - closing must not hide the run's own outcome
            if error is None:  # else the run's own error is the one line printed
                error = AkRemoteError(f"could not close the run: {exc}".splitlines()[0][:500])
                code = ExitCode.INTERNAL
    if error is not None:
        console.error(f"Error: {mask_credentials(str(error))}")
    if run is not None and run.summary.offline_session:
        console.error(f"offline session: {run.summary.offline_session}")
    if isinstance(error, AbortedBeforeStart) and run is not None and run.tracker is not None:
        sys.stdout.flush()
        _wait_for_the_agent()
    if disk_full:
        # The run is recorded; h5py's teardown of a file whose write hit the full disk can
        # segfault at interpreter exit, which would replace this exit code with SIGSEGV.
        sys.stdout.flush()
        os._exit(int(code))
    return int(code)
