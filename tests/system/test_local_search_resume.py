"""System tier (real processes and a real SIGTERM). Issue 20, item 3: a local parallel search
(`ak-remote run JOB --parallel 2`) that was stopped continues with `--resume`, as its message
says: trials finished before are kept, the ones in flight are trained again (as the same
attempt, not a retry), then the final fit; given more trials on resume, it carries on to them
(issue 21, growth), and fewer are refused. Item 8: its summary records the final fit's
environment as the model's, the controller's apart."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import JOB, job_env, run_captured, sets

SETS = ["max_trials=3", "epochs=2", "max_samples=120", "histogram_freq=0", "batch_size=16"]


def ak_remote(*args: str, settings: list[str] = SETS) -> list[str]:
    return [str(Path(sys.executable).parent / "ak-remote"), "run", JOB, *args, *sets(*settings)]


GROWN = [s if not s.startswith("max_trials=") else "max_trials=4" for s in SETS]
SHRUNK = [s if not s.startswith("max_trials=") else "max_trials=2" for s in SETS]


def controller_state(search: Path) -> dict[str, Any] | None:
    try:
        with zipfile.ZipFile(search / "search_controller.zip") as archive:
            state: dict[str, Any] = json.loads(archive.read("controller.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    return state


def completed(state: dict[str, Any] | None) -> list[str]:
    trials = (state or {}).get("trials") or []
    return [t["trial_id"] for t in trials if t["state"] == "completed"]


@pytest.mark.slow
def test_a_stopped_local_parallel_search_resumes_as_its_message_says(tmp_path: Path) -> None:
    work, search = tmp_path / "work", tmp_path / "work" / "search"
    work.mkdir()
    env = job_env(tmp_path / "home")
    first = subprocess.Popen(
        ak_remote("--parallel", "2", "--run-dir", str(search)),
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 400
        while not completed(controller_state(search)) and time.monotonic() < deadline:
            assert first.poll() is None, first.communicate()[1][-3000:]
            time.sleep(0.5)
        before = controller_state(search)
        assert completed(before), "no trial completed in time"
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 143, stderr[-3000:]
    hint = f"(resume it: ak-remote run {JOB} --resume {search})"
    assert any(line.endswith(hint) for line in stderr.splitlines()), stderr[-3000:]
    stopped = json.loads((search / "summary.json").read_text())
    assert stopped["status"] == "failed"
    state = controller_state(search)
    kept = {t["trial_id"]: t for t in (state or {})["trials"] if t["state"] == "completed"}
    assert kept

    # Fewer trials than it has: refused before anything runs.
    shrunk = run_captured(ak_remote("--resume", str(search), settings=SHRUNK), env, work)
    assert shrunk.returncode == 2, shrunk.stderr[-3000:]
    assert "it can grow, not shrink" in shrunk.stderr
    assert controller_state(search) == state
    # Resumed with one trial more (issue 21, growth): the controller carries on to 4.
    resumed = run_captured(
        ak_remote("--resume", str(search), settings=GROWN), env, work, timeout=900
    )
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"search resumed: {len(kept)} trial(s) finished before are not trained again" in (
        resumed.stderr
    )
    summary = json.loads((search / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["params"]["max_trials"] == "4"
    record = summary["search"]
    assert record["role"] == "controller"
    assert record["trials_completed"] == 4
    assert record["attempts"] == 4  # in-flight trials were trained again, not retried
    by_id = {t["trial"]: t for t in record["trials"]}
    for trial_id, before_trial in kept.items():
        # Kept as they were: the same attempt, the same objective, not trained again.
        assert by_id[trial_id]["objective"] == before_trial["objective"]
        assert [a["handle"] for a in by_id[trial_id]["attempts"]] == [
            a["handle"] for a in before_trial["attempts"]
        ]
    assert summary["export"]["verification"]["passed"] is True
    assert (search / "final" / "models" / "serving").is_dir()
    # Item 8: the search records the model's environment (the final fit's), the controller's
    # own apart.
    final = json.loads((search / "final" / "summary.json").read_text())
    assert summary["reproducibility"] == final["reproducibility"]
    assert summary["controller_reproducibility"]["python"] == final["reproducibility"]["python"]
    assert summary["controller_reproducibility"]["seed"] == final["reproducibility"]["seed"]
