"""The search controller: asks the oracle for candidates, keeps N trials in flight, tells results.

Pure Python over two seams: an `Oracle` (the job's AutoKeras oracle, `ak_remote.search.oracle`)
and a `Backend` that runs one candidate somewhere (a ClearML task on a GPU queue, or a local
process) and reports what it sees. The controller never talks to a worker directly.

Rules:
- a candidate is handed out once: the oracle's own duplicate check, and ours on top of it (a
  candidate proposed again gets the result it already has, untrained);
- an attempt is over when its task ends, or when it is *lost*: running but unchanged (its
  `last_update`, which every agent status report and every reported epoch moves) for
  `lost_after_s` of the controller's own clock (no clock skew with the server);
- a failed or lost attempt is retried with the same values (and the same weights to start
  from) up to `max_retries` times; then the trial is failed for the oracle. An attempt that ends
  without an objective has failed;
- Hyperband: a promoted candidate (`tuner/trial_id` names its parent) continues from the weights
  of its parent's successful attempt, wherever that ran (`weights_from`); without them (the
  parent was stopped early, or hand-over is off) it trains from scratch;
- the median rule: a running trial that trained at least `grace_epochs` epochs, whose best
  objective so far is worse than the median of the finished trials' best up to the same epoch
  (at least `min_trials` of them reached it), is stopped; its best so far is its result;
- budgets: when the wall time or the agent-hours run out, or a result reaches the target, the
  trials in flight are stopped (their best so far counts) and no new one starts;
- the state (oracle files + trials and the tasks that hold them) is saved after every event.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
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
STOPPED = contract.ATTEMPT_STOPPED
TRIAL_RUNNING = contract.RUN_RUNNING
TRIAL_COMPLETED = contract.RUN_COMPLETED
TRIAL_FAILED = contract.RUN_FAILED
TRIAL_STOPPED = contract.TRIAL_STOPPED
STATE_FORMAT = 1  # new fields have defaults: a state saved before them still loads
# Why a search stopped asking for candidates (`Controller.ended_by`).
ENDED_ORACLE = "oracle"  # the oracle had no more (max_trials, Hyperband's brackets)
ENDED_TARGET = "target"
ENDED_TIME = "max_time"
ENDED_GPU_HOURS = "max_gpu_hours"
PARENT_KEY = "tuner/trial_id"  # Hyperband: the trial a promoted candidate continues
INITIAL_EPOCH_KEY = "tuner/initial_epoch"


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

    def add_result(self, values: Mapping[str, Any], objective: float) -> str:
        """A finished result from elsewhere (a warm start); returns its new trial id."""
        ...

    def grow(self, max_trials: int) -> bool:
        """Allow `max_trials` trials in all; True when the oracle can propose again."""
        ...


@dataclass
class Observation:
    """What a backend sees of one attempt."""

    status: str  # QUEUED, RUNNING, COMPLETED, FAILED or MISSING
    objective: float | None = None
    worker: str = ""
    marker: str = ""  # changes whenever the attempt shows life (the task's last_update)
    message: str = ""
    # Progress: the last epoch it reported (counted from the model's start: a continued
    # Hyperband trial goes on from its parent's epochs) and its best objective over its epochs.
    epoch: int = 0
    best: float | None = None


class Backend(Protocol):
    """Runs candidates somewhere and reports on them."""

    def submit(
        self,
        trial_id: str,
        values: Mapping[str, Any],
        attempt: int,
        final: bool,
        weights_from: str = "",
    ) -> str:
        """Start one attempt (from the weights attempt `weights_from` left, when given);
        returns its handle (a task id, a run folder)."""
        ...

    def poll(self, handles: list[str]) -> dict[str, Observation]: ...

    def stop(self, handles: list[str], reason: str = "") -> None:
        """Stop attempts; `reason` given: the controller stopped them early (not a failure)."""
        ...

    def abandon(self, handle: str, reason: str) -> None:
        """Give up on a lost attempt: make sure it can never report as running or done."""
        ...

    def curve(self, handle: str) -> list[tuple[int, float]]:
        """The (epoch, objective) pairs an attempt reported, in epoch order."""
        ...


@dataclass
class Attempt:
    handle: str
    status: str = QUEUED
    worker: str = ""
    submitted: float = 0.0  # wall clock (the controller's `wall`), for budgets and tables
    started: float | None = None
    ended: float | None = None
    message: str = ""
    epoch: int = 0  # progress as last observed (see Observation)
    best: float | None = None


@dataclass
class Trial:
    trial_id: str
    slot: str
    values: dict[str, Any]
    state: str = TRIAL_RUNNING
    objective: float | None = None
    attempts: list[Attempt] = field(default_factory=list)
    parent: str = ""  # Hyperband: the trial this one continues
    weights_from: str = ""  # the attempt (handle) whose weights it starts from
    curve: list[list[float]] = field(default_factory=list)  # [epoch, objective] of its result
    stop_reason: str = ""  # why the controller stopped it (state TRIAL_STOPPED)
    warm_from: str = ""  # a result given by an earlier search (never trained here)
    duplicate_of: str = ""  # proposed again: the trial whose result it got, untrained

    @property
    def current(self) -> Attempt:
        return self.attempts[-1]

    @property
    def trained(self) -> bool:
        return bool(self.attempts)


@dataclass(frozen=True)
class MedianRule:
    """Stop a trial worse than the median of finished trials at the same epoch."""

    grace_epochs: int = 2  # epochs a trial trains (this attempt) before the rule looks at it
    min_trials: int = 5  # finished trials that reached the epoch, before any verdict


@dataclass(frozen=True)
class Budget:
    """Limits of the trial phase (None: none). The final fit runs after them."""

    max_time_s: float | None = None  # wall time since the search first started
    max_gpu_hours: float | None = None  # agent-hours of trial attempts (one GPU per agent)
    target: float | None = None  # an objective this good ends the search


def values_key(values: Mapping[str, Any]) -> str:
    """A stable digest of a candidate's values (the duplicate check)."""
    text = json.dumps({str(k): values[k] for k in sorted(values)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def best_up_to(curve: Sequence[Sequence[float]], epoch: int, sign: float) -> float | None:
    """The best objective among the curve's points up to `epoch` (sign -1: larger is better)."""
    points = [float(v) for e, v in curve if e <= epoch and math.isfinite(float(v))]
    return min(points, key=lambda v: sign * v) if points else None


Listener = Callable[[str, "Controller", Trial | None], None]
Refresh = Callable[["Controller"], None]


class Aborted(Exception):
    """The search was asked to stop (`ak-remote abort SEARCH`): the controller creates nothing
    more; whoever runs it stops the attempts in flight."""


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
        median: MedianRule | None = None,
        budget: Budget | None = None,
        handover: bool = True,
        wall: Callable[[], float] = time.time,
        refresh: Refresh | None = None,
        epochs: int | None = None,
        stop_requested: Callable[[], bool] | None = None,
    ) -> None:
        self.oracle = oracle
        self.backend = backend
        # Asked after each poll, before anything new is created: True ends the search (Aborted).
        self.stop_requested = stop_requested
        self.parallel = parallel
        self.max_retries = max_retries
        self.lost_after_s = lost_after_s
        self.poll_s = poll_s
        self.on_event = on_event
        self.clock = clock
        self.sleep = sleep
        self.median = median
        self.budget = budget or Budget()
        self.handover = handover
        self.wall = wall
        self.refresh = refresh  # called every round: growth requests (more trials, agents)
        self.epochs = epochs  # a trial's epochs (Hyperband's say their own): none left, no stop
        self.trials: dict[str, Trial] = {}
        self.final: Trial | None = None
        self.stopped = False  # no more trials: see ended_by
        self.ended_by = ""
        self.started_at: float | None = None  # wall time the search first started
        self.events = 0
        self.polls = 0
        self.curve_reads = 0
        # handle -> (marker, controller time it last changed): the liveness rule's memory
        self._seen: dict[str, tuple[str, float]] = {}
        # The median rule's memory: epoch -> sorted "lower is better" bests of the finished
        # trials that reached it (built once, then one insert per finished trial and epoch),
        # so a round costs one look-up per running trial whatever the number of results.
        self._by_epoch: dict[int, list[float]] | None = None
        self._in_table: set[str] = set()
        self._keys: dict[str, str] | None = None  # values_key -> trial id (duplicate check)

    @property
    def sign(self) -> float:
        """-1 when larger objectives are better: `sign * value` is always "lower is better"."""
        return -1.0 if self.oracle.direction == "max" else 1.0

    # -- state ----------------------------------------------------------------------------

    def running(self) -> list[Trial]:
        return [t for t in self.trials.values() if t.state == TRIAL_RUNNING]

    def free_slots(self) -> list[str]:
        busy = {t.slot for t in self.running()}
        return [f"worker{i}" for i in range(self.parallel) if f"worker{i}" not in busy]

    def best(self) -> Trial | None:
        """The best result so far: completed, stopped early or warm, never a duplicate."""
        done = [
            t
            for t in self.trials.values()
            if t.state in (TRIAL_COMPLETED, TRIAL_STOPPED)
            and t.objective is not None
            and not t.duplicate_of
        ]
        if not done:
            return None
        return min(done, key=lambda t: self.sign * float(t.objective or 0.0))

    def elapsed_s(self) -> float:
        return self.wall() - self.started_at if self.started_at is not None else 0.0

    def gpu_hours(self) -> float:
        """Agent-hours of every trial attempt so far (running ones up to now)."""
        now = self.wall()
        seconds = sum(
            (a.ended if a.ended is not None else now) - a.started
            for t in self.trials.values()
            for a in t.attempts
            if a.started is not None
        )
        return max(0.0, seconds) / 3600.0

    def epochs_trained(self) -> int:
        """Epochs trained by every trial attempt, as far as their progress was seen."""
        total = 0
        for trial in self.trials.values():
            start = int(trial.values.get(INITIAL_EPOCH_KEY) or 0) if trial.weights_from else 0
            total += sum(max(0, a.epoch - start) for a in trial.attempts)
        return total

    def to_state(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "objective": self.oracle.objective,
            "direction": self.oracle.direction,
            "parallel": self.parallel,
            "stopped": self.stopped,
            "ended_by": self.ended_by,
            "started_at": self.started_at,
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
        self.ended_by = str(state.get("ended_by") or (ENDED_ORACLE if self.stopped else ""))
        started = state.get("started_at")
        self.started_at = float(started) if started is not None else None
        self._by_epoch, self._in_table, self._keys = None, set(), None

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
                trial.trial_id,
                trial.values,
                len(trial.attempts) - 1,
                final,
                weights_from=trial.weights_from,
            )
            trial.attempts[-1] = Attempt(handle=handle, submitted=self.wall())
            self._seen[handle] = ("", self.clock())
            restarted.append(trial.trial_id)
        return restarted

    def warm_start(self, source: str, results: Sequence[tuple[Mapping[str, Any], float]]) -> int:
        """Give the oracle an earlier search's results (checked by the caller: same data, space
        and objective); they are never trained here. Returns how many were given."""
        given = 0
        known = {values_key(t.values) for t in self.trials.values()}
        for values, objective in results:
            if values_key(values) in known or not math.isfinite(objective):
                continue
            trial_id = self.oracle.add_result(values, objective)
            self.trials[trial_id] = Trial(
                trial_id,
                "",
                dict(values),
                state=TRIAL_COMPLETED,
                objective=float(objective),
                warm_from=source,
            )
            known.add(values_key(values))
            self._known_keys()[values_key(values)] = trial_id
            given += 1
        self._emit("warm-started", None)
        return given

    def grow(self, max_trials: int | None = None, parallel: int | None = None) -> bool:
        """More trials in all, or more (or fewer) in flight; True when something changed."""
        changed = False
        if parallel is not None and parallel != self.parallel:
            self.parallel, changed = parallel, True
        if max_trials is not None and self.oracle.grow(max_trials):
            changed = True
            if self.stopped and self.ended_by == ENDED_ORACLE:
                self.stopped, self.ended_by = False, ""
        if changed:
            self._emit("grown", None)
        return changed

    # -- the loop -------------------------------------------------------------------------

    def _emit(self, kind: str, trial: Trial | None) -> None:
        self.events += 1
        if self.on_event is not None:
            self.on_event(kind, self, trial)

    def step(self) -> bool:
        """One poll-and-fill round; returns True while the search has work left."""
        if self.started_at is None:
            self.started_at = self.wall()
        if self.refresh is not None:
            self.refresh(self)
        self._observe()
        self._check_stop()
        self._apply_median_rule()
        self._apply_budget()
        self._fill()
        return bool(self.running()) or not self.stopped

    def _check_stop(self) -> None:
        if self.stop_requested is not None and self.stop_requested():
            raise Aborted("the search was asked to stop")

    def run(self) -> Trial:
        """Run until the oracle stops (or a budget ends) and every trial ended; returns the best.

        Raises RunFailedError when no trial produced an objective.
        """
        while self.step():
            self.sleep(self.poll_s)
        best = self.best()
        if best is None:
            failed = [t for t in self.trials.values() if t.state == TRIAL_FAILED and t.attempts]
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
                self.stopped, self.ended_by = True, ENDED_ORACLE
                self._emit("stopped", None)
                return
            if answer.kind != "trial":
                return  # idle: the oracle waits for running trials (Hyperband brackets)
            values = dict(answer.values)
            key = values_key(values)
            twin_id = self._known_keys().get(key)
            if twin_id is not None:
                self._duplicate(answer.trial_id, slot, values, self.trials[twin_id])
                continue
            trial = Trial(answer.trial_id, slot, values)
            self._known_keys()[key] = trial.trial_id
            parent = self.trials.get(str(values.get(PARENT_KEY, "")))
            if parent is not None:
                trial.parent = parent.trial_id
                trial.weights_from = self._weights_of(parent)
            self.trials[trial.trial_id] = trial
            self._submit(trial, final=False)
            self._emit("submitted", trial)

    def _known_keys(self) -> dict[str, str]:
        if self._keys is None:
            self._keys = {}
            for trial in self.trials.values():
                self._keys.setdefault(values_key(trial.values), trial.trial_id)
        return self._keys

    def _weights_of(self, parent: Trial) -> str:
        """The attempt whose weights a promoted trial starts from; "" when there are none."""
        if not self.handover or parent.state != TRIAL_COMPLETED:
            return ""  # stopped early (no weights kept) or failed: it trains from scratch
        done = [a for a in parent.attempts if a.status == COMPLETED]
        return done[-1].handle if done else ""

    def _duplicate(self, trial_id: str, slot: str, values: dict[str, Any], twin: Trial) -> None:
        """A candidate proposed again is not trained: it gets its twin's result when there is
        one (so a Bayesian oracle learns that the point is known and moves on), else fails."""
        if twin.objective is not None and twin.state in (TRIAL_COMPLETED, TRIAL_STOPPED):
            self.oracle.tell(trial_id, twin.objective)
            state, objective = TRIAL_COMPLETED, twin.objective
        else:
            self.oracle.tell(trial_id, None, "duplicate candidate, not trained")
            state, objective = TRIAL_FAILED, None
        self.trials[trial_id] = Trial(
            trial_id,
            slot,
            values,
            state=state,
            objective=objective,
            duplicate_of=twin.duplicate_of or twin.trial_id,
        )
        self._emit("duplicate", self.trials[trial_id])

    def _submit(self, trial: Trial, final: bool) -> None:
        attempt = len(trial.attempts)
        handle = self.backend.submit(
            trial.trial_id, trial.values, attempt, final, weights_from=trial.weights_from
        )
        trial.attempts.append(Attempt(handle=handle, submitted=self.wall()))
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
            if seen.epoch > attempt.epoch:
                attempt.epoch, attempt.best = seen.epoch, seen.best
            if seen.status in (RUNNING, COMPLETED) and attempt.started is None:
                attempt.started = self.wall()
            if seen.status == RUNNING and attempt.status != RUNNING:
                attempt.status = RUNNING
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

    def _curve(self, handle: str) -> list[list[float]]:
        self.curve_reads += 1
        return [[float(e), float(v)] for e, v in self.backend.curve(handle)]

    def _attempt_done(self, trial: Trial, objective: float) -> None:
        attempt = trial.current
        attempt.status, attempt.ended = COMPLETED, self.wall()
        trial.state, trial.objective = TRIAL_COMPLETED, objective
        if trial is not self.final:
            trial.curve = self._curve(attempt.handle)
            if trial.curve:
                attempt.epoch = max(attempt.epoch, int(trial.curve[-1][0]))
            self.oracle.tell(trial.trial_id, objective)
        self._emit("completed", trial)

    def _attempt_failed(self, trial: Trial, message: str) -> None:
        attempt = trial.current
        attempt.status, attempt.ended, attempt.message = FAILED, self.wall(), message
        self._seen.pop(attempt.handle, None)
        if len(trial.attempts) <= self.max_retries:
            self._submit(trial, final=trial is self.final)
            self._emit("retried", trial)
            return
        trial.state = TRIAL_FAILED
        if trial is not self.final:
            self.oracle.tell(trial.trial_id, None, message)
        self._emit("failed", trial)

    def stop_trial(self, trial: Trial, reason: str) -> None:
        """Stop a running trial now; its best objective so far is its result (none: failed
        for the oracle). Its slot is free at once: the next candidate does not wait for the
        stopped task to end on its agent."""
        attempt = trial.current
        self.backend.stop([attempt.handle], reason)
        self._seen.pop(attempt.handle, None)
        attempt.status, attempt.ended, attempt.message = STOPPED, self.wall(), reason
        trial.state, trial.stop_reason = TRIAL_STOPPED, reason
        trial.objective = attempt.best
        trial.curve = self._curve(attempt.handle) if attempt.epoch else []
        if trial.curve:
            best = best_up_to(trial.curve, int(trial.curve[-1][0]), self.sign)
            if best is not None:  # the series may hold an epoch the last poll had not seen
                trial.objective = best if trial.objective is None else trial.objective
        self.oracle.tell(trial.trial_id, trial.objective, reason)
        self._emit("stopped-early", trial)

    def _median_table(self) -> dict[int, list[float]]:
        """Per epoch, the sorted bests-so-far (times `sign`) of the finished trials that
        reached it; brought up to date with the trials finished since the last call."""
        if self._by_epoch is None:
            self._by_epoch, self._in_table = {}, set()
        for trial in self.trials.values():
            if trial.trial_id in self._in_table:
                continue
            if trial.state not in (TRIAL_COMPLETED, TRIAL_STOPPED) or trial.duplicate_of:
                continue
            self._in_table.add(trial.trial_id)
            best: float | None = None
            for epoch, value in sorted((int(e), float(v)) for e, v in trial.curve):
                if math.isfinite(value) and (best is None or self.sign * value < best):
                    best = self.sign * value
                if best is not None:
                    bisect.insort(self._by_epoch.setdefault(epoch, []), best)
        return self._by_epoch

    def _apply_median_rule(self) -> None:
        rule = self.median
        if rule is None:
            return
        table = self._median_table()
        if len(self._in_table) < rule.min_trials:
            return
        for trial in self.running():
            attempt = trial.current
            if attempt.best is None or attempt.status != RUNNING:
                continue
            start = int(trial.values.get(INITIAL_EPOCH_KEY) or 0) if trial.weights_from else 0
            if attempt.epoch - start < rule.grace_epochs:
                continue
            epoch = attempt.epoch
            planned = trial.values.get("tuner/epochs") or self.epochs
            if planned is not None and epoch >= int(planned):
                continue  # its last epoch is done: stopping it now saves nothing
            peers = table.get(epoch) or []
            if len(peers) < rule.min_trials:
                continue
            half = len(peers) // 2
            median = peers[half] if len(peers) % 2 else (peers[half - 1] + peers[half]) / 2
            if self.sign * attempt.best > median:
                self.stop_trial(
                    trial,
                    f"stopped early by the median rule: best {self.oracle.objective} "
                    f"{attempt.best:.4g} after epoch {epoch} is worse than the median "
                    f"{self.sign * median:.4g} of {len(peers)} finished trials there",
                )

    def _reached(self, value: float | None) -> bool:
        target = self.budget.target
        return target is not None and value is not None and self.sign * value <= self.sign * target

    def _apply_budget(self) -> None:
        if self.ended_by in (ENDED_TARGET, ENDED_TIME, ENDED_GPU_HOURS):
            return
        budget = self.budget
        reason = ""
        for trial in self.running():  # a running trial already as good as asked: enough
            if self._reached(trial.current.best):
                self.stop_trial(trial, "stopped: it reached the target objective")
        best = self.best()
        if best is not None and self._reached(best.objective):
            reason = ENDED_TARGET
        elif budget.max_time_s is not None and self.elapsed_s() >= budget.max_time_s:
            reason = ENDED_TIME
        elif budget.max_gpu_hours is not None and self.gpu_hours() >= budget.max_gpu_hours:
            reason = ENDED_GPU_HOURS
        if not reason:
            return
        self.stopped, self.ended_by = True, reason
        why = {
            ENDED_TARGET: "the target objective was reached",
            ENDED_TIME: "the wall-time budget ran out",
            ENDED_GPU_HOURS: "the GPU-hour budget ran out",
        }[reason]
        for trial in self.running():
            self.stop_trial(trial, f"stopped: {why}")
        self._emit("ended", None)

    # -- the final fit --------------------------------------------------------------------

    def run_final(self, best: Trial) -> Trial:
        """Train the best candidate once more, to export; returns the final-fit record.

        Raises RunFailedError when it fails after its retries.
        """
        if self.final is None or self.final.values != best.values:
            self._check_stop()
            self.final = Trial("final", "final", dict(best.values), objective=best.objective)
            self._submit(self.final, final=True)
            self._emit("final-submitted", self.final)
        while self.final.state == TRIAL_RUNNING:
            self._observe()
            self._check_stop()
            if self.final.state == TRIAL_RUNNING:
                self.sleep(self.poll_s)
        if self.final.state != TRIAL_COMPLETED:
            raise RunFailedError(
                f"the final fit of the best candidate (trial {best.trial_id}) failed: "
                f"{self.final.current.message}",
                f"read its log: ak-remote logs {self.final.current.handle}",
            )
        return self.final
