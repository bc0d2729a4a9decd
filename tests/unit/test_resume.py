"""Resumable searches, without training: the search state's snapshots (no weights, atomic,
refused when odd, corrupt or of another search), local resume refusals, and `ak-remote resume`
refusing runs that cannot resume (against the emulator). The real resumes:
tests/integration/test_resume.py.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from ak_remote.catalog import get_job
from ak_remote.errors import DataError, UsageError
from ak_remote.runtime.search_state import (
    MANIFEST,
    STATE_FILE,
    SearchState,
    check_resume_dir,
    read_snapshot,
    resume_overrides,
    snapshot_files,
)
from tests.emulator.server import Emulator
from tests.helpers import (
    MAX_TRIALS,
    SEARCH_PARAMS,
    assert_small_search_state,
    invoke,
    search_manifest,
)

# --- unit checks of the snapshot format (no TensorFlow) ------------------------------------


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "run" / "autokeras" / "search"
    (project / "trial_0").mkdir(parents=True)
    # The keys Keras Tuner reads back (a snapshot without them is refused as unusable).
    oracle = {
        "ongoing_trials": {},
        "hyperparameters": {},
        "start_order": ["0"],
        "end_order": ["0"],
        "run_times": {},
    }
    (project / "oracle.json").write_text(json.dumps(oracle))
    (project / "tuner0.json").write_text('{"finished": false}')
    (project / "graph").write_text("{}")
    trial = {"trial_id": "0", "hyperparameters": {}, "metrics": {}, "status": "COMPLETED"}
    (project / "trial_0" / "trial.json").write_text(json.dumps(trial))
    (project / "trial_0" / "pipeline").write_text("{}")
    (project / "trial_0" / "checkpoint.weights.h5").write_bytes(b"\0" * 100_000)
    (project / "best_model.keras").write_bytes(b"\0" * 1000)
    return project


def _state(run_dir: Path, **params: str) -> SearchState:
    values = {**SEARCH_PARAMS, "dataset": "wine", **params}
    return SearchState(run_dir, "structured-classifier", values, "fp1", MAX_TRIALS, None)


def test_snapshots_hold_no_weights_and_replace_atomically(tmp_path: Path) -> None:
    project = _project(tmp_path)
    assert set(snapshot_files(project)) == {
        "oracle.json",
        "tuner0.json",
        "graph",
        "trial_0/trial.json",
        "trial_0/pipeline",
    }
    state = _state(tmp_path / "run")
    path = state.snapshot()
    data = path.read_bytes()
    assert_small_search_state(data)
    assert search_manifest(data)["trials"] == [{"id": "0", "status": "COMPLETED"}]
    assert not list(path.parent.glob(".search_state*"))  # the temporary file was renamed
    members, manifest = read_snapshot(path)
    assert manifest["job"] == "structured-classifier"
    assert "trial_0/trial.json" in members


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        ({"../../evil.json": b"{}"}, "unexpected entry '../../evil.json'"),
        ({"trial_0/checkpoint.weights.h5": b"x"}, "unexpected entry"),
        ({"oracle.json": b"{}", "tuner0.json": b"{}"}, "no manifest"),
        ({MANIFEST: b"not json", "oracle.json": b"{}"}, "the manifest is not JSON"),
        ({MANIFEST: b'{"format": 99}'}, "unknown manifest format"),
        ({MANIFEST: b'{"format": 1}', "tuner0.json": b"{}"}, "no oracle or tuner state"),
        (
            {MANIFEST: b'{"format": 1}', "oracle.json": b"{", "tuner0.json": b"{}"},
            "oracle.json is not JSON",
        ),
    ],
)
def test_odd_or_corrupt_snapshots_are_refused(
    tmp_path: Path, entries: dict[str, bytes], reason: str
) -> None:
    with pytest.raises(DataError, match="unusable: " + reason.replace("(", r"\(")):
        read_snapshot(_zip(tmp_path / STATE_FILE, entries))
    (tmp_path / "garbage.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="unusable"):
        read_snapshot(tmp_path / "garbage.zip")


def test_a_snapshot_of_other_params_job_or_data_is_refused(tmp_path: Path) -> None:
    _project(tmp_path)
    saved = _state(tmp_path / "run").snapshot()
    other_run = tmp_path / "other"
    with pytest.raises(UsageError, match=r"other search parameters \(epochs: '1' -> '5'\)"):
        _state(other_run, epochs="5").restore(saved, "run folder")
    with pytest.raises(UsageError, match="the data changed"):
        SearchState(
            other_run, "structured-classifier", {**SEARCH_PARAMS, "dataset": "wine"}, "fp2", 3, None
        ).restore(saved, "run folder")
    with pytest.raises(UsageError, match="made by job 'structured-classifier'"):
        SearchState(other_run, "image-classifier", {**SEARCH_PARAMS}, "fp1", 3, None).restore(
            saved, "run folder"
        )
    assert not other_run.exists()  # refused before anything was written
    # Not search parameters: the export and the devices may change on resume.
    state = _state(other_run, export_formats="keras", gpus="2")
    state.restore(saved, "run folder")
    assert state.trials_restored == 1
    assert (other_run / "autokeras" / "search" / "trial_0" / "trial.json").is_file()
    assert (other_run / STATE_FILE).read_bytes() == saved.read_bytes()


def test_local_resume_refusals(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--resume needs the run folder"):
        check_resume_dir(None)
    with pytest.raises(UsageError, match="no run folder"):
        check_resume_dir(str(tmp_path / "nope"))
    with pytest.raises(UsageError, match=f"nothing to resume in .*: no {STATE_FILE}"):
        check_resume_dir(str(tmp_path))
    _project(tmp_path)
    _state(tmp_path / "run").snapshot()
    assert check_resume_dir(str(tmp_path / "run")) == tmp_path / "run"
    job = get_job("structured-classifier")
    merged = resume_overrides(tmp_path / "run", job, {"export_formats": "keras"})
    assert merged["max_trials"] == "3"
    assert merged["export_formats"] == "keras"
    with pytest.raises(UsageError, match="holds a search of job 'structured-classifier'"):
        resume_overrides(tmp_path / "run", get_job("image-classifier"), {})
    (tmp_path / "run" / "summary.json").write_text('{"status": "completed"}')
    with pytest.raises(UsageError, match="already completed"):
        check_resume_dir(str(tmp_path / "run"))


def test_a_stopped_parallel_search_resumes_with_more_trials_never_fewer(tmp_path: Path) -> None:
    """Issue 21, growth, for a local search: its controller's folder (search_controller.zip,
    summary.json) resumes with a larger max_trials; a smaller one or another search parameter
    is refused; a completed one points to a warm-started new run."""
    from ak_remote.summary import RunSummary

    run = tmp_path / "run"
    run.mkdir()
    (run / "search_controller.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    job = get_job("structured-classifier")
    params = job.params.to_strings(job.params.resolve({"max_trials": "3"}))
    (run / "summary.json").write_text(
        RunSummary(job=job.name, status="failed", params=params).to_json()
    )
    assert check_resume_dir(str(run)) == run
    assert resume_overrides(run, job, {})["max_trials"] == "3"
    assert resume_overrides(run, job, {"max_trials": "5"})["max_trials"] == "5"
    with pytest.raises(UsageError, match="max_trials=3: it can grow, not shrink"):
        resume_overrides(run, job, {"max_trials": "2"})
    with pytest.raises(UsageError, match="keeps its search parameters: epochs=7"):
        resume_overrides(run, job, {"epochs": "7"})
    (run / "summary.json").write_text(
        RunSummary(job=job.name, status="completed", params=params).to_json()
    )
    with pytest.raises(UsageError, match="already completed") as refused:
        check_resume_dir(str(run))
    assert f"--warm-start {run}" in str(refused.value.hint)


def test_the_job_script_refuses_resume_without_a_run_folder(tmp_path: Path) -> None:
    from ak_remote.runtime.run import main

    assert main("structured-classifier", ["--resume"]) == 2
    assert main("structured-classifier", ["--resume", "--run-dir", str(tmp_path)]) == 2
    assert not (tmp_path / "summary.json").exists()


# --- through the ClearML emulator ----------------------------------------------------------


def _task_with_status(emulator: Emulator, name: str, status: str) -> str:
    task_id = emulator.create_task(name)
    emulator.call(f"tasks.{status}", task=task_id, force=True)
    assert emulator.get_task(task_id)["status"] == status
    return task_id


def test_resume_refuses_runs_that_cannot_resume(clearml_emulator: Emulator) -> None:
    emulator = clearml_emulator
    emulator.create_queue("cpu")
    done = _task_with_status(emulator, "done", "completed")
    queued = emulator.create_task("waiting")
    emulator.call("tasks.enqueue", task=queued, queue_name="cpu")
    cases = [
        (done, "already completed; nothing to resume", f"ak-remote reproduce {done}"),
        (queued, "is already queued", f"ak-remote status {queued}"),
        ("0" * 32, f"no task {'0' * 32}", "ak-remote status"),
        ("not-an-id", "'not-an-id' is not a task id", "32 hex characters"),
    ]
    before = emulator.count("tasks.enqueue_many")
    for task_id, message, hint in cases:
        result = invoke("resume", task_id, "-q", "cpu")
        assert result.exit_code == 2, result.output
        assert message in result.stderr
        assert hint in result.stderr
        assert "Traceback" not in result.output
    stopped = _task_with_status(emulator, "stopped", "stopped")
    unknown_queue = invoke("resume", stopped, "-q", "no-such-queue")
    assert unknown_queue.exit_code == 2
    assert "queue 'no-such-queue' does not exist" in unknown_queue.stderr
    no_queue = invoke("resume", stopped)
    assert no_queue.exit_code == 2
    assert "pass -q QUEUE" in no_queue.stderr
    assert emulator.count("tasks.enqueue_many") == before  # nothing was changed
    assert emulator.get_task(stopped)["status"] == "stopped"
