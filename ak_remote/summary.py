"""The run summary (`summary.json`), typed: one tree of dataclasses, JSON in and out, versioned.

The job runtime writes it (status `running` from the start, rewritten atomically at each step);
the launcher, the search controller and the commands read it, only through `RunSummary`. Every
field has a default, so a run that failed early is still a whole summary. Reading checks the
version first (a newer one says "upgrade ak-remote"), then each known field's type (a bad one is
named by its path); keys this version does not know are kept as they are and written back.

Records whose inner shape is a report rather than an interface (the export verification, the
device record, the key packages) stay JSON objects (`dict[str, Any]`).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar, Union

from ak_remote.contract import RUN_COMPLETED, RUN_FAILED, RUN_RUNNING, SUMMARY_FILE
from ak_remote.errors import DataError

# Version 1: the layout written since the first landing (no "schema_version" key meant 1).
# Fields added with a default keep version 1: older readers keep them as unknown keys.
SUMMARY_VERSION: Final = 1
RUN_STATUSES: Final = (RUN_RUNNING, RUN_COMPLETED, RUN_FAILED)
PENDING_IMPORT: Final = "pending-import"  # model_registration of an offline run


@dataclass
class DataRecord:
    """The data a run trained on: where from, its identity, and the seeded split's sizes."""

    source: str = ""
    fingerprint: str = ""  # sha256 over the arrays (runtime/data.py)
    n_total: int = 0
    n_train: int = 0
    n_val: int = 0
    n_test: int = 0
    classes: list[str] | None = None  # classifiers: the class names
    split_file: str = "data_split.json"
    split_sha256: str = ""


@dataclass
class GitRecord:
    """The ak-remote checkout a run came from, and its local changes."""

    commit: str = ""
    dirty: bool = False
    diff: str | None = None  # file in the run folder (git.diff)
    diff_sha256: str | None = None


@dataclass
class Reproducibility:
    """What decides whether a run can be reproduced elsewhere."""

    seed: int = 0
    python: str = ""
    packages: dict[str, str] = field(default_factory=dict)
    ak_remote: str = ""
    image: str | None = None  # the worker image the run ran in, when its agent names it
    git: GitRecord | None = None


@dataclass
class ServingRecord:
    """The serving SavedModel: its place under the run folder and its signatures."""

    path: str = ""
    signatures: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)


@dataclass
class ExportRecord:
    """The exported model files, their checksums and how they were verified."""

    formats: dict[str, str] = field(default_factory=dict)  # format -> path in the run folder
    inference: str = ""
    check_samples: str = ""
    checksums: dict[str, str] = field(default_factory=dict)  # path in the run folder -> sha256
    verification: dict[str, Any] = field(default_factory=dict)
    serving: ServingRecord | None = None


@dataclass
class BaselineRecord:
    """The score of a model that learned nothing, on the same test split (runtime/baseline.py)."""

    rule: str = ""
    metric: str = ""
    metric_name: str = ""
    baseline: float = 0.0
    model: float = 0.0
    beats_baseline: bool = False  # better, and by more than noise explains (test, p_value)
    test: str = ""  # the one-sided paired test that decided it (runtime/baseline.py)
    p_value: float | None = None
    alpha: float = 0.05
    # regressors: std of the predictions over the training targets' std; classifiers: the
    # share of test rows not given the most common answer
    spread: float | None = None
    near_constant: bool = False  # flagged whatever the score: the model barely reads its inputs


@dataclass
class LocalSearch:
    """`search` of a single run: its Keras Tuner search state, snapshots and restores."""

    resumed: bool = False
    restored_from: str | None = None
    trials_restored: int = 0
    trials_trained_this_run: int = 0
    max_trials: int = 0
    state_file: str | None = None
    snapshots: int = 0
    upload_errors: int | None = None
    note: str | None = None


@dataclass
class SearchPartRecord:
    """`search` of a trial or final fit of a parallel search."""

    role: str = ""
    search_id: str = ""
    trial: str = ""
    values: dict[str, Any] | None = None
    objective: str | None = None
    epochs: int | None = None
    initial_epoch: int = 0  # Hyperband: continued from another attempt's weights at this epoch
    weights_from: str | None = None  # that attempt (a task id or a run folder)
    weights_kept: bool = False  # its best epoch's weights kept for a promotion


@dataclass
class AttemptRecord:
    handle: str = ""
    status: str = ""
    worker: str = ""
    message: str = ""
    epoch: int = 0  # the last epoch it reported


@dataclass
class TrialRecord:
    trial: str = ""
    state: str = ""  # running, completed, failed, or stopped (early: its best so far counts)
    objective: float | None = None
    values: dict[str, Any] = field(default_factory=dict)
    attempts: list[AttemptRecord] = field(default_factory=list)
    stop_reason: str = ""
    parent: str = ""  # Hyperband: the trial it continued
    weights_from: str = ""  # the attempt whose weights it started from
    warm_from: str = ""  # a result of an earlier search, not trained here
    duplicate_of: str = ""


@dataclass
class FinalFitRecord:
    handle: str = ""
    run_dir: str | None = None


@dataclass
class ControllerRecord:
    """`search` of a parallel search's controller: its trials, the best, the final fit."""

    role: str = "controller"
    search_id: str = ""
    parallel: int = 1
    backend: str = ""
    objective: str = ""
    direction: str = ""
    best_trial: str | None = None
    best_objective: float | None = None
    best_values: dict[str, Any] | None = None
    trials_completed: int = 0
    trials_failed: int = 0
    attempts: int = 0
    adopted_on_resume: list[str] = field(default_factory=list)
    controller_seconds: float = 0.0
    polls: int = 0
    trials: list[TrialRecord] = field(default_factory=list)
    final_fit: FinalFitRecord | None = None
    trials_stopped: int = 0  # stopped early (median rule, budget, target)
    trials_warm: int = 0  # results given by --warm-start
    ended_by: str = ""  # oracle, target, max_time or max_gpu_hours
    elapsed_s: float = 0.0  # wall time since the search first started
    gpu_hours: float = 0.0  # agent-hours of every trial attempt
    epochs_trained: int = 0
    curve_reads: int = 0  # per-epoch series read (one per finished or stopped trial)


SearchRecord = Union[LocalSearch, SearchPartRecord, ControllerRecord]  # noqa: UP007


@dataclass
class RunSummary:
    """One run's summary.json."""

    job: str = ""
    schema_version: int = SUMMARY_VERSION
    status: str = RUN_RUNNING  # running, completed or failed
    error: str | None = None  # the one line a failed run ended with
    task_id: str | None = None
    offline_session: str | None = None  # the offline session's zip, for `import-offline`
    run_dir: str | None = None
    params: dict[str, str] = field(default_factory=dict)  # as recorded (credentials masked)
    data: DataRecord | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    export: ExportRecord | None = None
    tensorboard_dir: str | None = None
    distribution: dict[str, Any] | None = None  # devices and strategy (runtime/training.py)
    model_registration: str | None = None  # the registered model's id, or pending-import
    reproducibility: Reproducibility | None = None
    # A parallel search: `reproducibility` is the final fit's (the model's environment), and
    # this the controller's own (it ran elsewhere: a CPU queue or a laptop).
    controller_reproducibility: Reproducibility | None = None
    search: SearchRecord | None = None
    baseline: BaselineRecord | None = None
    below_baseline: bool | None = None  # true when the model does not beat the baseline
    wall_time_s: float | None = None
    unknown: dict[str, Any] = field(default_factory=dict, repr=False)  # keys of newer writers

    KNOWN: ClassVar[frozenset[str]]

    @property
    def completed(self) -> bool:
        return self.status == RUN_COMPLETED

    @property
    def fingerprint(self) -> str | None:
        return self.data.fingerprint if self.data is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, keys in declaration order (unknown keys last)."""
        out = {
            f.name: _out(getattr(self, f.name)) for f in _fields(type(self)) if f.name != "unknown"
        }
        out.update(self.unknown)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n"

    @classmethod
    def from_dict(cls, data: object, source: str = SUMMARY_FILE) -> RunSummary:
        """Check version and types; raises DataError for a summary this version cannot read."""
        if not isinstance(data, dict):
            raise DataError(f"{source} is not a run summary", "it must be a JSON object")
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise DataError(f"{source} has an invalid schema_version {version!r}")
        if version > SUMMARY_VERSION:
            raise DataError(
                f"{source} was written by a newer ak-remote (summary version {version}, "
                f"this one reads up to {SUMMARY_VERSION})",
                "upgrade ak-remote (pip install -U ak-remote)",
            )
        summary = _build(cls, data, source)
        assert isinstance(summary, RunSummary)
        if summary.status not in RUN_STATUSES:
            raise DataError(f"{source} has an unknown status {summary.status!r}")
        summary.unknown = {k: v for k, v in data.items() if k not in cls.KNOWN}
        return summary


RunSummary.KNOWN = frozenset(f.name for f in dataclasses.fields(RunSummary)) - {"unknown"}


def read_summary(path: Path) -> RunSummary:
    """Read and check a run's summary.json; raises DataError when missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} does not exist", "is this a run folder?") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    return RunSummary.from_dict(data, str(path))


# -- JSON <-> dataclasses ----------------------------------------------------------------------

T = TypeVar("T")


def _fields(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(cls)


def _out(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _out(getattr(value, f.name)) for f in _fields(type(value))}
    if isinstance(value, dict):
        return {str(k): _out(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_out(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def _search_kind(data: dict[str, Any]) -> type:
    role = data.get("role")
    if role == "controller":
        return ControllerRecord
    return SearchPartRecord if role else LocalSearch


def _build(kind: Any, data: Any, path: str) -> Any:
    """`data` (parsed JSON) as `kind`; DataError naming `path` when it does not fit."""
    if kind is Any:
        return data
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        options = [o for o in typing.get_args(kind) if o is not type(None)]
        if data is None and len(options) < len(typing.get_args(kind)):
            return None
        if len(options) == 1:
            return _build(options[0], data, path)
        if isinstance(data, dict) and all(dataclasses.is_dataclass(o) for o in options):
            return _build(_search_kind(data), data, path)
        for option in options:
            try:
                return _build(option, data, path)
            except DataError:
                continue
        raise DataError(f"{path} has a value of the wrong type: {data!r:.60}")
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if not isinstance(data, dict):
            raise DataError(f"{path} must be an object")
        hints = typing.get_type_hints(kind)
        values = {
            f.name: _build(hints[f.name], data[f.name], f"{path}: {f.name}")
            for f in _fields(kind)
            if f.name in data and f.init and f.name != "unknown"
        }
        return kind(**values)
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(data, list):
            raise DataError(f"{path} must be a list")
        return [_build(item, v, f"{path}[{i}]") for i, v in enumerate(data)]
    if origin is dict:
        _, item = typing.get_args(kind)
        if not isinstance(data, dict):
            raise DataError(f"{path} must be an object")
        return {str(k): _build(item, v, f"{path}.{k}") for k, v in data.items()}
    if kind is float:
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return float(data)
    elif kind is int:
        if isinstance(data, int) and not isinstance(data, bool):
            return data
    elif kind in (str, bool) and isinstance(data, kind):
        return data
    raise DataError(f"{path} must be {getattr(kind, '__name__', kind)}, not {data!r:.60}")
