"""Run a job on this machine: validate first, then the job script in a child Python.

The child is the same entry script an agent runs (`jobs/<job>.py`), so a local run and a
remote run execute the same code; the launcher process itself never imports TensorFlow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ak_remote.catalog import Job, get_job
from ak_remote.contract import RUN_COMPLETED, read_summary
from ak_remote.errors import (
    AkRemoteError,
    DataError,
    ExitCode,
    RunFailedError,
    UsageError,
)
from ak_remote.params import Value

RUNS_DIR_ENV = "AK_REMOTE_RUNS_DIR"


@dataclass
class LocalRun:
    """What a finished local run left behind."""

    job: Job
    run_dir: Path
    summary: dict[str, Any]


def check_request(job_name: str, overrides: dict[str, str]) -> tuple[Job, dict[str, Value]]:
    """Check the job, its parameters and its dataset reference; raises UsageError/DataError."""
    job = get_job(job_name)
    values = job.params.resolve(overrides)
    from ak_remote.datasets import check_reference  # cheap: no TensorFlow, no numpy

    check_reference(str(values["dataset"]), job.family, job.kind)
    if not job.script_path.is_file():
        raise UsageError(
            f"job script {job.script} not found next to the ak_remote package",
            "run ak-remote from a checkout of the project, or from the worker image",
        )
    return job, values


def new_run_dir(job: Job, base: Path | None = None) -> Path:
    """A fresh, predictable folder: <runs>/<job>/<UTC timestamp>[-N]."""
    root = base or Path(os.environ.get(RUNS_DIR_ENV, "runs"))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    candidate = root / job.name / stamp
    n = 1
    while candidate.exists():
        n += 1
        candidate = root / job.name / f"{stamp}-{n}"
    return candidate


def run_job(
    job: Job,
    overrides: dict[str, str],
    run_dir: Path,
    offline: bool,
    project: str | None = None,
    task_name: str | None = None,
    resume: bool = False,
    extra_args: Sequence[str] = (),
) -> LocalRun:
    """Run the job script in a child Python and return its summary.

    Raises UsageError/DataError/RunFailedError with the job's own one-line message.
    """
    argv = [sys.executable, str(job.script_path)]
    for key, value in overrides.items():
        argv += ["--set", f"{key}={value}"]
    argv += ["--run-dir", str(run_dir)]
    if resume:  # the job restores run_dir/search_state.zip (ak_remote.runtime.search_state)
        argv.append("--resume")
    if offline:
        argv.append("--offline")
    if project:
        argv += ["--project", project]
    if task_name:
        argv += ["--task-name", task_name]
    argv += list(extra_args)  # e.g. --search-spec FILE: a parallel search's controller
    # The job's own output is progress, not data: it goes to our stderr.
    completed = subprocess.run(argv, stdout=sys.stderr, stderr=None, check=False)
    summary_path = run_dir / "summary.json"
    summary: dict[str, Any] = {}
    if summary_path.is_file():
        summary = read_summary(summary_path)
    if completed.returncode != 0:
        raise _failure(completed.returncode, summary, run_dir)
    if summary.get("status") != RUN_COMPLETED:
        raise RunFailedError(
            f"the job exited cleanly but left no completed summary in {run_dir}",
            "rerun with AK_REMOTE_DEBUG=1 and report it",
        )
    return LocalRun(job, run_dir, summary)


def _failure(code: int, summary: dict[str, Any], run_dir: Path) -> AkRemoteError:
    message = str(summary.get("error") or f"the job exited with code {code}")
    hint = f"see the job's output above; its files are in {run_dir}"
    if code == ExitCode.USAGE:
        return UsageError(message, "check the --set values: `ak-remote jobs JOB` lists them")
    if code == ExitCode.DATA:
        return DataError(message, "check the dataset parameter and the data it points at")
    if code < 0 or code == ExitCode.INTERRUPTED:
        return AkRemoteError("the job was interrupted", hint)
    return RunFailedError(message, hint)
