"""Resumable searches: a search hard-killed after some trials continues where it left off.

Locally: the job script is SIGKILLed once its search state holds a finished trial, then
`ak-remote run --resume` continues it. Through a real clearml-agent on the emulator: the agent's
whole process tree is SIGKILLed mid-search, the task is marked stopped (as the server's watchdog
does), `ak-remote resume ID` enqueues the same task again and a fresh agent finishes it. Both
check that finished trials were not trained again (their trial.json untouched, no new epoch
series for them), that the total is max_trials and that the export verified.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import zipfile
from pathlib import Path

import psutil
import pytest

from ak_remote.catalog import PROJECT_ROOT, get_job
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
from tests.emulator.agent import running_agent, wait_for_status
from tests.emulator.server import Emulator
from tests.helpers import (
    MAX_TRIALS,
    SEARCH_PARAMS,
    assert_small_search_state,
    invoke,
    job_env,
    ok,
    run_captured,
    search_manifest,
    sets,
)


def _trial_files(zip_bytes: bytes) -> dict[str, bytes]:
    """trial id -> trial.json bytes of the snapshot's finished trials."""
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
        manifest = json.loads(archive.read(MANIFEST))
        return {
            t["id"]: archive.read(f"trial_{t['id']}/trial.json")
            for t in manifest["trials"]
            if t["status"] == "COMPLETED"
        }


def _epoch_series(session_zip: Path) -> set[str]:
    """The per-trial series names an offline session reported (`trial-00/train`, ...)."""
    series: set[str] = set()
    with zipfile.ZipFile(session_zip) as archive:
        for line in archive.read("metrics.jsonl").decode().splitlines():
            for event in json.loads(line):
                if event["type"] == "training_stats_scalar" and event["metric"] == "epoch_loss":
                    series.add(event["variant"])
    return series


def _finished_trials(project_dir: Path) -> dict[str, bytes]:
    result = {}
    for path in project_dir.glob("trial_*/trial.json"):
        if json.loads(path.read_bytes())["status"] == "COMPLETED":
            result[path.parent.name.removeprefix("trial_")] = path.read_bytes()
    return result


def _cli(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """`ak-remote ...` in a child (run spawns the job with our stderr as its stdout)."""
    return run_captured([sys.executable, "-m", "ak_remote", *args], job_env(home), cwd, 300)


@pytest.mark.slow
def test_a_killed_local_search_resumes_without_retraining(tmp_path: Path) -> None:
    home, run_dir = tmp_path / "home", tmp_path / "run"  # HOME: conftest's isolated one
    script = PROJECT_ROOT / get_job("structured-classifier").script
    options = sets(*(f"{key}={value}" for key, value in SEARCH_PARAMS.items()))
    log = (tmp_path / "first.log").open("wb")
    first = subprocess.Popen(
        [sys.executable, str(script), *options, "--run-dir", str(run_dir), "--offline"],
        cwd=tmp_path,
        env=job_env(home),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    state_zip = run_dir / STATE_FILE
    deadline = time.monotonic() + 120
    snapshot = b""
    while time.monotonic() < deadline and first.poll() is None:
        if state_zip.is_file():
            snapshot = state_zip.read_bytes()
            if search_manifest(snapshot)["trials_finished"] >= 1:
                break
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    log.close()
    assert first.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    # Died hard: nothing closed the run, whose summary still says what it said from the start.
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"
    snapshot = state_zip.read_bytes()  # the last complete snapshot before the kill
    restored = _trial_files(snapshot)
    assert 1 <= len(restored) < MAX_TRIALS
    assert_small_search_state(snapshot)

    # Search parameters are kept: changing one is refused before anything runs.
    changed = _cli(
        "run",
        "structured-classifier",
        "--resume",
        str(run_dir),
        "--set",
        "epochs=2",
        cwd=tmp_path,
        home=home,
    )
    assert changed.returncode == 2, changed.stderr
    assert "a resumed search keeps its search parameters: epochs=2 (saved: 1)" in changed.stderr

    # The CLI takes the saved search parameters: no --set needed.
    resumed = _cli(
        "run",
        "structured-classifier",
        "--resume",
        str(run_dir),
        "--offline",
        "--json",
        cwd=tmp_path,
        home=home,
    )
    assert resumed.returncode == 0, resumed.stderr[-5000:]
    summary = json.loads(resumed.stdout)
    assert summary["status"] == "completed"
    search = summary["search"]
    assert search["resumed"] is True
    assert search["restored_from"] == "run folder"
    assert search["trials_restored"] == len(restored)
    assert search["trials_trained_this_run"] == MAX_TRIALS - len(restored)
    assert search["max_trials"] == MAX_TRIALS
    assert summary["params"]["epochs"] == "1"
    assert summary["params"]["max_trials"] == "3"
    assert summary["export"]["verification"]["passed"] is True
    assert "search resumed from the run folder" in resumed.stderr

    project = run_dir / "autokeras" / "search"
    finished = _finished_trials(project)
    assert len(finished) == MAX_TRIALS
    for trial_id, data in restored.items():
        assert finished[trial_id] == data  # untouched: never trained again
        # ... and without weights: the restored trials' checkpoints are gone with the kill.
        assert not (project / f"trial_{trial_id}" / "checkpoint.weights.h5").exists()
    # The resumed run's session has every finished trial's curves: the ones it trained, and
    # the restored ones replayed from their event files (issue 13 item 12); that they were not
    # trained again is what the untouched trial.json files and event-file counts show.
    series = _epoch_series(Path(summary["offline_session"]))
    trials = {f"trial-{int(t):02d}/train" for t in finished}
    assert {s for s in series if s.startswith("trial-")} == trials | {
        s.replace("train", "validation") for s in trials
    }
    # TensorBoard: one folder per trial (the interrupted one's partial logs were dropped), each
    # written once, plus the final fit.
    board = run_dir / "tensorboard"
    runs = {f"trial-{int(t):02d}" for t in finished}
    assert {p.name for p in board.iterdir() if p.is_dir()} == runs | {"final"}
    for run in runs:
        assert len(list((board / run / "train").glob("events.*"))) == 1
    final = state_zip.read_bytes()
    assert search_manifest(final)["trials_finished"] == MAX_TRIALS
    assert_small_search_state(final)

    # A completed run is not resumed again.
    again = _cli("run", "structured-classifier", "--resume", str(run_dir), cwd=tmp_path, home=home)
    assert again.returncode == 2
    assert "already completed; nothing to resume" in again.stderr


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


def _artifact_bytes(emulator: Emulator, task_id: str, key: str) -> bytes | None:
    """The stored file of the task's artifact `key`, as the fileserver holds it."""
    artifacts = emulator.get_task(task_id).get("execution", {}).get("artifacts") or []
    uri = next((a["uri"] for a in artifacts if a.get("key") == key), None)
    if uri is None:
        return None
    return emulator.state.files.get(urllib.parse.unquote(urllib.parse.urlparse(uri).path))


def _kill_tree(pid: int) -> None:
    """SIGKILL a process group and every descendant (a preempted host: nothing cleans up)."""
    try:
        tree = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    os.killpg(pid, signal.SIGKILL)
    for child in tree:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(tree, timeout=10)


@pytest.mark.slow
def test_a_run_killed_on_its_agent_resumes_on_a_fresh_one(
    clearml_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = clearml_emulator
    monkeypatch.setenv("AK_REMOTE_POLL_INTERVAL", "1")
    monkeypatch.chdir(tmp_path)
    ok(invoke("templates", "sync"))
    emulator.create_queue("cpu")
    options = sets(*(f"{key}={value}" for key, value in SEARCH_PARAMS.items()))
    task_id = ok(invoke("launch", "structured-classifier", "-q", "cpu", *options)).stdout.split()[0]

    with running_agent(emulator, "cpu", log_dir=tmp_path / "agent1") as agent:
        deadline = time.monotonic() + 150
        while True:
            snapshot = _artifact_bytes(emulator, task_id, "search_state")
            if snapshot and search_manifest(snapshot)["trials_finished"] >= 1:
                break
            assert time.monotonic() < deadline, agent.log()[-4000:]
            assert emulator.get_task(task_id)["status"] in ("queued", "in_progress")
            time.sleep(0.1)
        _kill_tree(agent.process.pid)
    assert emulator.get_task(task_id)["status"] == "in_progress"  # nobody told the server
    # The server's watchdog stops a task whose worker went silent.
    emulator.call("tasks.stopped", task=task_id, force=True, status_message="worker lost")
    snapshot = _artifact_bytes(emulator, task_id, "search_state")
    assert snapshot is not None
    assert_small_search_state(snapshot)
    restored = _trial_files(snapshot)
    assert 1 <= len(restored) < MAX_TRIALS

    resumed_at_ms = time.time() * 1000
    with running_agent(emulator, "cpu", log_dir=tmp_path / "agent2") as agent:
        result = invoke("resume", task_id, "--wait")  # no -q: the queue it last ran on
        assert result.exit_code == 0, f"{result.output}\n--- agent\n{agent.log()[-6000:]}"
        assert result.stdout.strip() == task_id
        assert "on queue cpu: its saved search state is restored" in result.stderr
        task = wait_for_status(emulator, task_id, agent=agent)
    assert task["status"] == "completed"

    summary_bytes = _artifact_bytes(emulator, task_id, "summary.json")
    assert summary_bytes is not None
    summary = json.loads(summary_bytes)
    assert summary["task_id"] == task_id
    assert summary["status"] == "completed"
    search = summary["search"]
    assert search["resumed"] is True
    assert search["restored_from"] == "task artifact"
    assert search["trials_restored"] == len(restored)
    assert search["trials_trained_this_run"] == MAX_TRIALS - len(restored)
    assert summary["export"]["verification"]["passed"] is True
    assert _artifact_bytes(emulator, task_id, "model.keras")
    final = _artifact_bytes(emulator, task_id, "search_state")
    assert final is not None
    assert search_manifest(final)["trials_finished"] == MAX_TRIALS
    finished = _trial_files(final)
    for trial_id, data in restored.items():
        assert finished[trial_id] == data  # untouched: never trained again
    # No epoch of a restored trial was reported after the resume.
    restored_series = {f"trial-{int(t):02d}/{s}" for t in restored for s in ("train", "validation")}
    late = [
        e
        for e in emulator.state.task_events(task_id, "training_stats_scalar")
        if e.get("variant") in restored_series and float(e.get("timestamp") or 0) > resumed_at_ms
    ]
    assert not late, late[:3]
    new_series = {
        e.get("variant")
        for e in emulator.state.task_events(task_id, "training_stats_scalar")
        if float(e.get("timestamp") or 0) > resumed_at_ms and e.get("metric") == "epoch_loss"
    }
    assert {f"trial-{int(t):02d}/train" for t in finished if t not in restored} <= new_series
