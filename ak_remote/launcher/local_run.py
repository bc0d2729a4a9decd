"""Run a job on this machine: validate first, then the job script in a child Python.

The child is the same entry script an agent runs (`jobs/<job>.py`), so a local run and a
remote run execute the same code; the launcher process itself never imports TensorFlow.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ak_remote import ui
from ak_remote.catalog import Job, get_job
from ak_remote.contract import PARENT_PID_ENV, RUN_FAILED, RUN_RUNNING, SUMMARY_FILE
from ak_remote.errors import (
    AkRemoteError,
    DataError,
    ExitCode,
    InternalError,
    Interrupted,
    RunFailedError,
    UsageError,
)
from ak_remote.params import Value
from ak_remote.process import Tied
from ak_remote.summary import RunSummary, read_summary

RUNS_DIR_ENV = "AK_REMOTE_RUNS_DIR"


@dataclass
class LocalRun:
    """What a finished local run left behind."""

    job: Job
    run_dir: Path
    summary: RunSummary


def check_request(job_name: str, overrides: dict[str, str]) -> tuple[Job, dict[str, Value]]:
    """Check the job, its parameters and its dataset reference; raises UsageError/DataError."""
    job = get_job(job_name)
    values = job.params.resolve(overrides)
    from ak_remote.datasets.references import (  # no TensorFlow, no numpy
        check_reference,
        expand_reference,
    )

    ref = check_reference(str(values["dataset"]), job.family, job.kind)
    if ref.kind == "remote":
        # The job inherits this environment: each ${NAME} must be set, and a whole-value one
        # must hold a URL the job can read.
        expand_reference(ref.value, job.family, job.kind)
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
    overwrite: bool = False,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> LocalRun:
    """Run the job script in a child Python and return its summary; `env` adds variables to
    its environment.

    Raises UsageError/DataError/RunFailedError with the job's own one-line message.
    """
    from ak_remote.datasets.secrets import job_set_arguments

    sets, secret_env = job_set_arguments(overrides)  # credentials never in the job's argv
    argv = [sys.executable, str(job.script_path), *sets]
    argv += ["--run-dir", str(run_dir)]
    if resume:  # the job restores run_dir/search_state.zip (ak_remote.runtime.search_state)
        argv.append("--resume")
    if overwrite:
        argv.append("--overwrite")
    if offline:
        argv.append("--offline")
    if project:
        argv += ["--project", project]
    if task_name:
        argv += ["--task-name", task_name]
    argv += list(extra_args)  # e.g. --search-spec FILE: a parallel search's controller
    if resume:
        _close_earlier_session(run_dir)
    tied = _run_child(argv, {**secret_env, **(env or {})})
    code = tied.code
    summary_path = run_dir / SUMMARY_FILE
    summary: RunSummary | None = None
    if summary_path.is_file():
        try:
            summary = read_summary(summary_path)
        except DataError:
            summary = None
    if tied.interrupted and code != 0:
        raise _interrupted(tied, summary, run_dir, job.name)
    if code != 0:
        raise _failure(code, summary, run_dir, job.name)
    if summary is None or not summary.completed:
        raise RunFailedError(
            f"the job exited cleanly but left no completed summary in {run_dir}",
            "rerun with AK_REMOTE_DEBUG=1 and report it",
        )
    return LocalRun(job, run_dir, summary)


def _run_child(argv: list[str], extra_env: dict[str, str]) -> Tied:
    """Run the job; how it ended (its exit status: negative when killed by that signal).

    Stopping this CLI stops the job (ak_remote.process); if this process dies outright, the job
    also notices through PARENT_PID_ENV (any OS) and stops itself, marking its run failed.
    """
    from ak_remote.config import load_config
    from ak_remote.process import run_tied

    env = {**os.environ, **extra_env, PARENT_PID_ENV: str(os.getpid())}
    grace = load_config().interrupt_grace
    # The job's own output is progress, not data: it goes to our stderr.
    return run_tied(argv, env, stdout=sys.stderr, say=ui.info, grace=grace)


def _interrupted(
    tied: Tied, summary: RunSummary | None, run_dir: Path, job_name: str
) -> AkRemoteError:
    """Ctrl-C is exit 130 however the job ended; an escalation is said as such."""
    hint = f"resume it: ak-remote run {job_name} --resume {run_dir}"
    if tied.escalated is None:
        if tied.code == int(ExitCode.INTERRUPTED):
            error = Interrupted((summary.error if summary else None) or "interrupted", hint)
            error.reported = True  # the job printed its own line
            return error
        return Interrupted(f"interrupted; the job ended with {_status_text(tied.code)}", hint)
    message = (
        f"interrupted; the job did not stop within {tied.waited:.0f} s of Ctrl-C and was sent "
        f"{tied.escalated}"
    )
    if tied.code < 0:  # killed: the job could not close its run, so it is closed here
        message += f"; it was killed by {_signal_name(-tied.code)}"
        mark_failed(run_dir, summary, message)
        _close_offline_session(summary)
    return Interrupted(message, hint)


def _status_text(code: int) -> str:
    return _signal_name(-code) if code < 0 else f"exit code {code}"


def mark_failed(run_dir: Path, summary: RunSummary | None, message: str) -> None:
    """Record in summary.json that the job died without closing its run (it said "running")."""
    if summary is None or summary.status != RUN_RUNNING:
        return
    summary.status, summary.error = RUN_FAILED, message
    path = run_dir / SUMMARY_FILE
    tmp = path.with_name(f".{SUMMARY_FILE}.tmp")
    try:
        tmp.write_text(summary.to_json(), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def _close_earlier_session(run_dir: Path) -> None:
    """Zip the offline session of a job killed together with its CLI (nothing closed it), so
    it can still be imported; the resumed run records a session of its own."""
    try:
        earlier = read_summary(run_dir / SUMMARY_FILE)
    except DataError:
        return
    if earlier.offline_session and _close_offline_session(earlier):
        ui.info(
            "the run's earlier offline session was never closed (its job was killed): zipped "
            f"it; import it with: ak-remote import-offline {earlier.offline_session}"
        )


def _close_offline_session(summary: RunSummary | None) -> bool:
    """Zip a killed job's offline session folder, which its own close would have zipped; True
    when it did."""
    from ak_remote.launcher.offline import close_session

    return bool(
        summary and summary.offline_session and close_session(Path(summary.offline_session))
    )


def _failure(code: int, summary: RunSummary | None, run_dir: Path, job_name: str) -> AkRemoteError:
    hint = f"see the job's output above; its files are in {run_dir}"
    if code < 0:
        name = _signal_name(-code)
        why = " (the out-of-memory killer sends it)" if -code == signal.SIGKILL else ""
        message = f"the job was killed by {name}{why}"
        mark_failed(run_dir, summary, message)
        _close_offline_session(summary)
        return RunFailedError(message, f"resume it: ak-remote run {job_name} --resume {run_dir}")
    known = {int(c) for c in ExitCode} - {int(ExitCode.OK)}
    if code not in known:
        return RunFailedError(f"the job exited with code {code}", hint)
    # The job printed its own one-line error; it is not repeated here.
    message = (summary.error if summary else None) or f"the job exited with code {code}"
    error: AkRemoteError = {
        ExitCode.USAGE: UsageError,
        ExitCode.DATA: DataError,
        ExitCode.INTERNAL: InternalError,
    }.get(ExitCode(code), RunFailedError)(message, hint)
    error.exit_code = ExitCode(code)
    error.reported = True
    return error


def _signal_name(signum: int) -> str:
    try:
        return f"{signal.Signals(signum).name} (signal {signum})"
    except ValueError:
        return f"signal {signum}"
