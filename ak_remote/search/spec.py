"""What a job process is told about its part in a parallel search (the `Search/spec` JSON).

A search is a controller plus trial and final-fit processes; each is the job's own script with
one extra piece of JSON: locally passed as `--search-spec FILE`, on an agent stored in the
task's `Search/spec` hyperparameter (a clone of the job template carries it).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ak_remote.contract import SEARCH_SECTION, SEARCH_SPEC_KEY
from ak_remote.errors import UsageError

CONTROLLER = "controller"
TRIAL = "trial"
FINAL = "final"
ROLES = (CONTROLLER, TRIAL, FINAL)
CLEARML_BACKEND = "clearml"
LOCAL_BACKEND = "local"
DEFAULT_MAX_RETRIES = 2
# A running trial whose task has not changed for this long is lost (its agent died). An agent
# reports every few seconds and the job reports every epoch, so minutes of silence mean death.
DEFAULT_LOST_AFTER_S = 120.0
DEFAULT_POLL_S = 1.0
MAX_PARALLEL = 512
# The median rule (ak_remote.search.controller.MedianRule): on unless `--early-stop off`. It
# judges a trial only after it trained DEFAULT_STOP_GRACE epochs and once DEFAULT_STOP_MIN_TRIALS
# finished trials reached the same epoch, so small searches (up to 5 trials) never see it.
EARLY_STOP_MEDIAN = "median"
EARLY_STOP_OFF = "off"
EARLY_STOP_RULES = (EARLY_STOP_MEDIAN, EARLY_STOP_OFF)
DEFAULT_EARLY_STOP = EARLY_STOP_MEDIAN
DEFAULT_STOP_GRACE = 2
DEFAULT_STOP_MIN_TRIALS = 5


@dataclass
class SearchSpec:
    """One process's part in a search. Controller fields are unused by trials and vice versa."""

    role: str
    search_id: str = ""
    # trial / final
    trial: str = ""
    candidate: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    attempt: int = 0
    weights_from: str = ""  # Hyperband: the attempt (task id, run folder) to continue from
    # controller
    parallel: int = 1
    backend: str = CLEARML_BACKEND
    queue_id: str = ""
    queue_name: str = ""
    template_id: str = ""
    project_id: str = ""
    max_retries: int = DEFAULT_MAX_RETRIES
    lost_after_s: float = DEFAULT_LOST_AFTER_S
    poll_s: float = DEFAULT_POLL_S
    container: dict[str, Any] | None = None
    early_stop: str = DEFAULT_EARLY_STOP
    stop_grace: int = DEFAULT_STOP_GRACE  # epochs
    stop_min_trials: int = DEFAULT_STOP_MIN_TRIALS
    max_time_s: float | None = None
    max_gpu_hours: float | None = None
    target: float | None = None
    warm_start: str = ""  # an earlier search (task id, or a local search's run folder)
    handover: bool = True  # Hyperband's weight hand-over (off: what benchmarks compare)

    def part(
        self,
        trial: str,
        candidate: dict[str, Any],
        fingerprint: str,
        attempt: int,
        final: bool,
        weights_from: str = "",
    ) -> SearchSpec:
        """The spec of one trial (or the final fit) of this search."""
        return SearchSpec(
            role=FINAL if final else TRIAL,
            search_id=self.search_id,
            trial=trial,
            candidate=dict(candidate),
            fingerprint=fingerprint,
            attempt=attempt,
            weights_from=weights_from,
        )

    def hyperparam_section(self) -> dict[str, dict[str, str]]:
        """The task hyperparameter section (`Search`) that carries this spec."""
        return {
            SEARCH_SPEC_KEY: {
                "section": SEARCH_SECTION,
                "name": SEARCH_SPEC_KEY,
                "value": self.to_json(),
                "type": "str",
                "description": "this task's part in a parallel search (written by ak-remote)",
            }
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SearchSpec:
        """Parse and check; raises UsageError for anything malformed."""
        try:
            raw = json.loads(text)
        except ValueError:
            raise UsageError("the search spec is not JSON", "it is written by ak-remote") from None
        if not isinstance(raw, dict):
            raise UsageError("the search spec is not a JSON object", "it is written by ak-remote")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise UsageError(
                f"the search spec has unknown fields {', '.join(unknown)}",
                "the worker runs an older ak-remote than the controller; update the image",
            )
        try:
            spec = cls(**raw)
        except TypeError as exc:
            raise UsageError(f"bad search spec: {exc}") from None
        spec.check()
        return spec

    @classmethod
    def from_file(cls, path: str | Path) -> SearchSpec:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read the search spec {path}: {exc}") from None
        return cls.from_json(text)

    def check(self) -> None:
        """Raises UsageError for values no search can have."""
        if self.role not in ROLES:
            raise UsageError(f"unknown search role {self.role!r}", f"one of {', '.join(ROLES)}")
        if self.role in (TRIAL, FINAL) and not isinstance(self.candidate, dict):
            raise UsageError("a trial needs its candidate's values")
        check_parallel(self.parallel)
        if self.backend not in (CLEARML_BACKEND, LOCAL_BACKEND):
            raise UsageError(f"unknown search backend {self.backend!r}")
        if not 0 <= self.max_retries <= 100:
            raise UsageError(f"max_retries {self.max_retries} out of range", "give 0 to 100")
        for name in ("lost_after_s", "poll_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise UsageError(f"{name} must be a positive number, not {value!r}")
        check_early_stop(self.early_stop, self.stop_grace, self.stop_min_trials)
        check_budget(self.max_time_s, self.max_gpu_hours, self.target)


def check_early_stop(rule: str, grace: int, min_trials: int) -> None:
    """Raises UsageError for an unknown rule, a negative grace or fewer than 1 trial."""
    if rule not in EARLY_STOP_RULES:
        raise UsageError(
            f"--early-stop {rule!r} is not a rule", f"give one of {', '.join(EARLY_STOP_RULES)}"
        )
    if isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= 100000:
        raise UsageError(f"--stop-grace {grace!r} is not a number of epochs", "give 0 or more")
    if isinstance(min_trials, bool) or not isinstance(min_trials, int) or min_trials < 1:
        raise UsageError(f"--stop-min-trials {min_trials!r} must be 1 or more")


def check_budget(
    max_time_s: float | None, max_gpu_hours: float | None, target: float | None
) -> None:
    """Raises UsageError for a budget that is not a positive finite number, or a NaN target."""
    for flag, value in (("--max-time", max_time_s), ("--max-gpu-hours", max_gpu_hours)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{flag} {value!r} is not a number")
        if not math.isfinite(value) or value <= 0:
            raise UsageError(f"{flag} {value!r} must be a positive number")
    if target is not None and (
        isinstance(target, bool)
        or not isinstance(target, (int, float))
        or not math.isfinite(target)
    ):
        raise UsageError(f"--target {target!r} is not a number")


def parse_duration(text: str) -> float:
    """Seconds from `90`, `90s`, `45m`, `2h` or `1.5d`; raises UsageError otherwise."""
    raw = text.strip().lower()
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    scale = units.get(raw[-1:], 0.0)
    number = raw[:-1] if scale else raw
    try:
        value = float(number) * (scale or 1.0)
    except ValueError:
        raise UsageError(
            f"--max-time {text!r} is not a duration", "give seconds, or 45m, 2h, 1.5d"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"--max-time {text!r} must be a positive duration")
    return value


def check_parallel(parallel: int, max_trials: int | None = None) -> int:
    """Raises UsageError unless 1 <= parallel <= min(max_trials, MAX_PARALLEL)."""
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise UsageError(f"--parallel {parallel} is not a positive number", "give 1 or more")
    if parallel > MAX_PARALLEL:
        raise UsageError(f"--parallel {parallel} is too large", f"give at most {MAX_PARALLEL}")
    if max_trials is not None and parallel > max_trials:
        raise UsageError(
            f"--parallel {parallel} is more than max_trials={max_trials}: "
            f"{parallel - max_trials} worker(s) would never get a trial",
            f"give --parallel {max_trials} or less, or raise max_trials",
        )
    return parallel


@dataclass(frozen=True)
class SearchRules:
    """The flags shared by `launch --parallel` and `run --parallel` that say how a search spends
    its trials: early stopping, budgets, the target, a warm start (None: not given)."""

    early_stop: str | None = None
    stop_grace: int | None = None
    stop_min_trials: int | None = None
    max_time: str | None = None  # as typed: 90m, 2h, seconds
    max_gpu_hours: float | None = None
    target: float | None = None
    warm_start: str | None = None

    FLAGS = (
        "--early-stop",
        "--stop-grace",
        "--stop-min-trials",
        "--max-time",
        "--max-gpu-hours",
        "--target",
        "--warm-start",
    )

    def given(self) -> list[str]:
        """The flags given, by name."""
        values = (
            self.early_stop,
            self.stop_grace,
            self.stop_min_trials,
            self.max_time,
            self.max_gpu_hours,
            self.target,
            self.warm_start,
        )
        return [flag for flag, value in zip(self.FLAGS, values, strict=True) if value is not None]

    def apply(self, spec: SearchSpec) -> SearchSpec:
        """`spec` with these rules; raises UsageError for a bad value (nothing is created)."""
        if self.early_stop is not None:
            spec.early_stop = self.early_stop
        if self.stop_grace is not None:
            spec.stop_grace = self.stop_grace
        if self.stop_min_trials is not None:
            spec.stop_min_trials = self.stop_min_trials
        if self.max_time is not None:
            spec.max_time_s = parse_duration(self.max_time)
        if self.max_gpu_hours is not None:
            spec.max_gpu_hours = self.max_gpu_hours
        if self.target is not None:
            spec.target = self.target
        if self.warm_start is not None:
            spec.warm_start = self.warm_start.strip()
        if spec.early_stop == EARLY_STOP_OFF and (
            self.stop_grace is not None or self.stop_min_trials is not None
        ):
            raise UsageError("--stop-grace and --stop-min-trials tune --early-stop median")
        spec.check()
        return spec

    def describe(self, spec: SearchSpec) -> dict[str, Any]:
        """What a dry run shows of these rules, as the spec holds them."""
        return {
            "early_stop": spec.early_stop,
            "stop_grace_epochs": spec.stop_grace,
            "stop_min_trials": spec.stop_min_trials,
            "max_time_s": spec.max_time_s,
            "max_gpu_hours": spec.max_gpu_hours,
            "target": spec.target,
            "warm_start": spec.warm_start or None,
        }
