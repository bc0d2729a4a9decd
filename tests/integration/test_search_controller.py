"""A local parallel search for real: `ak-remote run JOB --parallel 2` trains its trials in child
processes of the controller (the controller's logic alone: tests/unit/test_search_controller.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_a_local_parallel_search_trains_its_trials_in_child_processes(tmp_path: Path) -> None:
    """`ak-remote run JOB --parallel 2`, for real: two trial processes at once, then the final
    fit. Each trial is a child of the controller (which is a child of the CLI), and stops only
    with the controller; its TensorBoard run is named after the search's trial."""
    import sys

    from tests.helpers import TINY, job_env, run_captured, sets

    work = tmp_path / "work"
    work.mkdir()
    argv = [str(Path(sys.executable).parent / "ak-remote"), "run", "structured-classifier"]
    argv += sets(*TINY, "max_trials=2", "histogram_freq=0")
    argv += ["--parallel", "2", "--run-dir", str(work / "search")]
    proc = run_captured(argv, job_env(tmp_path / "home"), work, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((work / "search" / "summary.json").read_text())
    search = summary["search"]
    assert search["backend"] == "local"
    assert (search["trials_completed"], search["trials_failed"], search["attempts"]) == (2, 0, 2)
    assert {a["worker"] for t in search["trials"] for a in t["attempts"]} == {"local0", "local1"}
    assert summary["export"]["verification"]["passed"] is True
    for trial in ("0", "1"):
        board = work / "search" / "trials" / f"trial_{trial}" / "tensorboard"
        assert sorted(p.name for p in board.iterdir()) == [f"trial-0{trial}"]
        runs = sorted(p.name for p in (board / f"trial-0{trial}").iterdir() if p.is_dir())
        assert runs == ["train", "validation"]
        assert any((board / f"trial-0{trial}" / "train").glob("events.out.tfevents.*"))
