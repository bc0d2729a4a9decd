"""Issue 13 items 7-12: run folders and real signals.

Every case runs `python -m ak_remote run` as a user would (offline, tiny wine searches), and
stops, kills or races it with real signals. The training process is found through the run
folder's lock file, which names it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import zipfile
from pathlib import Path

from tests.helpers import (
    JOB,
    alive,
    error_lines,
    read_summary,
    run_cli,
    run_sets,
    start_run,
    wait_for,
)


def test_second_process_is_refused_and_sigterm_stops_the_training(
    home: Path, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    run_dir = tmp_path / "run"
    first, trainer = start_run(home, tmp_path, run_dir, procs, "max_trials=3")
    assert trainer != first.pid
    wait_for(lambda: (run_dir / "summary.json").is_file(), 60, "summary.json")
    assert read_summary(run_dir)["status"] == "running"

    second = run_cli(
        home, tmp_path, "--run-dir", str(run_dir), "--overwrite", *run_sets(), timeout=60
    )
    assert second.returncode == 2, second.stderr[-2000:]
    (line,) = error_lines(second.stderr)
    assert f"is in use by pid {trainer} on " in line
    assert "started " in line
    assert first.poll() is None  # the first run is untouched

    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 143, stderr[-3000:]
    assert not alive(trainer)
    assert error_lines(stderr) == [
        f"Error: stopped by SIGTERM (resume it: ak-remote run {JOB} --resume {run_dir})"
    ]
    record = read_summary(run_dir)
    assert record["status"] == "failed"
    assert record["error"].startswith("stopped by SIGTERM")


def test_training_stops_itself_when_its_cli_dies(
    home: Path, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    run_dir = tmp_path / "run"
    parent, trainer = start_run(home, tmp_path, run_dir, procs, "max_trials=3")
    parent.kill()  # SIGKILL: the CLI gets no chance to pass anything on
    parent.wait()
    wait_for(lambda: not alive(trainer), 60, "the orphaned training process to stop")
    record = read_summary(run_dir)
    assert record["status"] == "failed"
    assert "stopped by SIGTERM" in record["error"]


def test_a_killed_training_is_reported_as_killed_and_resumes_completely(
    home: Path, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    run_dir = tmp_path / "run"
    first, trainer = start_run(home, tmp_path, run_dir, procs, "max_trials=2")
    wait_for(lambda: (run_dir / "search_state.zip").is_file(), 240, "the first trial's snapshot")
    os.kill(trainer, signal.SIGKILL)  # as the out-of-memory killer does
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 5
    assert error_lines(stderr) == [
        "Error: the job was killed by SIGKILL (signal 9) (the out-of-memory killer sends it) "
        f"(resume it: ak-remote run {JOB} --resume {run_dir})"
    ]
    killed = read_summary(run_dir)
    assert killed["status"] == "failed"
    assert "SIGKILL" in killed["error"]
    # The killed run's offline session was closed into a zip, so it can be imported.
    killed_zip = Path(killed["offline_session"])
    assert killed_zip.is_file()
    assert zipfile.is_zipfile(killed_zip)

    resumed = run_cli(home, tmp_path, "--resume", str(run_dir), *run_sets("max_trials=2"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    done = read_summary(run_dir)
    assert done["status"] == "completed"
    assert done["search"]["trials_restored"] >= 1
    # The resumed session carries the restored trial's curves too.
    with zipfile.ZipFile(done["offline_session"]) as archive:
        names = archive.namelist()
        events = [n for n in names if n.endswith(".jsonl") or "metrics" in n]
        text = b"".join(archive.read(n) for n in events).decode(errors="replace")
    assert "trial-00/" in text
    assert "trial-01/" in text


def test_ctrl_c_stops_both_and_reports_once(
    home: Path, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    run_dir = tmp_path / "run"
    first, trainer = start_run(home, tmp_path, run_dir, procs, "max_trials=3", new_session=True)
    wait_for(lambda: (run_dir / "summary.json").is_file(), 60, "summary.json")
    os.killpg(first.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr[-3000:]
    assert not alive(trainer)
    assert error_lines(stderr) == ["Error: interrupted"]
    assert read_summary(run_dir)["status"] == "failed"
