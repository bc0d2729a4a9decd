"""Issue 13 items 10, 11 and 13: the exit code the README promises, one error line, a true record.

Real `ak-remote run` processes refused before training, and a run whose dataset URL carries
credentials. Full and read-only disks: tests/system/test_honest_exits.py.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from ak_remote.runtime.search_state import FORMAT, MANIFEST
from tests.helpers import (
    JOB,
    error_lines,
    read_summary,
    run_cli,
    run_sets,
)


def test_an_unknown_objective_is_refused_before_anything_starts(home: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(
        home, tmp_path, "--run-dir", str(run_dir), *run_sets("objective=nope"), timeout=60
    )
    assert result.returncode == 2
    (line,) = error_lines(result.stderr)
    assert "objective: 'nope' is not one of val_accuracy, val_loss, accuracy, loss" in line
    assert not run_dir.exists()


def _snapshot(run_dir: Path, oracle: object) -> None:
    run_dir.mkdir(parents=True)
    manifest = {"format": FORMAT, "job": JOB, "params": {}, "trials": []}
    with zipfile.ZipFile(run_dir / "search_state.zip", "w") as archive:
        archive.writestr(MANIFEST, json.dumps(manifest))
        archive.writestr("oracle.json", json.dumps(oracle))
        archive.writestr("tuner0.json", "{}")


def test_a_snapshot_with_wrong_content_exits_3_before_resuming(home: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _snapshot(run_dir, {"ongoing_trials": ["not", "a", "mapping"], "hyperparameters": {}})
    result = run_cli(home, tmp_path, "--resume", str(run_dir), *run_sets(), timeout=60)
    assert result.returncode == 3, result.stderr[-2000:]
    (line,) = error_lines(result.stderr)
    assert "the search state search_state.zip is unusable: oracle.json" in line
    assert "search resumed" not in result.stderr
    assert not (run_dir / "summary.json").exists()


def test_credentials_in_a_dataset_url_never_reach_the_record(home: Path, tmp_path: Path) -> None:
    """The URL cannot be fetched (nothing listens there): the run fails on the data, exit 3."""
    url = "http://alice:s3cret@127.0.0.1:9/wine.csv"
    run_dir = tmp_path / "run"
    result = run_cli(
        home, tmp_path, "--run-dir", str(run_dir), *run_sets(f"dataset={url}"), timeout=180
    )
    assert result.returncode == 3, result.stderr[-3000:]
    assert len(error_lines(result.stderr)) == 1
    assert "s3cret" not in result.stderr
    assert "s3cret" not in result.stdout
    assert "s3cret" not in (run_dir / "summary.json").read_text()
    session = Path(read_summary(run_dir)["offline_session"])
    with zipfile.ZipFile(session) as archive:
        for name in archive.namelist():
            assert b"s3cret" not in archive.read(name), name
