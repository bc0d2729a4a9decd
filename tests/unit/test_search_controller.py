"""The search controller with the job's real Keras Tuner oracles (greedy, random, bayesian).

The oracle is the one a search builds (AutoKeras' search space for wine, from the data's
shapes); the backend scores a candidate at once from its values, so these tests check the
controller's ask/tell, retries, liveness and resume logic in seconds, not the training (which
tests/integration/test_search_controller.py and tests/integration/test_parallel_search.py cover
with real trial processes and real workers).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from ak_remote.search import controller as ctl
from ak_remote.search.controller import Controller, values_key
from ak_remote.search.runner import STATE_JSON, StateStore
from tests.helpers import invoke
from tests.search_doubles import InstantBackend, make_oracle, score


@pytest.mark.parametrize("tuner", ["greedy", "random", "bayesian"])
def test_each_oracle_hands_out_distinct_candidates_and_learns_every_result(
    tmp_path: Path, tuner: str
) -> None:
    oracle = make_oracle(tmp_path, tuner, max_trials=6, epochs=1)
    backend = InstantBackend()
    controller = Controller(oracle, backend, parallel=3, poll_s=0.0, sleep=lambda _s: None)
    best = controller.run()
    trials = controller.trials
    assert len(trials) == 6  # exactly max_trials
    assert len({values_key(t.values) for t in trials.values()}) == 6  # never the same twice
    assert all(t.state == ctl.TRIAL_COMPLETED for t in trials.values())
    assert backend.max_in_flight == 3
    # The oracle was told every result, and agrees on the best.
    kt_best = oracle.oracle.get_best_trials(1)[0]
    assert kt_best.trial_id == best.trial_id
    assert kt_best.score == pytest.approx(max(score(t.values) for t in trials.values()))
    assert best.objective == pytest.approx(kt_best.score)
    # A candidate is a full set of values of the AutoKeras space.
    assert any(k.startswith("structured_data_block_1/") for k in best.values)


def test_failed_and_lost_attempts_are_retried_then_failed_for_the_oracle(tmp_path: Path) -> None:
    oracle = make_oracle(tmp_path, "random", max_trials=4, epochs=1)
    now = [0.0]
    backend = InstantBackend(fail_first={"0"}, hang={"1"})

    def tick(_s: float) -> None:
        now[0] += 1.0

    controller = Controller(
        oracle,
        backend,
        parallel=2,
        max_retries=1,
        lost_after_s=5.0,
        poll_s=1.0,
        clock=lambda: now[0],
        sleep=tick,
    )
    controller.run()
    t0, t1 = controller.trials["0"], controller.trials["1"]
    assert [a.status for a in t0.attempts] == [ctl.FAILED, ctl.COMPLETED]
    assert "boom" in t0.attempts[0].message
    assert [a.status for a in t1.attempts] == [ctl.FAILED, ctl.COMPLETED]
    assert t1.attempts[0].message.startswith("lost: no sign of life")
    assert backend.stopped == ["1#0"]  # the lost attempt's task is stopped, not left running
    assert len(controller.trials) == 4

    # With no retries left, a failure is the oracle's: the trial is failed, the search goes on.
    oracle2 = make_oracle(tmp_path / "b", "random", max_trials=3, epochs=1)
    backend2 = InstantBackend(fail_first={"1"})
    controller2 = Controller(oracle2, backend2, parallel=1, max_retries=0, sleep=lambda _s: None)
    controller2.run()
    assert controller2.trials["1"].state == ctl.TRIAL_FAILED
    assert str(oracle2.oracle.trials["1"].status) == "FAILED"
    assert len(controller2.trials) == 3


def test_a_restarted_controller_adopts_running_trials_and_keeps_finished_ones(
    tmp_path: Path,
) -> None:
    oracle = make_oracle(tmp_path / "first", "greedy", max_trials=5, epochs=1)
    backend = InstantBackend(hang={"2"})  # trial 2 runs on while the controller dies
    controller = Controller(oracle, backend, parallel=2, lost_after_s=1e9, sleep=lambda _s: None)
    store = StateStore(tmp_path / "first", Path(oracle.oracle._project_dir), None)
    for _ in range(3):
        controller.step()
        store.save(controller)
    finished = {k: t.values for k, t in controller.trials.items() if t.state != "running"}
    running = sorted(k for k, t in controller.trials.items() if t.state == "running")
    assert finished
    assert "2" in running
    with zipfile.ZipFile(store.path) as archive:
        saved = json.loads(archive.read(STATE_JSON))
    assert {t["trial_id"] for t in saved["trials"]} == set(controller.trials)

    # A new controller process: a fresh oracle from the data, then the snapshot.
    (tmp_path / "second").mkdir()
    oracle2 = make_oracle(tmp_path / "second", "greedy", max_trials=5, epochs=1)
    store2 = StateStore(tmp_path / "second", Path(oracle2.oracle._project_dir), None)
    state = store2.restore(store.path)
    oracle2.oracle.reload()
    backend.hang.clear()  # trial 2's task finishes while nobody watches
    controller2 = Controller(oracle2, backend, parallel=2, sleep=lambda _s: None)
    controller2.load_state(state)
    assert sorted(controller2.adopt()) == running
    submitted_before = len(backend.attempts)
    controller2.run()
    assert len(controller2.trials) == 5
    for trial_id, values in finished.items():  # not trained again
        assert controller2.trials[trial_id].values == values
        assert len(controller2.trials[trial_id].attempts) == 1
    for trial_id in running:  # adopted, not resubmitted
        assert len(controller2.trials[trial_id].attempts) == 1
    new = len(backend.attempts) - submitted_before
    assert new == 5 - len(controller.trials)
    assert len({values_key(t.values) for t in controller2.trials.values()}) == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--parallel", "0"], "--parallel 0 is not a positive number"),
        (["--set", "max_trials=2", "--parallel", "3"], "more than max_trials=2"),
        (["--early-stop", "off"], "--early-stop need --parallel N"),
        (["--parallel", "2", "--max-time", "soon"], "--max-time 'soon' is not a duration"),
        (["--parallel", "2", "--max-time", "0m"], "must be a positive duration"),
        (["--parallel", "2", "--max-gpu-hours", "-1"], "--max-gpu-hours -1.0 must be a positive"),
        (["--parallel", "2", "--target", "nan"], "--target nan is not a number"),
        (
            ["--parallel", "2", "--early-stop", "off", "--stop-grace", "3"],
            "--stop-grace and --stop-min-trials tune --early-stop median",
        ),
        (["--parallel", "2", "--warm-start", "nowhere"], "not a parallel search's run folder"),
        (
            ["--parallel", "2", "--set", "tuner=hyperband", "--warm-start", "x"],
            "--warm-start works with tuner=random",
        ),
    ],
)
def test_run_parallel_refuses_bad_input_before_creating_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = invoke("run", "structured-classifier", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert list(work.iterdir()) == []  # no run folder, no spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "not a JSON object"),
        ('{"role": "boss"}', "unknown search role"),
        ('{"role": "trial", "extra": 1}', "unknown fields extra"),
        ('{"role": "controller", "parallel": 0}', "--parallel 0"),
        ('{"role": "controller", "lost_after_s": -1}', "lost_after_s must be a positive"),
    ],
)
def test_a_bad_search_spec_is_a_usage_error(text: str, message: str) -> None:
    from ak_remote.errors import UsageError
    from ak_remote.search.spec import SearchSpec

    with pytest.raises(UsageError, match=message):
        SearchSpec.from_json(text)


class _Recorder:
    """What the search task is given to show: scalars by (title, series, iteration), the last
    table and plot by title (a value reported again for the same iteration replaces the earlier
    one, as on the server)."""

    def __init__(self) -> None:
        self.scalars: dict[tuple[str, str, int], float] = {}
        self.tables: dict[str, list[list[Any]]] = {}
        self.plots: dict[str, dict[str, Any]] = {}

    def report_scalar(self, title: str, series: str, value: float, iteration: int) -> None:
        self.scalars[(title, series, iteration)] = value

    def report_table(self, title: str, series: str, rows: list[list[Any]]) -> None:
        self.tables[title] = [list(r) for r in rows]

    def report_plotly(self, title: str, series: str, figure: dict[str, Any]) -> None:
        self.plots[title] = figure


def test_the_search_reports_what_an_optimizer_reports(tmp_path: Path) -> None:
    """Objective per trial and best so far by trial number, even when trials finish out of
    order; a summary table best first; parallel coordinates of the values that differ."""
    from ak_remote.search.runner import report_trials

    oracle = make_oracle(tmp_path, "random", max_trials=3, epochs=1)
    controller = Controller(oracle, InstantBackend(), parallel=3, poll_s=0.0, sleep=lambda _s: None)
    controller.run()
    trials = sorted(controller.trials.values(), key=lambda t: int(t.trial_id))
    assert [t.trial_id for t in trials] == ["0", "1", "2"]
    for trial in trials:
        trial.state = ctl.TRIAL_RUNNING
    sink = _Recorder()
    for trial in (trials[2], trials[0], trials[1]):  # finished out of order
        trial.state = ctl.TRIAL_COMPLETED
        report_trials(sink, controller, trial)
    scores = [float(t.objective or 0) for t in trials]
    assert [sink.scalars[("objective", "trial", n)] for n in range(3)] == scores
    # best so far at trial n: the best of trials 0..n (the objective is maximised here)
    expected = [max(scores[: n + 1]) for n in range(3)]
    assert [sink.scalars[("objective", "best so far", n)] for n in range(3)] == expected
    header, *rows = sink.tables["summary"]
    assert header[:3] == ["trial", "task id", oracle.objective]
    assert [row[2] for row in rows] == sorted(scores, reverse=True)  # best first
    assert {row[0] for row in rows} == {"00", "01", "02"}
    (figure,) = sink.plots["Parallel Coordinates"]["data"]
    labels = [d["label"] for d in figure["dimensions"]]
    assert labels[0] == "trial"
    assert labels[-1] == oracle.objective
    assert len(labels) > 2  # the values that differ between the three candidates
    assert figure["line"]["color"] == [row[2] for row in rows]


def test_the_report_names_a_warm_started_result_by_its_source(tmp_path: Path) -> None:
    """Results given by a warm start have no task here: the summary table says where they came
    from instead (a warm-started search's first report used to fail on them)."""
    from ak_remote.search.runner import report_trials

    first = Controller(
        make_oracle(tmp_path / "a", "random", max_trials=2, epochs=1),
        InstantBackend(),
        parallel=2,
        poll_s=0.0,
        sleep=lambda _s: None,
    )
    first.run()
    earlier = [(t.values, float(t.objective or 0)) for t in first.trials.values()]
    second = Controller(
        make_oracle(tmp_path / "b", "random", max_trials=3, epochs=1),
        InstantBackend(),
        parallel=1,
        poll_s=0.0,
        sleep=lambda _s: None,
    )
    assert second.warm_start("SEARCH1", earlier) == 2
    second.run()
    trained = next(t for t in second.trials.values() if t.attempts)
    sink = _Recorder()
    report_trials(sink, second, trained)
    _, *rows = sink.tables["summary"]
    trained_here = [t for t in second.trials.values() if t.attempts]
    assert len(rows) == 2 + len(trained_here)
    sources = sorted(str(row[1]) for row in rows)
    assert sources.count("warm start from SEARCH1") == 2
    assert {t.current.handle for t in trained_here} <= set(sources)
