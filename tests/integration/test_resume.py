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
from ak_remote.runtime.search_state import (
    MANIFEST,
    STATE_FILE,
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
    agent_emulator: Emulator, tmp_path: Path
) -> None:
    emulator = agent_emulator
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
