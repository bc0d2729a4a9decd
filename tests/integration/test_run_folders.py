"""Issue 13 items 7-12, issue 20 items 1-2: run folders that never lose a model.

Every case runs `python -m ak_remote run` as a user would (offline, tiny wine searches): a
finished run is never replaced silently (nor by the job script itself, nor by --resume over an
unreadable summary), and --overwrite never empties a folder that holds no run. Real signals:
tests/system/test_run_folders.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ak_remote.catalog import PROJECT_ROOT
from ak_remote.contract import sha256_file
from tests.helpers import (
    error_lines,
    job_env,
    read_summary,
    run_captured,
    run_cli,
    run_sets,
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
