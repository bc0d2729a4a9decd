"""Where a search's candidates train: ClearML tasks on a queue, or processes on this machine.

ClearML: each attempt is one `tasks.clone` of the job template (the search's parameters, the
candidate in `Search/spec`, the search as parent, named `trial 07`) and one
`tasks.enqueue_many`; one `tasks.get_all` per poll reads every attempt in flight (status,
last_update, worker, last_metrics: the objective, and each trial's epoch and best objective so
far from its `objective by epoch` series); one `events.scalar_metrics_iter_histogram` per
finished or stopped trial reads its whole per-epoch curve (the median rule's memory). No SDK
Task objects.

Local: each attempt is the job script in a child process (its own run folder under the search's
`trials/`), one GPU each through CUDA_VISIBLE_DEVICES when the machine has GPUs; its progress is
the `epochs.json` it rewrites every epoch, its result the summary.json it leaves.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ak_remote.catalog import Job
from ak_remote.contract import (
    CREATED,
    EPOCH_OBJECTIVE_TITLE,
    EPOCH_SERIES,
    EPOCHS_FILE,
    FAILED,
    FINAL_FIT_TAG,
    FINISHED_OK,
    IN_PROGRESS,
    LAUNCH_TAG_PREFIX,
    OBJECTIVE_TITLE,
    PARAM_SECTION,
    PARENT_PID_ENV,
    QUEUED,
    RUN_RUNNING,
    RUN_TAG,
    SEARCH_OF_PREFIX,
    SEARCH_SECTION,
    STOPPED,
    STOPPED_EARLY_TAG,
    SUMMARY_FILE,
    TRIAL_TAG_PREFIX,
    job_tag,
)
from ak_remote.datasets.secrets import job_set_arguments
from ak_remote.errors import DataError, RunFailedError, ServerError
from ak_remote.launcher.local_run import mark_failed
from ak_remote.search import controller as ctl
from ak_remote.search.spec import SearchSpec
from ak_remote.summary import RunSummary, read_summary

POLL_FIELDS = [
    "id",
    "status",
    "status_message",
    "status_reason",
    "last_update",
    "last_worker",
    "last_metrics",
]


def trial_name(trial_id: str, attempt: int, final: bool) -> str:
    """`trial 07`, `final fit`, `trial 03 (retry 1)`: names that sort in a task list."""
    number = f"{int(trial_id):02d}" if trial_id.isdigit() else trial_id
    name = "final fit" if final else f"trial {number}"
    return f"{name} (retry {attempt})" if attempt else name


def search_hyperparams(
    job: Job, general: Mapping[str, str], spec: SearchSpec
) -> dict[str, dict[str, dict[str, str]]]:
    """The whole hyperparameter tree of a search part: the search's values plus its spec."""
    from ak_remote.launcher.templates import hyperparams_for

    tree = hyperparams_for(job.params)
    for key, value in general.items():
        if key in tree[PARAM_SECTION]:
            tree[PARAM_SECTION][key]["value"] = str(value)
    tree[SEARCH_SECTION] = spec.hyperparam_section()
    return tree


def _metric_entries(task: Mapping[str, Any], title: str) -> dict[str, dict[str, Any]]:
    """last_metrics entries of one scalar title, by variant."""
    found: dict[str, dict[str, Any]] = {}
    for variants in (task.get("last_metrics") or {}).values():
        for entry in (variants or {}).values() if isinstance(variants, dict) else []:
            if isinstance(entry, dict) and entry.get("metric") == title:
                found[str(entry.get("variant") or "")] = entry
    return found


def _number(entry: Mapping[str, Any] | None, key: str) -> float | None:
    try:
        value = float((entry or {})[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def objective_of(task: Mapping[str, Any]) -> float | None:
    """The objective a trial task reported (scalar title `objective`), or None."""
    entries = _metric_entries(task, OBJECTIVE_TITLE)
    return _number(next(iter(entries.values())), "value") if entries else None


def progress_of(
    task: Mapping[str, Any], objective: str, direction: str
) -> tuple[int, float | None]:
    """(last epoch, best objective so far) from a trial task's `objective by epoch` series in
    last_metrics (which the server keeps with each series' min and max); (0, None) before its
    first epoch."""
    entries = _metric_entries(task, EPOCH_OBJECTIVE_TITLE)
    epoch = _number(entries.get(EPOCH_SERIES), "max_value")
    best_key = "max_value" if direction == "max" else "min_value"
    best = _number(entries.get(objective), best_key)
    return (int(epoch), best) if epoch is not None and best is not None else (0, None)


class ClearMLBackend:
    """Trials as clones of the job template on a queue, children of the search task."""

    def __init__(
        self,
        client: Any,
        job: Job,
        general: Mapping[str, str],
        spec: SearchSpec,
        fingerprint: str,
        objective: str = "",
        direction: str = "min",
    ) -> None:
        from ak_remote.datasets.secrets import refuse_credentials

        for key, value in general.items():  # every trial clone would store them on the server
            refuse_credentials(f"the search's {key}", value)
        self.client = client
        self.job = job
        self.general = dict(general)
        self.spec = spec
        self.fingerprint = fingerprint
        self.objective, self.direction = objective, direction
        self.nonce = secrets.token_hex(3)  # launch tokens differ between controller restarts
        # The search's own task, read in the same request as its trials: asked to stop?
        self.stopping = False
        self._own_status_fresh = False

    def submit(
        self,
        trial_id: str,
        values: Mapping[str, Any],
        attempt: int,
        final: bool,
        weights_from: str = "",
    ) -> str:
        if self.stopping:  # asked in the poll this round: create nothing more
            raise ctl.Aborted("the search was asked to stop")
        spec = self.spec.part(
            trial_id, dict(values), self.fingerprint, attempt, final, weights_from
        )
        search = self.spec.search_id
        token = f"{LAUNCH_TAG_PREFIX}{search[:12]}-{self.nonce}-{trial_id}-{attempt}"
        system_tags = [job_tag(self.job.name), f"{SEARCH_OF_PREFIX}{search}"]
        system_tags.append(FINAL_FIT_TAG if final else f"{TRIAL_TAG_PREFIX}{trial_id}")
        fields: dict[str, Any] = {
            "new_task_name": trial_name(trial_id, attempt, final),
            "new_task_tags": [RUN_TAG, "final-fit" if final else "trial"],
            "new_task_system_tags": system_tags,
            "new_task_hyperparams": search_hyperparams(self.job, self.general, spec),
            "new_task_parent": search,
            "new_task_comment": f"{trial_name(trial_id, attempt, final)} of search {search}",
        }
        if self.spec.project_id:
            fields["new_task_project"] = self.spec.project_id
        if self.spec.container:
            fields["new_task_container"] = self.spec.container
        task_id = self.client.clone_task(self.spec.template_id, token, fields)
        enqueued, refused = self.client.enqueue_many([task_id], self.spec.queue_id)
        if task_id not in enqueued:
            reason = "; ".join(refused.values()) or "no answer"
            raise ServerError(f"could not enqueue {trial_name(trial_id, attempt, final)}: {reason}")
        return str(task_id)

    def poll(self, handles: list[str]) -> dict[str, ctl.Observation]:
        own = self.spec.search_id
        tasks = self.client.get_tasks(
            ids=[*handles, own] if own else handles, only_fields=POLL_FIELDS
        )
        result: dict[str, ctl.Observation] = {}
        for task in tasks:
            if str(task["id"]) == own and own not in handles:
                self._note_own_status(task)
                continue
            status = str(task.get("status") or "")
            if status in FINISHED_OK:
                kind = ctl.COMPLETED
            elif status == IN_PROGRESS:
                kind = ctl.RUNNING
            elif status in (QUEUED, CREATED):
                kind = ctl.QUEUED
            else:  # failed, stopped
                kind = ctl.FAILED
            message = str(task.get("status_message") or task.get("status_reason") or status)
            epoch, best = progress_of(task, self.objective, self.direction)
            result[str(task["id"])] = ctl.Observation(
                status=kind,
                objective=objective_of(task),
                worker=str(task.get("last_worker") or ""),
                marker=str(task.get("last_update") or ""),
                message=f"task {status}: {message}" if kind == ctl.FAILED else message,
                epoch=epoch,
                best=best,
            )
        return result

    def _note_own_status(self, task: Mapping[str, Any]) -> None:
        """A stop request on the search's task: `stopped` (nothing ran it on an agent) or, while
        an agent runs it, still in progress with the status message `stopping`."""
        status = str(task.get("status") or "")
        message = str(task.get("status_message") or "").strip().lower()
        self.stopping = self.stopping or status in (STOPPED, FAILED) or message == "stopping"
        self._own_status_fresh = True

    def stop_requested(self) -> bool:
        """Whether the search was asked to stop: from this round's poll (no extra request), or
        one look at its task when no trial was polled."""
        if not self._own_status_fresh and self.spec.search_id:
            found = self.client.get_tasks(
                ids=[self.spec.search_id], only_fields=["id", "status", "status_message"]
            )
            if found:
                self._note_own_status(found[0])
        self._own_status_fresh = False
        return self.stopping

    def curve(self, handle: str) -> list[tuple[int, float]]:
        series = self.client.scalar_histogram(
            handle, metrics=[{"metric": EPOCH_OBJECTIVE_TITLE, "variants": [self.objective]}]
        )
        points = (series.get(EPOCH_OBJECTIVE_TITLE) or {}).get(self.objective) or {}
        return sorted(
            (int(x), float(y))
            for x, y in zip(points.get("x") or [], points.get("y") or [], strict=False)
            if isinstance(y, (int, float)) and math.isfinite(y)
        )

    def stop(self, handles: list[str], reason: str = "") -> None:
        if not handles:
            return
        self.client.stop_many(handles, message=reason[:250] or "stopped by the search controller")
        if reason:
            # Shown as such by `status SEARCH` and the Web UI: stopped early is not a failure.
            for handle in handles:
                self.client.call(
                    "tasks.update", {"task": handle, "tags": [RUN_TAG, "trial", STOPPED_EARLY_TAG]}
                )

    def abandon(self, handle: str, reason: str) -> None:
        # A stop request leaves a task a worker reported recently "in_progress" until that
        # worker stops it (the server's rule); a dead worker never will. Failed, by force.
        self.client.call(
            "tasks.failed",
            {
                "task": handle,
                "force": True,
                "status_reason": reason[:250],
                "status_message": reason[:250],
            },
        )

    def children(self) -> list[dict[str, Any]]:
        """Every trial/final task of this search (any status)."""
        tag = f"{SEARCH_OF_PREFIX}{self.spec.search_id}"
        return [
            t
            for t in self.client.get_tasks(system_tags=[tag], only_fields=["status", "system_tags"])
            if tag in (t.get("system_tags") or [])
        ]

    def adopt_final(self, handle: str, search_task_id: str) -> RunSummary:
        """Give the search task the final fit's model and artifacts; returns its summary."""
        from ak_remote.launcher.pull import artifacts_of

        task = self.client.get_task(handle)
        artifacts = artifacts_of(task)
        summary_artifact = artifacts.get(SUMMARY_FILE)
        if summary_artifact is None:
            raise RunFailedError(f"the final fit {handle} left no {SUMMARY_FILE}")
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / SUMMARY_FILE
            self.client.download(str(summary_artifact["uri"]), path)
            summary = read_summary(path)
        # The search task carries the same files (references, no second upload); its own
        # summary.json, written when the controller closes, holds the final fit's checksums.
        copied = [dict(a) for key, a in artifacts.items() if key != SUMMARY_FILE]
        if copied:
            self.client.call(
                "tasks.add_or_update_artifacts",
                {"task": search_task_id, "artifacts": copied, "force": True},
            )
        for model in (task.get("models") or {}).get("output") or []:
            self.client.call(
                "tasks.add_or_update_model",
                {
                    "task": search_task_id,
                    "name": model.get("name") or "final",
                    "model": model["model"],
                    "type": "output",
                },
            )
        return summary


def _ended_without_closing(code: int | None) -> str:
    """A trial process that ended without closing its run, in words."""
    if code is not None and code < 0:
        try:
            return f"the trial process was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"the trial process was killed by signal {-code}"
    return f"the trial process ended ({code}) without closing its run"


class LocalBackend:
    """Trials as child processes of this machine, one GPU each when there are GPUs."""

    def __init__(
        self,
        job: Job,
        general: Mapping[str, str],
        search_dir: Path,
        spec: SearchSpec,
        fingerprint: str,
        offline: bool,
        gpus: Sequence[str] = (),
        direction: str = "min",
    ) -> None:
        self.direction = direction
        self.job = job
        self.general = dict(general)
        self.search_dir = search_dir
        self.spec = spec
        self.fingerprint = fingerprint
        self.offline = offline
        self.gpus = list(gpus)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.slot_of: dict[str, int] = {}

    def _free_gpu(self) -> int:
        used = {self.slot_of[h] for h, p in self.processes.items() if p.poll() is None}
        return next(i for i in range(len(used) + 1) if i not in used)

    def submit(
        self,
        trial_id: str,
        values: Mapping[str, Any],
        attempt: int,
        final: bool,
        weights_from: str = "",
    ) -> str:
        suffix = f"-retry{attempt}" if attempt else ""
        if final:
            run_dir = self.search_dir / f"final{suffix}"
        else:
            run_dir = self.search_dir / "trials" / f"trial_{trial_id}{suffix}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        spec = self.spec.part(
            trial_id, dict(values), self.fingerprint, attempt, final, weights_from
        )
        spec_file = run_dir / "search_spec.json"
        spec_file.write_text(spec.to_json() + "\n")
        sets, secret_env = job_set_arguments(self.general)  # credentials never in argv
        argv = [sys.executable, str(self.job.script_path), *sets]
        argv += ["--run-dir", str(run_dir), "--search-spec", str(spec_file)]
        argv += ["--task-name", f"{self.job.name} {trial_name(trial_id, attempt, final)}"]
        if self.offline:
            argv.append("--offline")
        # The trial stops with this controller, not with whoever started the controller.
        env = {**os.environ, **secret_env, PARENT_PID_ENV: str(os.getpid())}
        slot = self._free_gpu()
        if self.gpus:
            # One GPU per worker: small candidates use several GPUs better side by side
            # than through MirroredStrategy.
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
        log = (run_dir / "job.log").open("wb")
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        handle = str(run_dir)
        self.processes[handle] = process
        self.slot_of[handle] = slot
        return handle

    def poll(self, handles: list[str]) -> dict[str, ctl.Observation]:
        result: dict[str, ctl.Observation] = {}
        for handle in handles:
            run_dir = Path(handle)
            process = self.processes.get(handle)
            log = run_dir / "job.log"
            marker = str(log.stat().st_mtime_ns) if log.exists() else ""
            points = self.curve(handle)
            epoch = points[-1][0] if points else 0
            sign = -1.0 if self.direction == "max" else 1.0
            best = min((v for _, v in points), key=lambda v: sign * v) if points else None
            if process is not None and process.poll() is None:
                result[handle] = ctl.Observation(
                    ctl.RUNNING,
                    worker=f"local{self.slot_of[handle]}",
                    marker=marker,
                    epoch=epoch,
                    best=best,
                )
                continue
            try:
                summary = read_summary(run_dir / SUMMARY_FILE)
            except DataError:
                code = process.returncode if process is not None else None
                # No process (a controller restarted) and no summary: the attempt is gone.
                result[handle] = ctl.Observation(
                    ctl.FAILED, message=f"the trial process exited ({code}) without a summary"
                )
                continue
            worker = f"local{self.slot_of.get(handle, 0)}"
            if summary.completed:
                objective = summary.metrics.get("objective")
                result[handle] = ctl.Observation(
                    ctl.COMPLETED,
                    objective=float(objective) if objective is not None else None,
                    worker=worker,
                    marker=marker,
                    epoch=epoch,
                    best=best,
                )
            else:
                message = summary.error or "failed"
                if summary.status == RUN_RUNNING:
                    # Killed before it could close its run: its own summary says so too.
                    code = process.returncode if process is not None else None
                    message = _ended_without_closing(code)
                    mark_failed(run_dir, summary, message)
                result[handle] = ctl.Observation(ctl.FAILED, worker=worker, message=message)
        return result

    def stop(self, handles: list[str], reason: str = "") -> None:
        for handle in handles:
            process = self.processes.get(handle)
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)

    def abandon(self, handle: str, reason: str) -> None:
        self.stop([handle])

    def curve(self, handle: str) -> list[tuple[int, float]]:
        """The trial's `epochs.json` (rewritten atomically after every epoch)."""
        try:
            raw = json.loads((Path(handle) / EPOCHS_FILE).read_text(encoding="utf-8"))
            return [(int(e), float(v)) for e, v in raw["epochs"] if math.isfinite(float(v))]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def close(self) -> None:
        self.stop(list(self.processes))


def local_gpus() -> list[str]:
    """The GPU indexes this machine has (CUDA_VISIBLE_DEVICES when set), [] without GPUs."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


__all__ = ["FAILED", "ClearMLBackend", "LocalBackend", "local_gpus"]
