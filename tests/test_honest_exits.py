"""Issue 13 items 10, 11 and 13: the exit code the README promises, one error line, a true record.

Real `ak-remote run` processes; the full-disk and read-only cases use small tmpfs mounts
(these tests run as root, as CI does; each mount is unmounted in teardown).
"""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ak_remote.runtime.search_state import FORMAT, MANIFEST
from tests.helpers import (
    JOB,
    error_lines,
    holder_pid,
    read_summary,
    run_cli,
    run_sets,
    start_cli,
    wait_for,
)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Mount a small tmpfs: tmpfs(size="400k", readonly=False) -> its folder."""
    mounted: list[Path] = []

    def mount(size: str, readonly: bool = False) -> Path:
        target = tmp_path / f"mnt{len(mounted)}"
        target.mkdir()
        options = f"size={size}" + (",ro" if readonly else "")
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], check=True)
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


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


def test_a_read_only_run_folder_is_one_line_and_exit_2(
    home: Path, tmp_path: Path, tmpfs: Callable[..., Path]
) -> None:
    folder = tmpfs("100k", readonly=True)
    result = run_cli(home, tmp_path, "--run-dir", str(folder / "run"), *run_sets(), timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert error_lines(result.stderr) == [
        f"Error: cannot write to the run folder {folder / 'run'}: Read-only file system "
        "(pass a --run-dir you can write to)"
    ]


def test_a_full_disk_ends_the_run_with_one_line_and_exit_5(
    home: Path, tmp_path: Path, tmpfs: Callable[..., Path]
) -> None:
    run_dir = tmpfs("400k") / "run"
    result = run_cli(
        home, tmp_path, "--run-dir", str(run_dir), *run_sets("max_trials=1"), timeout=240
    )
    assert result.returncode == 5, result.stderr[-3000:]
    (line,) = error_lines(result.stderr)
    assert line.startswith(f"Error: no space left on the device of the run folder {run_dir}")
    assert "Traceback" not in result.stderr
    record = read_summary(run_dir)
    assert record["status"] == "failed"
    assert record["error"].startswith("no space left")


def test_a_run_that_filled_its_disk_resumes_once_space_is_freed(
    home: Path, tmp_path: Path, tmpfs: Callable[..., Path], procs: list[subprocess.Popen[str]]
) -> None:
    mount = tmpfs("60m")
    run_dir = mount / "run"
    proc = start_cli(home, tmp_path, "--run-dir", str(run_dir), *run_sets("max_trials=3"))
    procs.append(proc)
    holder_pid(run_dir)
    wait_for(lambda: (run_dir / "search_state.zip").is_file(), 240, "the first snapshot")
    filler = mount / "filler"
    free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    with filler.open("wb") as handle:  # leave about 100 KB: the next checkpoint cannot fit
        os.posix_fallocate(handle.fileno(), 0, max(free - 100 * 1024, 1))
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 5, stderr[-3000:]
    assert error_lines(stderr) == [
        f"Error: no space left on the device of the run folder {run_dir} (free some space, "
        f"then resume: ak-remote run {JOB} --resume {run_dir})"
    ]
    assert read_summary(run_dir)["status"] == "failed"

    filler.unlink()
    resumed = run_cli(home, tmp_path, "--resume", str(run_dir), *run_sets("max_trials=3"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    done = read_summary(run_dir)
    assert done["status"] == "completed"
    assert done["search"]["trials_restored"] >= 1


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
