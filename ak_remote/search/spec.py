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

    def part(
        self, trial: str, candidate: dict[str, Any], fingerprint: str, attempt: int, final: bool
    ) -> SearchSpec:
        """The spec of one trial (or the final fit) of this search."""
        return SearchSpec(
            role=FINAL if final else TRIAL,
            search_id=self.search_id,
            trial=trial,
            candidate=dict(candidate),
            fingerprint=fingerprint,
            attempt=attempt,
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
