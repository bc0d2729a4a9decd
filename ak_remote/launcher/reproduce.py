"""Reproduce: run a finished run again with everything it recorded pinned, then compare.

What a run records (its summary.json, written by the job): the seed, the code commit and whether
the tree was dirty, the key package versions, the worker image (with its digest when the agent
could tell), and the fingerprint of the data it trained on. The clone keeps the run's own code
(repository + commit + diff, or the script stored in the task), requirements, parameters (seed
included) and container; `reproduce` pins the commit and the image digest where the run has them,
and says plainly what it could not pin. When the new run ends, the metric differences are shown.
"""

from __future__ import annotations

import copy
import secrets
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ak_remote.clearml_api import Client, Doc, last_metric_values
from ak_remote.contract import (
    BATCH_TAG_PREFIX,
    FINISHED_OK,
    JOB_TAG_PREFIX,
    LAUNCH_TAG_PREFIX,
    REPRODUCES_TAG_PREFIX,
    RUN_TAG,
    is_image_id,
    is_pinned,
)
from ak_remote.errors import RunFailedError, UsageError
from ak_remote.launcher.launch import check_queue_name
from ak_remote.launcher.pull import fetch_summary
from ak_remote.params import SECTION
from ak_remote.summary import GitRecord, Reproducibility, RunSummary

Progress = Callable[[str], None]


@dataclass
class ReproducePlan:
    """The clone to make: its overrides, what was pinned and what could not be."""

    original: Doc
    summary: RunSummary
    queue_name: str
    queue_id: str
    clone_fields: dict[str, Any]
    script_pins: dict[str, Any]  # script fields set by tasks.edit after the clone
    pinned: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    token: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "original": self.original["id"],
            "queue": self.queue_name,
            "pinned": self.pinned,
            "warnings": self.warnings,
            "clone_request": {"task": self.original["id"], **self.clone_fields},
            "script_pins": self.script_pins,
        }


def plan_reproduce(
    client: Client, task_id: str, queue: str | None, default_queue: str | None = None
) -> ReproducePlan:
    """Read the original run and its summary; decide what to pin. Writes nothing.

    Raises UsageError (run not finished, unknown queue), RunFailedError (no summary).
    """
    from ak_remote.launcher.runs import check_task_ids

    task_id = check_task_ids([task_id])[0]
    if queue is not None:
        check_queue_name(queue)
    original = client.get_task(task_id)
    if queue is None:
        # Same hardware by default: the queue the original ran on, when it still exists.
        ran_on = str((original.get("execution") or {}).get("queue") or "")
        queues = client.get_queues()
        queue = next((str(q["name"]) for q in queues if q.get("id") == ran_on), default_queue)
    queue_name = check_queue_name(queue)
    if original.get("status") not in FINISHED_OK:
        raise UsageError(
            f"run {task_id} is {original.get('status')}; only completed runs are reproduced",
            f"ak-remote status {task_id}",
        )
    _refuse_secrets(task_id, (original.get("hyperparams") or {}).get(SECTION) or {})
    queue_doc = client.require_queue(queue_name)
    with tempfile.TemporaryDirectory(prefix="ak-remote-reproduce-") as tmp:
        summary = fetch_summary(client, original, Path(tmp))
    record = summary.reproducibility or Reproducibility()
    pinned: list[str] = []
    warnings: list[str] = []

    # Parameters, seed included: the run's own tree, as it ran.
    tree = copy.deepcopy(original.get("hyperparams") or {})
    general = tree.get(SECTION) or {}
    seed = (general.get("seed") or {}).get("value")
    if seed not in (None, ""):
        pinned.append(f"seed {seed}")
    else:
        warnings.append("the run has no seed parameter: results may differ by chance")
    pinned.append(f"{len(general)} parameters")

    # Code.
    script = dict(original.get("script") or {})
    script_pins: dict[str, Any] = {}
    git = record.git or GitRecord()
    if script.get("repository"):
        commit = script.get("version_num") or git.commit
        if commit:
            if not script.get("version_num"):
                script_pins["version_num"] = commit
            pinned.append(f"commit {str(commit)[:12]}")
        else:
            warnings.append("no commit recorded: the agent will take the branch head")
        if script.get("diff"):
            pinned.append("uncommitted diff")
        elif git.dirty:
            warnings.append(
                "the run's checkout was dirty but no diff was stored: the code may differ"
            )
    elif script.get("diff"):
        pinned.append("the job script stored in the task")
    else:
        warnings.append("the run stores neither a repository nor its script")

    # Packages.
    requirements = (script.get("requirements") or {}).get("pip") or ""
    if requirements.strip():
        pinned.append(f"{len(requirements.strip().splitlines())} locked packages")
    else:
        warnings.append("no package list is stored in the run: the image decides the versions")
    packages = record.packages
    if packages:
        pinned.append(
            "recorded versions " + ", ".join(f"{k} {v}" for k, v in sorted(packages.items()))
        )

    # Image.
    container = dict(original.get("container") or {})
    recorded_image = record.image or ""
    if is_pinned(recorded_image):
        container["image"] = recorded_image
        pinned.append(f"image {recorded_image}")
    elif is_pinned(str(container.get("image") or "")):
        pinned.append(f"image {container['image']}")
    elif container.get("image"):
        warnings.append(
            f"image {container['image']} has no recorded digest: a re-pushed tag could differ"
        )
    else:
        warnings.append("the run recorded no image: the agent's default image is used")
    if is_image_id(str(container.get("image") or "")):
        warnings.append(
            f"image {container['image']} is an image ID: only agents on hosts that still hold "
            "that image can run it; push it and sync templates to record repo@sha256"
        )

    if summary.fingerprint:
        pinned.append(f"data fingerprint {summary.fingerprint[:12]} (checked after the run)")
    else:
        warnings.append("no data fingerprint recorded: a changed dataset would go unnoticed")

    batch = secrets.token_hex(4)
    token = f"{LAUNCH_TAG_PREFIX}{batch}-0"
    job_tags = [t for t in original.get("system_tags") or [] if str(t).startswith(JOB_TAG_PREFIX)]
    tags = [t for t in original.get("tags") or [] if not str(t).startswith(REPRODUCES_TAG_PREFIX)]
    tags = list(
        dict.fromkeys([RUN_TAG, *tags, "reproduction", f"{REPRODUCES_TAG_PREFIX}{task_id}"])
    )
    clone_fields: dict[str, Any] = {
        "new_task_name": f"{original.get('name')} (reproduction)"[:200],
        "new_task_tags": tags,
        "new_task_system_tags": [f"{BATCH_TAG_PREFIX}{batch}", token, *job_tags],
        "new_task_hyperparams": tree,
        "new_task_container": container,
        "new_task_parent": task_id,
        "new_task_comment": f"Reproduction of {task_id} by ak-remote",
    }
    if original.get("project"):
        clone_fields["new_task_project"] = original["project"]
    return ReproducePlan(
        original=original,
        summary=summary,
        queue_name=queue_name,
        queue_id=str(queue_doc["id"]),
        clone_fields=clone_fields,
        script_pins=script_pins,
        pinned=pinned,
        warnings=warnings,
        token=token,
    )


def _refuse_secrets(task_id: str, general: Mapping[str, Any]) -> None:
    """A run whose parameters hold credentials (launched before launch refused them), or hold
    them masked (a local run records `***@`, `?token=***`), cannot be cloned as it is. Raises
    UsageError."""
    from ak_remote.datasets.secrets import (
        PLACEHOLDER_EXAMPLE,
        QUERY_EXAMPLE,
        WHOLE_EXAMPLE,
        has_masked_credentials,
        refuse_credentials,
    )

    again = (
        f"launch it again with the dataset's credentials as placeholders, as in "
        f"--set dataset={PLACEHOLDER_EXAMPLE} (or {QUERY_EXAMPLE}, or {WHOLE_EXAMPLE})"
    )
    for key, entry in general.items():
        value = str((entry or {}).get("value", ""))
        if has_masked_credentials(value):
            raise UsageError(
                f"run {task_id} recorded its {key} {value!r} without the URL's credentials, "
                "so a reproduction could not fetch it",
                again,
            )
        try:
            refuse_credentials(f"run {task_id}'s {key}", value)
        except UsageError as exc:
            raise UsageError(exc.message, again) from None


def execute_reproduce(client: Client, plan: ReproducePlan) -> str:
    """Clone (pinning the commit if needed) and enqueue; removes the clone on failure."""
    new_id = client.clone_task(str(plan.original["id"]), plan.token, plan.clone_fields)
    try:
        if plan.script_pins:
            script = {**(plan.original.get("script") or {}), **plan.script_pins}
            client.edit_task(new_id, {"script": script})
        enqueued, refused = client.enqueue_many([new_id], plan.queue_id)
        if new_id not in enqueued:
            raise RunFailedError(f"the server did not enqueue {new_id}: {refused.get(new_id)}")
    except BaseException:
        client.delete_many([new_id], force=True)
        raise
    return new_id


@dataclass
class MetricDelta:
    name: str
    original: float | None
    reproduced: float | None

    @property
    def delta(self) -> float | None:
        if self.original is None or self.reproduced is None:
            return None
        return self.reproduced - self.original


def metric_deltas(
    original: tuple[RunSummary | None, Mapping[str, Any]],
    reproduced: tuple[RunSummary | None, Mapping[str, Any]],
) -> list[MetricDelta]:
    """Test metrics of both runs side by side (from summary.json, else last reported values);
    each run is given as (its summary, its task)."""

    def metrics(summary: RunSummary | None, task: Mapping[str, Any]) -> dict[str, float]:
        if summary is not None and summary.metrics:
            return dict(summary.metrics)
        values = last_metric_values(task)
        return {k.split("/", 1)[1]: v for k, v in values.items() if k.startswith("Summary/")}

    left = metrics(*original)
    right = metrics(*reproduced)
    return [MetricDelta(n, left.get(n), right.get(n)) for n in sorted(set(left) | set(right))]


def compare_outcome(
    client: Client, plan: ReproducePlan, new_id: str
) -> tuple[list[MetricDelta], list[str]]:
    """After the reproduction finished: metric deltas and reproducibility warnings."""
    task = client.get_task(new_id)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ak-remote-reproduce-") as tmp:
        try:
            summary: RunSummary | None = fetch_summary(client, task, Path(tmp))
        except RunFailedError:
            summary = None
            notes.append("the reproduction recorded no summary.json")
    old_fp = plan.summary.fingerprint
    new_fp = summary.fingerprint if summary is not None else None
    if old_fp and new_fp and old_fp != new_fp:
        notes.append(f"the data differ: fingerprint {new_fp[:12]} vs the original's {old_fp[:12]}")
    elif old_fp and new_fp:
        notes.append("same data (fingerprints match)")
    old_pkgs = plan.summary.reproducibility.packages if plan.summary.reproducibility else {}
    new = summary.reproducibility if summary is not None else None
    new_pkgs = new.packages if new is not None else {}
    changed = sorted(k for k in set(old_pkgs) & set(new_pkgs) if old_pkgs[k] != new_pkgs[k])
    if changed:
        notes.append(
            "package versions differ: "
            + ", ".join(f"{k} {old_pkgs[k]} -> {new_pkgs[k]}" for k in changed)
        )
    deltas = metric_deltas((plan.summary, plan.original), (summary, task))
    return deltas, notes
