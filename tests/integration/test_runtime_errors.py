"""Bad input to a job: the right exit code, one clear line, a failed summary, no model reported.

Each case runs the job script as a subprocess, as an agent would. None of them gets as far as
TensorFlow: parameters and dataset references are checked before the ClearML task exists, and
data is loaded before TensorFlow is imported, so these stay quick.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import job_env, run_captured, run_job

WINE_HEADER = "alcohol,ash,hue,cultivar\n"


def _csv(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _broken_images(root: Path) -> str:
    from PIL import Image

    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), i * 40, dtype=np.uint8)).save(root / label / f"{i}.png")
    (root / "b" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    return str(root)


def _broken_npz(path: Path) -> str:
    np.savez(path, x=np.zeros((20, 8, 8)), y=np.arange(20) % 2)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated: a partial download
    return str(path)


def _single_class(d: Path) -> list[str]:
    rows = "13.1,2.3,1.0,x\n" * 30
    return [f"dataset={_csv(d / 'one.csv', WINE_HEADER + rows)}"]


def _no_rating(d: Path) -> list[str]:
    table = _csv(d / "t.csv", "text,stars\ngood,5\nbad,1\n")
    return [f"dataset={table}", "target=rating"]


# case id: (job, --set values built in a data folder, exit code, message, task created)
CASES: dict[str, tuple[str, Callable[[Path], list[str]], int, str, bool]] = {
    "unknown-parameter": (
        "structured-classifier", lambda d: ["nope=1"], 2, "unknown parameter 'nope'", False
    ),
    "wrong-type": (
        "structured-classifier", lambda d: ["epochs=ten"], 2, "epochs: 'ten' is not a valid int",
        False,
    ),
    "out-of-range": (
        "image-classifier", lambda d: ["validation_split=0.9"], 2,
        "validation_split: 0.9 is above 0.5", False,
    ),
    "unknown-dataset": (
        "structured-classifier", lambda d: ["dataset=mnist"], 3, "unknown dataset 'mnist'", False
    ),
    "missing-file": (
        "text-classifier", lambda d: [f"dataset={d / 'nothere.csv'}"], 3, "does not exist", False
    ),
    "empty-file": (
        "structured-regressor", lambda d: [f"dataset={_csv(d / 'empty.csv', '')}"], 3,
        "is empty", False,
    ),
    "header-only-csv": (
        "structured-classifier", lambda d: [f"dataset={_csv(d / 'h.csv', WINE_HEADER)}"], 3,
        "has a header but no rows", True,
    ),
    "single-class": ("structured-classifier", _single_class, 3, "single class ('x')", True),
    "missing-target": (
        "text-regressor", _no_rating, 3, "target column 'rating' is not in", True
    ),
    "corrupt-image": (
        "image-classifier", lambda d: [f"dataset={_broken_images(d / 'images')}"], 3,
        "cannot read image b/3.png", True,
    ),
    "corrupt-npz": (
        "image-regressor", lambda d: [f"dataset={_broken_npz(d / 'digits.npz')}"], 3,
        "cannot read digits.npz", True,
    ),
}  # fmt: skip


@pytest.mark.parametrize(
    ("job", "sets", "code", "message", "task_created"),
    list(CASES.values()),
    ids=list(CASES),
)
def test_bad_input_fails_cleanly(
    tmp_path: Path,
    job: str,
    sets: Callable[[Path], list[str]],
    code: int,
    message: str,
    task_created: bool,
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    proc = run_job(job, sets(data_dir), tmp_path / "work", tmp_path / "home")
    assert proc.returncode == code, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, proc.stderr
    assert message in errors[0]
    assert errors[0].endswith(")"), "the line ends with a hint in parentheses"
    assert "Traceback" not in proc.stderr

    run_dir = tmp_path / "work" / "run"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"] == errors[0].removeprefix("Error: ")
    assert summary["export"] is None
    assert summary["model_registration"] is None
    assert not (run_dir / "models").exists()
    if not task_created:
        # Rejected before anything was created: no task, no offline session.
        assert summary["task_id"] is None
        assert not (tmp_path / "home" / ".clearml" / "cache" / "offline").exists()
        return
    assert summary["task_id"].startswith("offline-")
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"offline session: {summary['offline_session']}"
    with zipfile.ZipFile(summary["offline_session"]) as archive:
        recorded = [n for n in archive.namelist() if n.endswith("/summary.json/summary.json")]
        assert recorded, archive.namelist()
        assert json.loads(archive.read(recorded[0]))["status"] == "failed"
        assert not [n for n in archive.namelist() if "model.keras" in n or "savedmodel" in n]


def test_unknown_flag_is_a_usage_error(tmp_path: Path) -> None:
    import sys

    from ak_remote.catalog import JOBS

    argv = [sys.executable, str(JOBS["image-classifier"].script_path), "--bogus"]
    proc = run_captured(argv, job_env(tmp_path / "home"), tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "Error: unrecognized arguments: --bogus (usage: python jobs/image_classifier.py [-h] "
        "[--set KEY=VALUE] [--run-dir RUN_DIR]"
    )
    assert lines[0].endswith("])")
    assert not (tmp_path / "runs").exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = run_job(
        "structured-classifier",
        ["dataset=mnist"],
        tmp_path / "work",
        tmp_path / "home",
        {"AK_REMOTE_DEBUG": "1"},
    )
    assert proc.returncode == 3
    assert "Traceback" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: unknown dataset 'mnist'")
