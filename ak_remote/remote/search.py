"""Parallel searches on the laptop side: launching one, and reading one back.

`launch JOB -q gpu --parallel N` is a launch of one run, the *search* (the controller), checked
exactly as a launch is (template, parameters, GPU queue) before anything is created. The search
task is a clone of the job template carrying `Search/spec` (role controller, the GPU queue, the
template to clone for trials); it is enqueued on the controller queue (a CPU queue, `services`
by default), or run in this terminal with `--controller local`. Its trials are its children.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ak_remote.contract import (
    FINAL_FIT_TAG,
    IN_PROGRESS,
    OBJECTIVE_TITLE,
    QUEUED,
    SEARCH_OF_PREFIX,
    SEARCH_SECTION,
    SEARCH_SPEC_KEY,
    SEARCH_TAG,
    TRIAL_TAG_PREFIX,
)
from ak_remote.errors import UsageError
from ak_remote.remote.clearml_api import Client, Doc
from ak_remote.remote.launch import LaunchPlan, LaunchRequest, plan_launch
from ak_remote.search.spec import (
    CONTROLLER,
    DEFAULT_LOST_AFTER_S,
    DEFAULT_MAX_RETRIES,
    SearchSpec,
    check_parallel,
)

CONTROLLER_QUEUE_ENV = "AK_REMOTE_CONTROLLER_QUEUE"
DEFAULT_CONTROLLER_QUEUE = "services"  # ClearML's own name for CPU-only service agents
Progress = Callable[[str], None]


def default_controller_queue() -> str:
    return os.environ.get(CONTROLLER_QUEUE_ENV, "").strip() or DEFAULT_CONTROLLER_QUEUE


@dataclass
class SearchPlan:
    """A checked search launch: the controller run, its spec and where it runs."""

    plan: LaunchPlan
    spec: SearchSpec
    controller_queue: str | None  # None: in this terminal
    controller_queue_id: str | None
    warnings: list[str]

    @property
    def max_trials(self) -> int:
        return int(self.plan.runs[0].values["max_trials"])


def plan_search(
    client: Client,
    request: LaunchRequest,
    parallel: int,
    controller_queue: str | None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    lost_after_s: float = DEFAULT_LOST_AFTER_S,
) -> SearchPlan:
    """Check everything a search launch needs; writes nothing. Raises UsageError/ServerError.

    `controller_queue` None means the controller runs in this terminal.
    """
    check_parallel(parallel)
    if request.sweep:
        raise UsageError(
            "--parallel spreads one search over agents; it cannot be combined with --sweep",
            "launch the sweep without --parallel, or one search per setting",
        )
    plan = plan_launch(client, request)
    run = plan.runs[0]
    check_parallel(parallel, int(run.values["max_trials"]))
    warnings: list[str] = []
    queue_id: str | None = None
    if controller_queue is not None:
        queue = client.find_queue(controller_queue)
        if queue is None:
            raise UsageError(
                f"controller queue {controller_queue!r} does not exist",
                "create it (ak-remote queues apply), pass --controller-queue QUEUE, "
                "or run the controller here with --controller local",
            )
        queue_id = str(queue["id"])
    workers = client.get_workers()

    def served(name: str, qid: str | None) -> bool:
        return any(
            q.get("id") == qid or q.get("name") == name
            for w in workers
            for q in (w.get("queues") or [])
            if isinstance(q, dict)
        )

    if controller_queue is not None and not served(controller_queue, queue_id):
        warnings.append(
            f"no worker serves the controller queue {controller_queue!r}: the search waits "
            f"until one does (ak-remote agent --queue {controller_queue} --cpu-only)"
        )
    if not served(plan.queue_name, plan.queue_id):
        warnings.append(
            f"no worker serves {plan.queue_name!r} yet: trials wait until an agent does"
        )
    spec = SearchSpec(
        role=CONTROLLER,
        parallel=parallel,
        queue_id=plan.queue_id or "",
        queue_name=plan.queue_name,
        template_id=plan.template.id,
        project_id=plan.project_id or "",
        max_retries=max_retries,
        lost_after_s=lost_after_s,
        container=run.clone_fields.get("new_task_container"),
    )
    spec.check()
    name = f"search {run.name}"[:200]
    run.name = name
    run.clone_fields["new_task_name"] = name
    run.clone_fields["new_task_system_tags"] = [*run.system_tags, SEARCH_TAG]
    run.clone_fields["new_task_comment"] = (
        f"{run.clone_fields.get('new_task_comment', '')}; a search of {parallel} parallel "
        f"trial(s) on {plan.queue_name}"
    )
    return SearchPlan(plan, spec, controller_queue, queue_id, warnings)


def finish_spec(client: Client, search: SearchPlan) -> SearchSpec:
    """Create the trial queue/project if the plan says so; the spec with their ids."""
    plan = search.plan
    from ak_remote.contract import RUN_TAG

    queue_id = plan.queue_id or client.create_queue(plan.queue_name, tags=[RUN_TAG])
    project_id = plan.project_id or client.ensure_project(plan.project_name)
    plan.queue_id, plan.project_id = queue_id, project_id
    return replace(search.spec, queue_id=queue_id, project_id=project_id)


def controller_plan(search: SearchPlan, spec: SearchSpec) -> LaunchPlan:
    """The launch plan that creates the search task on the controller queue."""
    plan = search.plan
    run = plan.runs[0]
    tree = dict(run.clone_fields["new_task_hyperparams"])
    tree[SEARCH_SECTION] = spec.hyperparam_section()
    run.clone_fields["new_task_hyperparams"] = tree
    assert search.controller_queue is not None
    return replace(plan, queue_name=search.controller_queue, queue_id=search.controller_queue_id)


# -- reading a search back ----------------------------------------------------------------------

TRIAL_FIELDS = [
    "id",
    "name",
    "status",
    "status_message",
    "system_tags",
    "last_worker",
    "started",
    "completed",
    "created",
    "last_metrics",
    "hyperparams",
]


def is_search(task: Mapping[str, Any]) -> bool:
    return SEARCH_TAG in (task.get("system_tags") or [])


def search_children(client: Client, search_id: str) -> list[Doc]:
    """The trials and final fit of a search, oldest first."""
    tag = f"{SEARCH_OF_PREFIX}{search_id}"
    tasks = [
        t
        for t in client.get_tasks(system_tags=[tag], only_fields=TRIAL_FIELDS)
        if tag in (t.get("system_tags") or [])
    ]
    return sorted(tasks, key=lambda t: str(t.get("created") or ""))


def _spec_of(task: Mapping[str, Any]) -> dict[str, Any]:
    entry = ((task.get("hyperparams") or {}).get(SEARCH_SECTION) or {}).get(SEARCH_SPEC_KEY) or {}
    try:
        spec = json.loads(str(entry.get("value") or "{}"))
    except ValueError:
        return {}
    return spec if isinstance(spec, dict) else {}


def key_values(values: Mapping[str, Any], varying: Sequence[str] = (), limit: int = 4) -> str:
    """A short text of a candidate's most telling values: those that differ between the
    search's trials first, then the optimizer and learning rate."""
    preferred = [k for k in varying if k in values]
    preferred += [k for k in values if k.endswith(("learning_rate", "optimizer"))]
    picked = list(dict.fromkeys(preferred))[:limit]
    labels = [k.rsplit("/", 1)[-1] for k in picked]
    return " ".join(
        f"{k if labels.count(label) > 1 else label}={values[k]}"
        for k, label in zip(picked, labels, strict=True)
    )


def varying_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The hyperparameters whose values differ between the rows' candidates."""
    keys: dict[str, set[str]] = {}
    for row in rows:
        for key, value in (row.get("values") or {}).items():
            keys.setdefault(key, set()).add(json.dumps(value, sort_keys=True, default=str))
    return [k for k, seen in keys.items() if len(seen) > 1]


def trial_rows(tasks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per trial/final attempt: trial, state, worker, key values, objective, duration."""
    from ak_remote.remote.runs import _parse_time
    from ak_remote.search.backends import objective_of

    rows = []
    for task in tasks:
        spec = _spec_of(task)
        tags = task.get("system_tags") or []
        trial = next(
            (t[len(TRIAL_TAG_PREFIX) :] for t in tags if t.startswith(TRIAL_TAG_PREFIX)), ""
        )
        start, end = _parse_time(task.get("started")), _parse_time(task.get("completed"))
        duration = (end - start).total_seconds() if start and end else None
        rows.append(
            {
                "id": str(task["id"]),
                "trial": "final" if FINAL_FIT_TAG in tags else trial,
                "attempt": int(spec.get("attempt") or 0),
                "status": str(task.get("status") or ""),
                "worker": str(task.get("last_worker") or ""),
                "values": spec.get("candidate") or {},
                "objective": objective_of(task),
                "duration_s": duration,
            }
        )
    return rows


def in_flight(tasks: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(t["id"]) for t in tasks if t.get("status") in (QUEUED, IN_PROGRESS, "created")]


__all__ = ["OBJECTIVE_TITLE", "SearchPlan", "plan_search", "trial_rows"]
