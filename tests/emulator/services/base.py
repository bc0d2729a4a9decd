"""What every service shares: the task status machine, lookups by id, handler discovery.

The status machine is clearml-server's (``apiserver/bll/task/utils.py``): the allowed
transitions, ``force`` skipping the check, fields a status change sets or unsets, and the
``development`` system tag dropped when a task is queued. Tasks and queues both change task
statuses (``queues.delete`` returns queued tasks to their pre-enqueue status), so it lives here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from tests.emulator import errors
from tests.emulator.services.query import Scrolls
from tests.emulator.state import COMPANY_ID, COMPANY_NAME, USER_ID, Doc, ServerState, now_iso

Handler = Callable[[dict[str, Any]], dict[str, Any]]

# Task statuses and the transitions clearml-server allows (apiserver/bll/task/utils.py).
CREATED, QUEUED, IN_PROGRESS = "created", "queued", "in_progress"
STOPPED, COMPLETED, FAILED = "stopped", "completed", "failed"
CLOSED, PUBLISHING, PUBLISHED = "closed", "publishing", "published"
TASK_STATUSES = (
    CREATED,
    QUEUED,
    IN_PROGRESS,
    STOPPED,
    COMPLETED,
    FAILED,
    CLOSED,
    PUBLISHING,
    PUBLISHED,
)
STATUS_TRANSITIONS: dict[str, frozenset[str]] = {
    CREATED: frozenset({QUEUED, IN_PROGRESS}),
    QUEUED: frozenset({CREATED, IN_PROGRESS, STOPPED}),
    IN_PROGRESS: frozenset({STOPPED, FAILED, CREATED, COMPLETED}),
    STOPPED: frozenset(
        {CLOSED, CREATED, FAILED, QUEUED, IN_PROGRESS, PUBLISHED, PUBLISHING, COMPLETED}
    ),
    CLOSED: frozenset({CREATED, FAILED, PUBLISHED, PUBLISHING, STOPPED}),
    FAILED: frozenset({CREATED, STOPPED, PUBLISHED, QUEUED}),
    PUBLISHING: frozenset({PUBLISHED}),
    PUBLISHED: frozenset(),
    COMPLETED: frozenset({PUBLISHED, IN_PROGRESS, CREATED}),
}
DEVELOPMENT_TAG = "development"


class Service:
    """One ClearML service's endpoints: methods ``ep_<service>__<action>`` answer calls."""

    def __init__(self, state: ServerState, scrolls: Scrolls | None = None) -> None:
        self.state = state
        # Scroll states of paged reads (Redis on the server), shared by every service.
        self.scrolls = scrolls or Scrolls()

    def resolve(self, collection: str, ids: list[str]) -> dict[str, Doc]:
        """Documents of a collection by id, for the joins of the ``*_ex`` reads."""
        if collection == "companies":
            company = {"id": COMPANY_ID, "name": COMPANY_NAME}
            return {COMPANY_ID: company} if COMPANY_ID in ids else {}
        source: dict[str, Doc] = getattr(self.state, collection)
        found = {i: source[i] for i in ids if i in source}
        if collection == "users":
            # preferences are excluded by default from user documents
            found = {
                i: {k: v for k, v in d.items() if k != "preferences"} for i, d in found.items()
            }
        return found

    def handlers(self) -> dict[str, Handler]:
        """Endpoint name ("tasks.clone") -> the method answering it."""
        found: dict[str, Handler] = {}
        for attr in dir(self):
            if attr.startswith("ep_"):
                service, _, action = attr[3:].partition("__")
                found[f"{service}.{action}"] = getattr(self, attr)
        return found

    # ---------------------------------------------------------------- lookups
    def _task(self, task_id: str) -> Doc:
        task = self.state.tasks.get(task_id)
        if task is None:
            raise errors.InvalidTaskId(id=task_id)
        return task

    def _project(self, project_id: str) -> Doc:
        project = self.state.projects.get(project_id)
        if project is None:
            raise errors.InvalidProjectId(id=project_id)
        return project

    def _queue(self, queue_id: str) -> Doc:
        queue = self.state.queues.get(queue_id)
        if queue is None:
            raise errors.InvalidQueueId(queue=queue_id)
        return queue

    def _model(self, model_id: str) -> Doc:
        model = self.state.models.get(model_id)
        if model is None:
            raise errors.InvalidModelId(id=model_id)
        return model

    def set_last_update(self, task: Doc) -> None:
        """TaskBLL.set_last_update: the task changed now; a running task's active duration is
        the time since it started (the Web UI's RUN TIME)."""
        now = now_iso()
        task.update(last_update=now, last_change=now, last_changed_by=USER_ID)
        if task.get("status") == IN_PROGRESS and task.get("started"):
            started = datetime.fromisoformat(task["started"])
            # an IntField on the server: whole seconds
            task["active_duration"] = int((datetime.now(timezone.utc) - started).total_seconds())

    def _touch_project(self, project_id: str | None) -> None:
        if project_id and project_id in self.state.projects:
            self.state.projects[project_id]["last_update"] = now_iso()

    # ---------------------------------------------------------------- status machine
    def _change_status(
        self,
        task: Doc,
        new_status: str,
        *,
        force: bool = False,
        status_reason: str = "",
        status_message: str = "",
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        current = task["status"]
        if not force and new_status != current and new_status not in STATUS_TRANSITIONS[current]:
            raise errors.InvalidTaskStatus(
                "Invalid status change", current_status=current, new_status=new_status
            )
        now = now_iso()
        fields: dict[str, Any] = {
            "status": new_status,
            "status_reason": status_reason,
            "status_message": status_message,
            "status_changed": now,
            "last_update": now,
            "last_change": now,
            "last_changed_by": USER_ID,
        }
        fields.update(extra or {})
        for key, value in fields.items():
            if value is None:  # the server unsets these fields
                task.pop(key, None)
            else:
                task[key] = value
        if new_status == QUEUED and DEVELOPMENT_TAG in task["system_tags"]:
            task["system_tags"] = [t for t in task["system_tags"] if t != DEVELOPMENT_TAG]
        self._touch_project(task.get("project"))
        return {"updated": 1, "fields": {k: v for k, v in fields.items() if v is not None}}

    def _remove_from_queues(self, task_id: str, exclude: str | None = None) -> int:
        removed = 0
        for queue in self.state.queues.values():
            if queue["id"] == exclude:
                continue
            before = len(queue["entries"])
            queue["entries"] = [e for e in queue["entries"] if e["task"] != task_id]
            removed += before - len(queue["entries"])
        return removed
