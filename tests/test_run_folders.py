"""Issue 13 items 7-12: run folders that never lose a model, real processes and real signals.

Every case runs `python -m ak_remote run` as a user would (offline, tiny wine searches), and
stops, kills or races it with real signals. The training process is found through the run
folder's lock file, which names it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ak_remote.catalog import PROJECT_ROOT
from ak_remote.contract import sha256_file
from ak_remote.runtime import signals
from tests.helpers import (
    JOB,
    alive,
    error_lines,
    holder_pid,
    job_env,
    read_summary,
    run_captured,
    run_cli,
    run_sets,
    start_cli,
    wait_for,
)


def run_script(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The job script itself, as an agent runs it."""
    script = PROJECT_ROOT / "jobs" / "structured_classifier.py"
    return run_captured([sys.executable, str(script), *args], job_env(home), timeout=120)


def test_a_finished_run_folder_is_never_replaced_silently(home: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = run_cli(home, tmp_path, "--run-dir", str(run_dir), *run_sets("max_trials=1"))
    assert first.returncode == 0, first.stderr[-3000:]
    done = read_summary(run_dir)
    assert done["status"] == "completed"
    model = run_dir / "models" / "model.keras"
    digest = sha256_file(model)
    assert not (run_dir / "models.tmp").exists()
    assert not (run_dir / ".ak-remote.reserve").exists()

    again = run_cli(
        home, tmp_path, "--run-dir", str(run_dir), *run_sets("max_trials=1"), timeout=60
    )
    assert again.returncode == 2
    assert error_lines(again.stderr) == [
        f"Error: the run folder {run_dir} already holds a run (resume it (ak-remote run JOB "
        f"--resume {run_dir}), replace it (--overwrite), or pass a new --run-dir)"
    ]
    assert sha256_file(model) == digest
    assert read_summary(run_dir) == done
    # The job script itself (as an agent runs it) refuses too, and writes nothing.
    direct = run_script(home, "--run-dir", str(run_dir), "--offline")
    assert direct.returncode == 2, direct.stderr[-2000:]
    assert len(error_lines(direct.stderr)) == 1, direct.stderr[-2000:]
    assert sha256_file(model) == digest
    assert read_summary(run_dir) == done

    # --resume over a finished run whose summary cannot be read (or is newer) is refused: it
    # would otherwise retrain and replace the model (issue 20, item 2).
    summary_path = run_dir / "summary.json"
    good = summary_path.read_bytes()
    newer = json.dumps({**done, "schema_version": 99})
    for text, words in (("{", "cannot read"), (newer, "upgrade ak-remote")):
        summary_path.write_text(text)
        state = sha256_file(run_dir / "search_state.zip")
        resumed = run_cli(home, tmp_path, "--resume", str(run_dir), *run_sets("max_trials=1"))
        assert resumed.returncode == 3, resumed.stderr[-3000:]
        (line,) = error_lines(resumed.stderr)
        assert line.startswith(f"Error: cannot resume {run_dir}: "), line
        assert words in line
        assert summary_path.read_text() == text
        assert sha256_file(model) == digest
        assert sha256_file(run_dir / "search_state.zip") == state
        # The job script itself (an agent or a user running it) refuses the same way.
        direct = run_script(home, "--run-dir", str(run_dir), "--resume", "--offline")
        assert direct.returncode == 3, direct.stderr[-2000:]
        assert summary_path.read_text() == text
        assert sha256_file(model) == digest
    summary_path.write_bytes(good)

    # --overwrite replaces the run and only the run: a user's file in the folder stays.
    (run_dir / "notes.txt").write_text("mine\n")
    replaced = run_cli(
        home,
        tmp_path,
        "--run-dir",
        str(run_dir),
        "--overwrite",
        *run_sets("max_trials=1", "seed=7"),
    )
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert read_summary(run_dir)["params"]["seed"] == "7"
    # Only the new run's files: the old trial folders went with --overwrite.
    assert len(list((run_dir / "tensorboard").iterdir())) == 2  # one trial, the final fit
    assert (run_dir / "notes.txt").read_text() == "mine\n"
    assert "kept 1 entry that is not ak-remote's: notes.txt" in replaced.stderr


def test_overwrite_never_empties_a_folder_that_holds_no_run(home: Path, tmp_path: Path) -> None:
    """Issue 20, item 1: `--overwrite` on a user's folder is refused, naming what it holds;
    without the flag the refusal neither calls it a run nor suggests --overwrite."""
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "notes.txt").write_text("x\n")
    (folder / "data").mkdir()
    (folder / "data" / "wine.csv").write_text("a,b\n")
    for flags in (["--overwrite"], []):
        result = run_cli(
            home, tmp_path, "--run-dir", str(folder), *flags, *run_sets("max_trials=1"), timeout=60
        )
        assert result.returncode == 2, result.stderr[-2000:]
        (line,) = error_lines(result.stderr)
        assert "notes.txt" in line
        assert "data" in line
        assert "holds a run" not in line
        assert "--overwrite" not in line
        assert sorted(p.name for p in folder.iterdir()) == ["data", "notes.txt"]
        assert (folder / "notes.txt").read_text() == "x\n"
        assert (folder / "data" / "wine.csv").is_file()


def test_second_process_is_refused_and_sigterm_stops_the_training(
    home: Path, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    run_dir = tmp_path / "run"
    first = start_cli(home, tmp_path, "--run-dir", str(run_dir), *run_sets("max_trials=3"))
    procs.append(first)
    trainer = holder_pid(run_dir)
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
    parent = start_cli(home, tmp_path, "--run-dir", str(run_dir), *run_sets("max_trials=3"))
    procs.append(parent)
    trainer = holder_pid(run_dir)
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
    first = start_cli(home, tmp_path, "--run-dir", str(run_dir), *run_sets("max_trials=2"))
    procs.append(first)
    trainer = holder_pid(run_dir)
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
    first = start_cli(
        home, tmp_path, "--run-dir", str(run_dir), *run_sets("max_trials=3"), new_session=True
    )
    procs.append(first)
    trainer = holder_pid(run_dir)
    wait_for(lambda: (run_dir / "summary.json").is_file(), 60, "summary.json")
    os.killpg(first.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr[-3000:]
    assert not alive(trainer)
    assert error_lines(stderr) == ["Error: interrupted"]
    assert read_summary(run_dir)["status"] == "failed"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    ("signum", "expected"),
    [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, signals.Stopped)],
)
def test_a_stop_signal_dropped_in_a_finalizer_still_stops_the_job(
    signum: int, expected: type[BaseException]
) -> None:
    """A handler's exception raised inside `__del__` is dropped by Python (seen with Ctrl-C
    during TensorFlow's import): the job raises it again at its next safe point."""

    class Finalized:
        def __del__(self) -> None:
            signal.raise_signal(signum)

    previous = signals.install()
    try:
        Finalized()  # collected at once; the handler's exception is printed and dropped
        with pytest.raises(expected):
            signals.raise_if_stopped()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
