"""Resuming a stopped or failed remote run: enqueue the *same* task again.

The job the agent then runs finds the task's `search_state` artifact (saved after every finished
trial, see ak_remote.runtime.search_state), restores the Keras Tuner project and continues the
search:
finished trials are not trained again and the total stays `max_trials`. Re-enqueueing the same
task (rather than a clone) keeps its id, parameters, metrics of the finished trials and the
artifact; the server allows a failed or stopped task to be enqueued again as it is (no reset:
a reset would drop the artifact).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ak_remote.clearml_api import Client, Doc, queue_named
from ak_remote.contract import (
    ABORTED_KEY,
    RESUMABLE,
    SEARCH_CONTROLLER_ARTIFACT,
    SEARCH_STATE_ARTIFACT,
    SEARCH_TAG,
    check_queue_name,
    is_template,
)
from ak_remote.errors import ServerError, UsageError
from ak_remote.launcher.runs import check_task_ids

_FIELDS = [
    "id",
    "name",
    "status",
    "project",
    "system_tags",
    "execution.queue",
    "execution.artifacts",
    "runtime",
]


@dataclass
class Resumed:
    """A run enqueued again: where, from which status, and whether a search state was saved."""

    task_id: str
    name: str
    previous_status: str
    queue: str
    has_state: bool
    url: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.task_id,
            "name": self.name,
            "previous_status": self.previous_status,
            "queue": self.queue,
            "search_state_saved": self.has_state,
            "url": self.url,
        }


def _refusal(task_id: str, status: str) -> UsageError:
    if status in ("completed", "published", "closed"):
        return UsageError(
            f"run {task_id} already completed; nothing to resume",
            f"to run it again from scratch: ak-remote reproduce {task_id}",
        )
    if status == "queued":
        return UsageError(
            f"run {task_id} is already queued", f"follow it: ak-remote status {task_id}"
        )
    if status == "in_progress":
        return UsageError(
            f"run {task_id} is still running",
            f"follow it: ak-remote logs {task_id} --follow; if its agent is gone, "
            f"ak-remote abort {task_id} first",
        )
    return UsageError(
        f"run {task_id} is {status or 'in an unknown state'}; only stopped or failed runs resume",
        "launch a new run with ak-remote launch",
    )


def _pick_queue(
    client: Client, task: Doc, queue: str | None, default_queue: str | None
) -> tuple[str, str]:
    """(queue id, name): the one asked for, else the one the run last ran on, else the default."""
    queues = client.get_queues()
    if queue:
        return str(queue_named(queues, queue)["id"]), queue
    last = str((task.get("execution") or {}).get("queue") or "")
    found = next((q for q in queues if last and q.get("id") == last), None)
    if found is not None:
        return str(found["id"]), str(found.get("name"))
    if default_queue:
        found = queue_named(queues, default_queue, "the configured default queue", "pass -q QUEUE")
        return str(found["id"]), default_queue
    if SEARCH_TAG in (task.get("system_tags") or []):
        # A search whose controller ran in a terminal: its controller goes to a CPU queue.
        raise UsageError(
            f"search {task['id']} never ran from a queue and no default queue is configured",
            "pass -q QUEUE, the CPU queue its controller is to run on (e.g. -q services)",
        )
    raise UsageError(
        f"run {task['id']} has no recorded queue and no default queue is configured",
        "pass -q QUEUE",
    )


def resume(
    client: Client, task_id: str, queue: str | None = None, default_queue: str | None = None
) -> Resumed:
    """Enqueue the stopped or failed run `task_id` again so that its search continues.

    Raises UsageError for a malformed or unknown id, a run that is not stopped or failed, a
    template, or an unknown queue (nothing is changed then); ServerError when the enqueue fails.
    """
    task_id = check_task_ids([task_id])[0]
    if queue:
        check_queue_name(queue)
    found = client.get_tasks(ids=[task_id], only_fields=_FIELDS)
    if not found:
        raise UsageError(
            f"no task {task_id}", "check the id with `ak-remote status --project PROJECT`"
        )
    task = found[0]
    if is_template(task):
        raise UsageError(
            f"{task_id} is a template, not a run", "start a run from it with ak-remote launch"
        )
    status = str(task.get("status") or "")
    if status not in RESUMABLE:
        raise _refusal(task_id, status)
    queue_id, queue_name = _pick_queue(client, task, queue, default_queue)
    artifacts = (task.get("execution") or {}).get("artifacts") or []
    has_state = any(
        # a parallel search's controller saves its own state artifact
        a.get("key") in (SEARCH_STATE_ARTIFACT, SEARCH_CONTROLLER_ARTIFACT)
        and a.get("mode", "output") == "output"
        for a in artifacts
    )
    # An aborted run carries the abort's mark, which would stop it again as it starts.
    client.set_runtime_property(task, ABORTED_KEY, None)
    done, failed = client.enqueue_many([task_id], queue_id)
    if task_id not in done:
        reason = failed.get(task_id) or "the server did not enqueue it"
        raise ServerError(
            f"could not enqueue run {task_id}: {reason}", f"ak-remote status {task_id}"
        )
    return Resumed(
        task_id=task_id,
        name=str(task.get("name") or ""),
        previous_status=status,
        queue=queue_name,
        has_state=has_state,
        url=client.task_url(task),
    )
