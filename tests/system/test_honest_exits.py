"""Issue 13 items 10 and 11: full and read-only disks end a run with its exit code and one line.

Real `ak-remote run` processes on small tmpfs mounts (these tests run as root, as CI does; each
mount is unmounted in teardown).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    JOB,
    error_lines,
    read_summary,
    run_cli,
    run_sets,
    start_run,
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
    proc, _ = start_run(home, tmp_path, run_dir, procs, "max_trials=3")
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
