"""The search controller: asks the oracle for candidates, keeps N trials in flight, tells results.

Pure Python over two seams: an `Oracle` (the job's AutoKeras oracle, `ak_remote.search.oracle`)
and a `Backend` that runs one candidate somewhere (a ClearML task on a GPU queue, or a local
process) and reports what it sees. The controller never talks to a worker directly.

Rules:
- a candidate is handed out once: the oracle's own duplicate check, and ours on top of it;
- an attempt is over when its task ends, or when it is *lost*: running but unchanged (its
  `last_update`, which every agent status report and every reported epoch moves) for
  `lost_after_s` of the controller's own clock (no clock skew with the server);
- a failed or lost attempt is retried with the same values up to `max_retries` times; then the
  trial is failed for the oracle. An attempt that ends without an objective has failed;
- the state (oracle files + trials and the tasks that hold them) is saved after every event.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from ak_remote import contract
from ak_remote.errors import RunFailedError

# Attempt statuses and trial states: the contract's vocabulary, under the controller's names.
QUEUED = contract.ATTEMPT_QUEUED
RUNNING = contract.ATTEMPT_RUNNING
COMPLETED = contract.ATTEMPT_COMPLETED
FAILED = contract.ATTEMPT_FAILED
MISSING = contract.ATTEMPT_MISSING
TRIAL_RUNNING = contract.RUN_RUNNING
TRIAL_COMPLETED = contract.RUN_COMPLETED
TRIAL_FAILED = contract.RUN_FAILED
STATE_FORMAT = 1


@dataclass
class Ask:
    """The oracle's answer: a new trial, nothing yet (idle), or the end of the search."""

    kind: str  # "trial", "idle" or "stop"
    trial_id: str = ""
    values: dict[str, Any] = field(default_factory=dict)


class Oracle(Protocol):
    """What the controller needs from a Keras Tuner oracle."""

    objective: str
    direction: str  # "min" or "max"

    def ask(self, slot: str) -> Ask: ...

    def tell(self, trial_id: str, objective: float | None, message: str = "") -> None: ...

    def adopt(self, slot: str, trial_id: str) -> None: ...

    def save(self) -> None: ...


@dataclass
class Observation:
    """What a backend sees of one attempt."""

    status: str  # QUEUED, RUNNING, COMPLETED, FAILED or MISSING
    objective: float | None = None
    worker: str = ""
    marker: str = ""  # changes whenever the attempt shows life (the task's last_update)
    message: str = ""


class Backend(Protocol):
    """Runs candidates somewhere and reports on them."""

    def submit(self, trial_id: str, values: Mapping[str, Any], attempt: int, final: bool) -> str:
        """Start one attempt; returns its handle (a task id, a run folder)."""
        ...

    def poll(self, handles: list[str]) -> dict[str, Observation]: ...

    def stop(self, handles: list[str]) -> None: ...

    def abandon(self, handle: str, reason: str) -> None:
        """Give up on a lost attempt: make sure it can never report as running or done."""
        ...


@dataclass
class Attempt:
    handle: str
    status: str = QUEUED
    worker: str = ""
    submitted: float = 0.0  # wall clock (time.time), for tables and benchmarks
    started: float | None = None
    ended: float | None = None
    message: str = ""


@dataclass
class Trial:
    trial_id: str
    slot: str
    values: dict[str, Any]
    state: str = TRIAL_RUNNING
    objective: float | None = None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def current(self) -> Attempt:
        return self.attempts[-1]


def values_key(values: Mapping[str, Any]) -> str:
    """A stable digest of a candidate's values (the duplicate check)."""
    text = json.dumps({str(k): values[k] for k in sorted(values)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


Listener = Callable[[str, "Controller", Trial | None], None]


class Controller:
    """Keeps up to `parallel` attempts in flight until the oracle stops; then the final fit."""

    def __init__(
        self,
        oracle: Oracle,
        backend: Backend,
        parallel: int,
        max_retries: int = 2,
        lost_after_s: float = 120.0,
        poll_s: float = 1.0,
        on_event: Listener | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.oracle = oracle
        self.backend = backend
        self.parallel = parallel
        self.max_retries = max_retries
        self.lost_after_s = lost_after_s
        self.poll_s = poll_s
        self.on_event = on_event
        self.clock = clock
        self.sleep = sleep
        self.trials: dict[str, Trial] = {}
        self.final: Trial | None = None
        self.stopped = False  # the oracle said no more trials
        self.events = 0
        self.polls = 0
        # handle -> (marker, controller time it last changed): the liveness rule's memory
        self._seen: dict[str, tuple[str, float]] = {}

    # -- state ----------------------------------------------------------------------------

    def running(self) -> list[Trial]:
        return [t for t in self.trials.values() if t.state == TRIAL_RUNNING]

    def free_slots(self) -> list[str]:
        busy = {t.slot for t in self.running()}
        return [f"worker{i}" for i in range(self.parallel) if f"worker{i}" not in busy]

    def best(self) -> Trial | None:
        done = [t for t in self.trials.values() if t.state == TRIAL_COMPLETED]
        if not done:
            return None
        sign = -1.0 if self.oracle.direction == "max" else 1.0
        return min(done, key=lambda t: sign * float(t.objective or 0.0))

    def to_state(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "objective": self.oracle.objective,
            "direction": self.oracle.direction,
            "parallel": self.parallel,
            "stopped": self.stopped,
            "trials": [asdict(t) for t in self.trials.values()],
            "final": asdict(self.final) if self.final else None,
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Take over a saved state (before `adopt`)."""

        def trial(raw: Mapping[str, Any]) -> Trial:
            attempts = [Attempt(**a) for a in raw.get("attempts") or []]
            fields = {k: v for k, v in raw.items() if k != "attempts"}
            return Trial(**fields, attempts=attempts)

        self.trials = {str(t["trial_id"]): trial(t) for t in state.get("trials") or []}
        self.final = trial(state["final"]) if state.get("final") else None
        self.stopped = bool(state.get("stopped"))

    def adopt(self) -> list[str]:
        """After a restart: keep trials whose attempt still runs; the oracle gets them back.

        Returns the ids of trials adopted. Slots are renumbered when `parallel` changed.
        """
        running = self.running()
        observed = self.backend.poll([t.current.handle for t in running]) if running else {}
        adopted: list[str] = []
        slots = iter(f"worker{i}" for i in range(max(self.parallel, len(running))))
        now = self.clock()
        for trial in running:
            trial.slot = next(slots)
            self.oracle.adopt(trial.slot, trial.trial_id)
            seen = observed.get(trial.current.handle)
            if seen is not None:
                self._seen[trial.current.handle] = (seen.marker, now)
            adopted.append(trial.trial_id)
        return adopted

    def restart_in_flight(self) -> list[str]:
        """After a restart whose backend lost its running attempts (local trial processes end
        with their controller): start each of them again as the same attempt, not as a retry,
        and the final fit too if it was running. Returns the ids of trials restarted."""
        running = self.running()
        restarted: list[str] = []
        slots = iter(f"worker{i}" for i in range(max(self.parallel, len(running))))
        in_flight = list(running)
        if self.final is not None and self.final.state == TRIAL_RUNNING:
            in_flight.append(self.final)
        for trial in in_flight:
            final = trial is self.final
            if not final:
                trial.slot = next(slots)
                self.oracle.adopt(trial.slot, trial.trial_id)
            handle = self.backend.submit(
                trial.trial_id, trial.values, len(trial.attempts) - 1, final
            )
            trial.attempts[-1] = Attempt(handle=handle, submitted=time.time())
            self._seen[handle] = ("", self.clock())
            restarted.append(trial.trial_id)
        return restarted

    # -- the loop -------------------------------------------------------------------------

    def _emit(self, kind: str, trial: Trial | None) -> None:
        self.events += 1
        if self.on_event is not None:
            self.on_event(kind, self, trial)

    def step(self) -> bool:
        """One poll-and-fill round; returns True while the search has work left."""
        self._observe()
        self._fill()
        return bool(self.running()) or not self.stopped

    def run(self) -> Trial:
        """Run until the oracle stops and every trial ended; returns the best trial.

        Raises RunFailedError when no trial produced an objective.
        """
        while self.step():
            self.sleep(self.poll_s)
        best = self.best()
        if best is None:
            failed = [t for t in self.trials.values() if t.state == TRIAL_FAILED]
            reason = failed[-1].current.message if failed else "the oracle proposed no candidate"
            raise RunFailedError(
                f"no trial of the search reported an objective ({len(failed)} failed: {reason})",
                "read a trial's log: ak-remote logs TRIAL_ID (ak-remote status SEARCH lists them)",
            )
        return best

    def _fill(self) -> None:
        for slot in self.free_slots():
            if self.stopped:
                return
            answer = self.oracle.ask(slot)
            if answer.kind == "stop":
                self.stopped = True
                self._emit("stopped", None)
                return
            if answer.kind != "trial":
                return  # idle: the oracle waits for running trials (Hyperband brackets)
            values = dict(answer.values)
            key = values_key(values)
            if any(values_key(t.values) == key for t in self.trials.values()):
                # Never hand out a candidate twice; the oracle counts it as a failed trial.
                self.oracle.tell(answer.trial_id, None, "duplicate candidate, not trained")
                self.trials[answer.trial_id] = Trial(
                    answer.trial_id, slot, values, state=TRIAL_FAILED
                )
                self._emit("duplicate", self.trials[answer.trial_id])
                continue
            trial = Trial(answer.trial_id, slot, values)
            self.trials[trial.trial_id] = trial
            self._submit(trial, final=False)
            self._emit("submitted", trial)

    def _submit(self, trial: Trial, final: bool) -> None:
        attempt = len(trial.attempts)
        handle = self.backend.submit(trial.trial_id, trial.values, attempt, final)
        trial.attempts.append(Attempt(handle=handle, submitted=time.time()))
        self._seen[handle] = ("", self.clock())

    def _observe(self) -> None:
        active = [t for t in self.running()]
        if self.final is not None and self.final.state == TRIAL_RUNNING:
            active.append(self.final)
        if not active:
            return
        self.polls += 1
        observed = self.backend.poll([t.current.handle for t in active])
        now = self.clock()
        for trial in active:
            attempt = trial.current
            seen = observed.get(attempt.handle, Observation(MISSING, message="task not found"))
            marker, since = self._seen.get(attempt.handle, ("", now))
            if seen.marker != marker:
                self._seen[attempt.handle] = (seen.marker, now)
                since = now
            if seen.worker:
                attempt.worker = seen.worker
            if seen.status == RUNNING and attempt.status != RUNNING:
                attempt.status, attempt.started = RUNNING, time.time()
                self._emit("started", trial)
            if seen.status == COMPLETED:
                if trial is self.final:  # a final fit exports; its score is the trial's
                    self._attempt_done(trial, float(trial.objective or 0.0))
                elif seen.objective is None or not math.isfinite(seen.objective):
                    self._attempt_failed(trial, "completed without reporting an objective")
                else:
                    self._attempt_done(trial, float(seen.objective))
            elif seen.status in (FAILED, MISSING):
                self._attempt_failed(trial, seen.message or seen.status)
            elif seen.status == RUNNING and now - since > self.lost_after_s:
                reason = f"lost: no sign of life for {now - since:.0f} s (agent gone?)"
                self.backend.abandon(attempt.handle, reason)
                self._attempt_failed(trial, reason)

    def _attempt_done(self, trial: Trial, objective: float) -> None:
        attempt = trial.current
        attempt.status, attempt.ended = COMPLETED, time.time()
        trial.state, trial.objective = TRIAL_COMPLETED, objective
        if trial is not self.final:
            self.oracle.tell(trial.trial_id, objective)
        self._emit("completed", trial)

    def _attempt_failed(self, trial: Trial, message: str) -> None:
        attempt = trial.current
        attempt.status, attempt.ended, attempt.message = FAILED, time.time(), message
        if len(trial.attempts) <= self.max_retries:
            self._submit(trial, final=trial is self.final)
            self._emit("retried", trial)
            return
        trial.state = TRIAL_FAILED
        if trial is not self.final:
            self.oracle.tell(trial.trial_id, None, message)
        self._emit("failed", trial)

    # -- the final fit --------------------------------------------------------------------

    def run_final(self, best: Trial) -> Trial:
        """Train the best candidate once more, to export; returns the final-fit record.

        Raises RunFailedError when it fails after its retries.
        """
        if self.final is None or self.final.values != best.values:
            self.final = Trial("final", "final", dict(best.values), objective=best.objective)
            self._submit(self.final, final=True)
            self._emit("final-submitted", self.final)
        while self.final.state == TRIAL_RUNNING:
            self._observe()
            if self.final.state == TRIAL_RUNNING:
                self.sleep(self.poll_s)
        if self.final.state != TRIAL_COMPLETED:
            raise RunFailedError(
                f"the final fit of the best candidate (trial {best.trial_id}) failed: "
                f"{self.final.current.message}",
                f"read its log: ak-remote logs {self.final.current.handle}",
            )
        return self.final
