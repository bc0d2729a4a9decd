"""Unit tier: the search controller's rules over the job's real Keras Tuner oracles, epoch by epoch.

The oracle is the one a search builds (AutoKeras' search space for wine, from the data's shapes);
`EpochBackend` trains nothing: each attempt moves one epoch per controller round along a learning
curve computed from the candidate's values, so Hyperband's promotions and weight hand-over, the
median rule, budgets, the target, warm starts and growth are checked in seconds, each with lost
trials and retries. Real training and real agents: tests/integration/test_search_agents.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from ak_remote.search import controller as ctl
from ak_remote.search.controller import Budget, Controller, MedianRule, Observation, values_key
from ak_remote.search.oracle import KerasTunerOracle
from ak_remote.search.runner import StateStore
from tests.search_doubles import make_oracle


def model_values(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if not k.startswith("tuner/")}


def quality(values: Mapping[str, Any]) -> float:
    """How good a candidate is (0.3 to 1.0), from its model values only."""
    return 0.3 + 0.7 * (int(values_key(model_values(values))[:6], 16) % 1000) / 1000.0


def accuracy(values: Mapping[str, Any], epoch: int) -> float:
    """A learning curve: rises with each epoch towards the candidate's quality."""
    return quality(values) * (1.0 - 0.5**epoch)


class EpochBackend:
    """Attempts that train one epoch per controller round (`tick`), reporting progress.

    An attempt trains `tuner/epochs` epochs (Hyperband) or `epochs`; with `weights_from` it
    starts at `tuner/initial_epoch` (its curve goes on from there), else at 0. `fail_first`:
    the first attempt of those trials fails after one epoch; `hang`: it stops showing life.
    """

    def __init__(
        self, epochs: int = 6, fail_first: Iterable[str] = (), hang: Iterable[str] = ()
    ) -> None:
        self.epochs = epochs
        self.fail_first, self.hang = set(fail_first), set(hang)
        self.runs: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []  # handles in submission order
        self.stopped: list[str] = []
        self.stop_round: dict[str, int] = {}
        self.rounds = 0
        self.in_flight_max = 0

    def submit(
        self,
        trial_id: str,
        values: Mapping[str, Any],
        attempt: int,
        final: bool,
        weights_from: str = "",
    ) -> str:
        handle = f"{'final' if final else trial_id}#{attempt}"
        start = int(values.get("tuner/initial_epoch") or 0) if weights_from else 0
        total = self.epochs if final else int(values.get("tuner/epochs") or self.epochs)
        self.runs[handle] = {
            "trial": trial_id,
            "values": dict(values),
            "attempt": attempt,
            "start": start,
            "epoch": start,
            "total": total,
            "weights_from": weights_from,
            "round": self.rounds,
            "final": final,
        }
        self.order.append(handle)
        return handle

    def tick(self) -> None:
        self.rounds += 1
        live = [h for h, r in self.runs.items() if self._live(h, r)]
        self.in_flight_max = max(self.in_flight_max, sum(not self.runs[h]["final"] for h in live))
        for handle in live:
            run = self.runs[handle]
            if run["attempt"] == 0 and run["trial"] in self.hang and run["epoch"] > run["start"]:
                continue  # frozen after its first epoch: a dead agent
            run["epoch"] = min(run["total"], run["epoch"] + 1)

    def _live(self, handle: str, run: Mapping[str, Any]) -> bool:
        return handle not in self.stopped and run["epoch"] < run["total"]

    def _best(self, run: Mapping[str, Any]) -> float | None:
        points = [accuracy(run["values"], e) for e in range(run["start"] + 1, run["epoch"] + 1)]
        return max(points) if points else None

    def poll(self, handles: list[str]) -> dict[str, Observation]:
        result = {}
        for handle in handles:
            run = self.runs[handle]
            progress = {"epoch": run["epoch"], "best": self._best(run)}
            if handle in self.stopped:
                result[handle] = Observation(ctl.FAILED, message="task stopped")
            elif run["attempt"] == 0 and run["trial"] in self.fail_first and run["epoch"] > 0:
                result[handle] = Observation(ctl.FAILED, message="task failed: boom", **progress)
            elif run["epoch"] >= run["total"]:
                result[handle] = Observation(
                    ctl.COMPLETED, objective=self._best(run), worker="w", **progress
                )
            else:
                marker = "frozen" if run["trial"] in self.hang else str(run["epoch"])
                result[handle] = Observation(ctl.RUNNING, worker="w", marker=marker, **progress)
        return result

    def stop(self, handles: list[str], reason: str = "") -> None:
        self.stopped += handles
        self.stop_round.update(dict.fromkeys(handles, self.rounds))

    def abandon(self, handle: str, reason: str) -> None:
        self.stopped.append(handle)

    def curve(self, handle: str) -> list[tuple[int, float]]:
        run = self.runs[handle]
        return [(e, accuracy(run["values"], e)) for e in range(run["start"] + 1, run["epoch"] + 1)]

    def epochs_trained(self) -> int:
        return sum(r["epoch"] - r["start"] for r in self.runs.values() if not r["final"])


class Clock:
    """The controller's injected clock and wall: one round is `poll_s` seconds; each sleep
    moves the backend one epoch on."""

    def __init__(self, backend: EpochBackend, start: float = 1_000_000.0) -> None:
        self.now = start
        self.backend = backend

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.backend.tick()


def controller(
    oracle: KerasTunerOracle, backend: EpochBackend, parallel: int, **kwargs: Any
) -> tuple[Controller, Clock]:
    clock = Clock(backend)
    kwargs.setdefault("poll_s", 60.0)  # one epoch a minute: budgets in minutes
    kwargs.setdefault("lost_after_s", 1e9)
    made = Controller(
        oracle, backend, parallel, clock=clock, wall=clock, sleep=clock.sleep, **kwargs
    )
    return made, clock


# -- Hyperband ---------------------------------------------------------------------------------


def keras_tuners_own_hyperband(path: Path, epochs: int) -> list[dict[str, Any]]:
    """Keras Tuner's own search loop (BaseTuner.search, one machine) over the same oracle;
    each trial scores as a continued model would (best epoch of its own epochs)."""
    from keras_tuner.engine.base_tuner import BaseTuner

    oracle = make_oracle(path / "oracle", "hyperband", 99, epochs).oracle
    oracle.verbose = 0

    class OwnTuner(BaseTuner):  # type: ignore[misc]
        def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
            values = trial.hyperparameters.values
            start, end = int(values["tuner/initial_epoch"]), int(values["tuner/epochs"])
            return {"val_accuracy": max(accuracy(values, e) for e in range(start + 1, end + 1))}

        def save(self) -> None:  # tuner files are not what is compared
            pass

    OwnTuner(oracle, directory=str(path / "own"), project_name="own").search(verbose=0)
    return [dict(oracle.trials[t].hyperparameters.values) for t in oracle.start_order]


def test_hyperband_over_one_agent_makes_keras_tuners_own_brackets_and_promotions(
    tmp_path: Path,
) -> None:
    """Same seed, same results: the same candidates in the same brackets, rounds and epochs,
    promoted from the same parents, as Keras Tuner's own Hyperband on one machine."""
    own = keras_tuners_own_hyperband(tmp_path / "kt", epochs=9)
    oracle = make_oracle(tmp_path / "ours", "hyperband", 99, epochs=9)
    backend = EpochBackend()
    search, _ = controller(oracle, backend, parallel=1)
    search.run()
    ours = [backend.runs[h]["values"] for h in backend.order]
    # 9 epochs, factor 3: brackets of 9+3+1, 5+2 and 3 trials (Keras Tuner's schedule).
    assert len(own) == 23
    assert ours == own
    assert max(v["tuner/round"] for v in own) == 2  # promotions happened


def test_hyperband_hands_weights_to_promoted_trials_and_saves_epochs(tmp_path: Path) -> None:
    """Over 3 agents: every promoted trial starts from its parent's successful attempt (a
    retried parent included) and trains only the epochs its rung adds; without hand-over the
    same brackets train every promoted model from scratch."""
    epochs_by_mode = {}
    for handover in (True, False):
        oracle = make_oracle(tmp_path / str(handover), "hyperband", 99, epochs=9)
        backend = EpochBackend(fail_first={"00"})
        search, _ = controller(oracle, backend, parallel=3, handover=handover)
        search.run()
        promoted = [t for t in search.trials.values() if t.parent]
        assert promoted
        for trial in promoted:
            parent = search.trials[trial.parent]
            assert model_values(trial.values) == model_values(parent.values)
            assert trial.values["tuner/round"] == parent.values["tuner/round"] + 1
            assert trial.values["tuner/initial_epoch"] == parent.values["tuner/epochs"]
            run = backend.runs[trial.attempts[0].handle]
            if handover:
                # The parent's completed attempt, never one of its failed ones.
                done = [a.handle for a in parent.attempts if a.status == ctl.COMPLETED]
                assert trial.weights_from == done[-1]
                assert run["start"] == trial.values["tuner/initial_epoch"]
            else:
                assert trial.weights_from == ""
                assert run["start"] == 0
        retried = search.trials["00"]
        assert [a.status for a in retried.attempts] == [ctl.FAILED, ctl.COMPLETED]
        epochs_by_mode[handover] = backend.epochs_trained()
        assert search.epochs_trained() == backend.epochs_trained()
    assert epochs_by_mode[True] < epochs_by_mode[False]


def test_a_lost_promoted_trial_restarts_from_its_parents_weights(tmp_path: Path) -> None:
    oracle = make_oracle(tmp_path, "hyperband", 99, epochs=9)
    # Trial 09 is bracket 2's first promotion (its round 0 is trials 00-08): its first attempt
    # freezes after one epoch and is lost.
    backend = EpochBackend(hang={"09"})
    search, _ = controller(oracle, backend, parallel=2, lost_after_s=150.0, max_retries=1)
    search.run()
    lost = search.trials["09"]
    assert lost.parent
    assert [a.status for a in lost.attempts] == [ctl.FAILED, ctl.COMPLETED]
    assert lost.attempts[0].message.startswith("lost: no sign of life")
    first, retry = (backend.runs[a.handle] for a in lost.attempts)
    assert first["weights_from"] == retry["weights_from"] == lost.weights_from != ""
    assert retry["start"] == lost.values["tuner/initial_epoch"]
    assert lost.state == ctl.TRIAL_COMPLETED


# -- the median rule ---------------------------------------------------------------------------


def test_the_median_rule_stops_bad_trials_and_frees_their_slot_at_once(tmp_path: Path) -> None:
    """Random search proposes the same candidates with and without the rule, so the rule must
    find the same best with fewer epochs; stopped trials are stopped, not failed, give the
    oracle their best so far, and the next candidate is submitted in the same round."""
    results = {}
    for median in (None, MedianRule(grace_epochs=2, min_trials=3)):
        oracle = make_oracle(tmp_path / str(median is None), "random", 14)
        backend = EpochBackend(epochs=6, fail_first={"03"})
        search, _ = controller(oracle, backend, parallel=2, median=median, epochs=6)
        best = search.run()
        results[median is None] = (model_values(best.values), backend.epochs_trained())
        if median is None:
            assert all(t.state == ctl.TRIAL_COMPLETED for t in search.trials.values())
            continue
        stopped = [t for t in search.trials.values() if t.state == ctl.TRIAL_STOPPED]
        assert stopped
        finished_order = sorted(
            (t for t in search.trials.values() if t.state != ctl.TRIAL_RUNNING),
            key=lambda t: t.current.ended or 0,
        )
        assert all(t.state == ctl.TRIAL_COMPLETED for t in finished_order[:3])
        for trial in stopped:
            attempt = trial.current
            assert attempt.status == ctl.STOPPED
            assert trial.stop_reason.startswith("stopped early by the median rule")
            assert attempt.handle in backend.stopped
            assert attempt.epoch - backend.runs[attempt.handle]["start"] >= 2  # the grace
            assert attempt.epoch < 6  # never in its last epoch: that would save nothing
            assert trial.objective == pytest.approx(attempt.best)
            kt = oracle.oracle.trials[trial.trial_id]
            assert str(kt.status) == "COMPLETED"
            assert kt.score == pytest.approx(trial.objective)
            # Its slot went to the next candidate in the round that stopped it (unless the
            # oracle had no more).
            stopped_in = backend.stop_round[attempt.handle]
            later = [
                backend.runs[h]["round"]
                for h in backend.order
                if backend.runs[h]["round"] >= stopped_in and not backend.runs[h]["final"]
            ]
            if len(search.trials) < 14 or later:
                assert later[0] == stopped_in
        # The retried trial's rule counted the epochs of its new attempt only.
        assert search.trials["03"].attempts[0].status == ctl.FAILED
    assert results[False][0] == results[True][0]  # the same best candidate
    assert results[False][1] < results[True][1]  # for fewer epochs


def test_the_median_rule_waits_for_enough_finished_trials(tmp_path: Path) -> None:
    oracle = make_oracle(tmp_path, "random", 6)
    backend = EpochBackend(epochs=4)
    search, _ = controller(oracle, backend, parallel=2, median=MedianRule(1, min_trials=6))
    search.run()
    assert all(t.state == ctl.TRIAL_COMPLETED for t in search.trials.values())
    assert backend.stopped == []


# -- budgets and the target --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "ended_by"),
    [
        (Budget(max_time_s=9 * 60.0), ctl.ENDED_TIME),
        (Budget(max_gpu_hours=14 / 60.0), ctl.ENDED_GPU_HOURS),
    ],
)
def test_a_budget_stops_trials_in_flight_and_the_final_fit_runs_on_the_best_so_far(
    tmp_path: Path, budget: Budget, ended_by: str
) -> None:
    oracle = make_oracle(tmp_path, "random", 20)
    backend = EpochBackend(epochs=4, hang={"01"})  # a lost trial's time counts too
    search, _ = controller(
        oracle, backend, parallel=2, budget=budget, lost_after_s=150.0, max_retries=1
    )
    best = search.run()
    assert search.ended_by == ended_by
    assert len(search.trials) < 20  # it ended before the oracle did
    if budget.max_time_s is not None:
        assert search.elapsed_s() >= budget.max_time_s
        assert search.elapsed_s() < budget.max_time_s + 2 * 60.0  # within a round
    else:
        assert budget.max_gpu_hours is not None
        assert search.gpu_hours() >= budget.max_gpu_hours
    in_flight = [t for t in search.trials.values() if t.state == ctl.TRIAL_STOPPED]
    assert in_flight  # what ran when it ended was stopped ...
    for trial in in_flight:
        assert trial.current.handle in backend.stopped
        assert trial.stop_reason.startswith("stopped: the")
        if trial.current.best is not None:  # ... and its best so far counts
            assert str(oracle.oracle.trials[trial.trial_id].status) == "COMPLETED"
    assert search.trials["01"].attempts[0].message.startswith("lost")
    submitted = len(backend.order)
    final = search.run_final(best)
    assert final.state == ctl.TRIAL_COMPLETED
    assert model_values(final.values) == model_values(best.values)
    assert len(backend.order) == submitted + 1  # the final fit only, no trial after the end


def test_the_target_ends_the_search_when_a_trial_reaches_it(tmp_path: Path) -> None:
    oracle = make_oracle(tmp_path, "random", 30)
    backend = EpochBackend(epochs=5, fail_first={"02"})
    # The 80th-percentile quality of the first candidates: reachable, not by every trial.
    target = 0.3 + 0.7 * 0.8 * (1 - 0.5**5)
    search, _ = controller(oracle, backend, parallel=3, budget=Budget(target=target))
    best = search.run()
    assert search.ended_by == ctl.ENDED_TARGET
    assert best.objective is not None
    assert best.objective >= target
    assert len(search.trials) < 30
    assert not search.running()


# -- warm starts and growth ------------------------------------------------------------------


def results_of(search: Controller) -> list[tuple[dict[str, Any], float]]:
    return [
        (t.values, float(t.objective))
        for t in search.trials.values()
        if t.state == ctl.TRIAL_COMPLETED and t.objective is not None
    ]


@pytest.mark.parametrize("tuner", ["random", "bayesian", "greedy"])
def test_a_warm_started_search_trains_no_candidate_twice(tmp_path: Path, tuner: str) -> None:
    first_oracle = make_oracle(tmp_path / "first", tuner, 6)
    first, _ = controller(first_oracle, EpochBackend(epochs=2), parallel=2)
    first.run()
    earlier = results_of(first)
    assert len(earlier) == 6

    oracle = make_oracle(tmp_path / "second", tuner, 5)  # the same seed: it would repeat them
    backend = EpochBackend(epochs=2, fail_first={"07"})
    search, _ = controller(oracle, backend, parallel=2)
    assert search.warm_start("search-1", earlier) == 6
    best = search.run()
    trained = [backend.runs[h]["values"] for h in backend.order]
    assert {values_key(v) for v in trained}.isdisjoint(values_key(v) for v, _ in earlier)
    assert len({values_key(v) for v in trained}) == 5  # max_trials new candidates
    warm = [t for t in search.trials.values() if t.warm_from]
    assert len(warm) == 6
    assert all(not t.attempts for t in warm)
    # The oracle learned from them: they are its trials, with their scores.
    for trial in warm:
        assert oracle.oracle.trials[trial.trial_id].score == pytest.approx(trial.objective)
    everything = [o for _, o in earlier] + [
        float(t.objective) for t in search.trials.values() if t.attempts and t.objective
    ]
    assert best.objective == pytest.approx(max(everything))


def test_a_finished_search_grows_and_its_controller_carries_on(tmp_path: Path) -> None:
    """More trials and more agents for a finished search; also across a restart (the state
    saved, a new controller process)."""
    oracle = make_oracle(tmp_path / "one", "random", 4)
    backend = EpochBackend(epochs=2, hang={"5"})
    search, _ = controller(oracle, backend, parallel=2, lost_after_s=150.0)
    best = search.run()
    search.run_final(best)
    assert len(search.trials) == 4
    assert search.ended_by == ctl.ENDED_ORACLE

    assert search.grow(max_trials=7, parallel=3)
    search.run()
    assert len(search.trials) == 7
    assert backend.in_flight_max == 3
    assert [a.status for a in search.trials["5"].attempts] == [ctl.FAILED, ctl.COMPLETED]
    store = StateStore(tmp_path / "one", Path(oracle.oracle._project_dir), None)
    store.save(search)

    # A new controller process on the saved state, given 2 more trials.
    oracle2 = make_oracle(tmp_path / "two", "random", 4)
    store2 = StateStore(tmp_path / "two", Path(oracle2.oracle._project_dir), None)
    state = store2.restore(store.path)
    oracle2.oracle.reload()
    again, _ = controller(oracle2, backend, parallel=3)
    again.load_state(state)
    assert again.stopped
    assert again.grow(max_trials=9)
    before = len(backend.order)
    best2 = again.run()
    assert len(again.trials) == 9
    assert len(backend.order) == before + 2  # finished trials are not trained again
    assert len({values_key(t.values) for t in again.trials.values()}) == 9
    final = again.run_final(best2)
    assert final.values == best2.values
    assert not again.grow(max_trials=9)  # no change, no event


def test_the_controller_state_keeps_the_new_fields(tmp_path: Path) -> None:
    oracle = make_oracle(tmp_path, "random", 6)
    backend = EpochBackend(epochs=3)
    search, _ = controller(
        oracle, backend, parallel=2, median=MedianRule(1, 2), budget=Budget(max_time_s=300)
    )
    search.warm_start("old", [({**oracle.oracle.hyperparameters.values}, 0.5)])
    search.run()
    state = json.loads(json.dumps(search.to_state()))
    copy, _ = controller(oracle, backend, parallel=2)
    copy.load_state(state)
    assert copy.ended_by == search.ended_by
    assert copy.started_at == search.started_at
    assert [asdict_trial(t) for t in copy.trials.values()] == state["trials"]


def asdict_trial(trial: ctl.Trial) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(trial)


def test_best_up_to_reads_a_curve_up_to_an_epoch() -> None:
    curve = [[1, 0.2], [2, 0.5], [3, 0.4]]
    assert ctl.best_up_to(curve, 2, -1.0) == 0.5
    assert ctl.best_up_to(curve, 1, -1.0) == 0.2
    assert ctl.best_up_to(curve, 3, 1.0) == 0.2
    assert ctl.best_up_to(curve, 0, 1.0) is None
    assert ctl.best_up_to([[1, math.nan]], 1, 1.0) is None


def test_the_bayesian_oracle_fits_its_process_and_never_proposes_a_tried_candidate(
    tmp_path: Path,
) -> None:
    """The controller's Bayesian oracle (ak_remote/search/bayesian.py) past its random start:
    its Gaussian process is conditioned on every result and every trial in flight, and each
    proposal is new."""
    oracle = make_oracle(tmp_path, "bayesian", 14)
    assert type(oracle.oracle).__name__ == "ScalableBayesianOracle"
    oracle.oracle.num_initial_points = 4
    backend = EpochBackend(epochs=2, fail_first={"05"})
    search, _ = controller(oracle, backend, parallel=3)
    search.run()
    assert len(search.trials) == 14
    assert not any(t.duplicate_of for t in search.trials.values())
    trained = {values_key(backend.runs[h]["values"]) for h in backend.order}
    assert len(trained) == 14
    assert oracle.oracle._kernel is not None  # fitted, not random asks only
    # The last fit saw the finished results and the trials then in flight.
    assert oracle.oracle.gpr.X_train_.shape[0] >= 11
