"""tasks.*: create/edit, the status calls, clone, enqueue/dequeue, stop/reset, delete, archive,
and the task's artifacts, models, hyperparameters and configuration.

Reproduces clearml-server's ``apiserver/services/tasks.py`` and ``apiserver/bll/task/``: which
fields create/edit take (``create_fields``), edits only of ``created`` tasks unless ``force``,
what ``clone`` copies and drops, enqueue by id / name / default queue with ``enqueue_status``
kept for dequeue, ``stop`` asking a worker that still reports to stop instead of stopping the
task, what ``reset`` clears, per-id failures of the ``*_many`` batch calls. The status machine
itself is in ``base.py``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from tests.emulator import errors
from tests.emulator.services.base import (
    CLOSED,
    COMPLETED,
    CREATED,
    DEVELOPMENT_TAG,
    FAILED,
    IN_PROGRESS,
    PUBLISHED,
    QUEUED,
    STOPPED,
    TASK_STATUSES,
    Service,
)
from tests.emulator.services.projects import ProjectsService
from tests.emulator.services.query import TASK_QUERY, as_list, select, sorted_tags
from tests.emulator.services.queues import QueuesService
from tests.emulator.state import COMPANY_ID, USER_ID, USER_NAME, Doc, ServerState, new_id, now_iso

TASK_TYPES = (
    "training",
    "testing",
    "inference",
    "data_processing",
    "application",
    "monitor",
    "controller",
    "report",
    "optimizer",
    "service",
    "qc",
    "custom",
)
ARCHIVED_TAG = "archived"
HIDDEN_TAG = "hidden"

# Fields a client may set on tasks.create / tasks.edit (clearml-server's create_fields).
TASK_CREATE_FIELDS = (
    "name",
    "tags",
    "system_tags",
    "type",
    "error",
    "comment",
    "parent",
    "project",
    "input",
    "output_dest",
    "execution",
    "hyperparams",
    "configuration",
    "script",
    "models",
    "container",
    "runtime",
)
# Embedded documents that tasks.edit merges one level deep instead of replacing.
TASK_EMBEDDED_FIELDS = ("script", "execution", "output", "models")
TASK_UPDATE_FIELDS = ("name", "tags", "system_tags", "comment", "project", "parent")


class TasksService(Service):
    """tasks.*: the endpoints listed in README.md, on the state's task documents."""

    def __init__(
        self, state: ServerState, projects: ProjectsService, queues: QueuesService
    ) -> None:
        super().__init__(state, projects.scrolls)
        self.projects = projects
        self.queues = queues

    def _dequeue_and_change_status(
        self,
        task: Doc,
        *,
        status_reason: str = "",
        status_message: str = "",
        new_status: str | None = None,
        new_status_for_aborted: str | None = None,
    ) -> dict[str, Any]:
        self._remove_from_queues(task["id"])
        if task["status"] not in (QUEUED, IN_PROGRESS):
            return {"updated": 0}
        if new_status_for_aborted and task["status"] == IN_PROGRESS:
            new_status = new_status_for_aborted
        return self._change_status(
            task,
            new_status or task.get("enqueue_status") or CREATED,
            force=True,
            status_reason=status_reason,
            status_message=status_message,
            extra={"enqueue_status": None},
        )

    def _set_status_from_call(
        self, req: dict[str, Any], new_status: str, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        task = self._task(req["task"])
        return self._change_status(
            task,
            new_status,
            force=bool(req.get("force")),
            status_reason=req.get("status_reason", ""),
            status_message=req.get("status_message", ""),
            extra=extra,
        )

    def _check_task_fields(self, fields: dict[str, Any]) -> None:
        if "type" in fields and fields["type"] not in TASK_TYPES:
            raise errors.ValidationError(f"invalid task type {fields['type']!r}")
        # tasks.create/edit/update parse references as the server's parse_from_call: 400/16.
        if fields.get("project") and fields["project"] not in self.state.projects:
            raise errors.FieldsValueError("expecting Project id", id=fields["project"])
        if fields.get("parent") and fields["parent"] not in self.state.tasks:
            raise errors.FieldsValueError("expecting Task id", id=fields["parent"])

    def ep_tasks__create(self, req: dict[str, Any]) -> dict[str, Any]:
        fields = {k: copy.deepcopy(req[k]) for k in TASK_CREATE_FIELDS if k in req}
        self._check_task_fields(fields)
        now = now_iso()
        output_dest = fields.pop("output_dest", None)
        task: Doc = {
            "id": new_id(),
            "company": COMPANY_ID,
            "user": USER_ID,
            "name": fields.pop("name"),
            "type": fields.pop("type"),
            "status": CREATED,
            "status_reason": "",
            "status_message": "",
            "status_changed": now,
            "comment": "",
            "created": now,
            "last_update": now,
            "last_change": now,
            "last_changed_by": USER_ID,
            "project": None,
            "parent": None,
            "tags": [],
            "system_tags": [],
            "script": {},
            "execution": {"artifacts": []},
            "output": {"destination": output_dest} if output_dest else {},
            "hyperparams": {},
            "configuration": {},
            "container": {},
            "models": {"input": [], "output": []},
            "runtime": {},
            "last_metrics": {},
            "last_iteration": 0,
        }
        task.update(fields)
        task["execution"].setdefault("artifacts", [])
        task["models"].setdefault("input", [])
        task["models"].setdefault("output", [])
        self.state.tasks[task["id"]] = task
        self._touch_project(task["project"])
        return {"id": task["id"]}

    def ep_tasks__get_by_id(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"task": sorted_tags([copy.deepcopy(self._task(req["task"]))])[0]}

    def _visible(self, req: dict[str, Any]) -> Callable[[Doc], bool] | None:
        """The server's hidden-task rule: tasks tagged `hidden` only with search_hidden or ids."""
        if req.get("search_hidden") or req.get("id"):
            return None
        return lambda t: HIDDEN_TAG not in (t.get("system_tags") or [])

    def _query(self, req: dict[str, Any]) -> dict[str, Any]:
        """The request as the query sees it: subprojects added when asked."""
        req = dict(req)
        if req.pop("include_subprojects", False) and req.get("project"):
            req["project"] = self.projects.with_children(as_list(req["project"]))
        return req

    def ep_tasks__get_all(self, req: dict[str, Any]) -> dict[str, Any]:
        query = self._query(req)
        tasks, extra = select(
            self.state.tasks.values(), query, TASK_QUERY, self.scrolls,
            condition=self._visible(query),
        )  # fmt: skip
        return {"tasks": sorted_tags(tasks), **extra}

    def ep_tasks__get_all_ex(self, req: dict[str, Any]) -> dict[str, Any]:
        query = self._query(req)
        tasks, extra = select(
            self.state.tasks.values(), query, TASK_QUERY, self.scrolls,
            condition=self._visible(query), resolve=self.resolve,
        )  # fmt: skip
        return {"tasks": sorted_tags(tasks), **extra}

    def ep_tasks__get_by_id_ex(self, req: dict[str, Any]) -> dict[str, Any]:
        if not req.get("id"):
            raise errors.MissingRequiredFields(field="id")
        tasks, _ = select(
            self.state.tasks.values(), req, TASK_QUERY, self.scrolls, resolve=self.resolve
        )
        return {"tasks": sorted_tags(tasks)}

    def ep_tasks__get_types(self, req: dict[str, Any]) -> dict[str, Any]:
        types = sorted({t["type"] for t in self.state.tasks.values()})
        return {"types": types}

    def ep_tasks__edit(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self._task(req["task"])
        if not req.get("force") and task["status"] != CREATED:
            raise errors.InvalidTaskStatus(expected=CREATED, status=task["status"])
        fields = {k: copy.deepcopy(req[k]) for k in (*TASK_CREATE_FIELDS, "status") if k in req}
        self._check_task_fields(fields)
        if "output_dest" in fields:
            task.setdefault("output", {})["destination"] = fields.pop("output_dest")
        for key in TASK_EMBEDDED_FIELDS:
            if isinstance(fields.get(key), dict) and isinstance(task.get(key), dict):
                fields[key] = {**task[key], **fields[key]}
        if not fields:
            return {"updated": 0}
        now = now_iso()
        fields.update(last_change=now, last_update=now, last_changed_by=USER_ID)
        task.update(fields)
        self._touch_project(task.get("project"))
        return {"updated": 1, "fields": fields}

    def ep_tasks__update(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self._task(req["task"])
        fields = {k: copy.deepcopy(req[k]) for k in TASK_UPDATE_FIELDS if k in req}
        if "output__error" in req:
            task.setdefault("output", {})["error"] = req["output__error"]
            fields["output.error"] = req["output__error"]
        self._check_task_fields(fields)
        if not fields:
            return {"updated": 0}
        task.update({k: v for k, v in fields.items() if "." not in k})
        task["last_change"] = now_iso()
        return {"updated": 1, "fields": fields}

    def ep_tasks__started(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self._task(req["task"])
        extra: dict[str, Any] = {}
        if not (task["status"] == IN_PROGRESS and task.get("started")):
            extra = {"started": now_iso(), "completed": None}
        res = self._set_status_from_call(req, IN_PROGRESS, extra)
        res["started"] = res["updated"]
        return res

    def ep_tasks__completed(self, req: dict[str, Any]) -> dict[str, Any]:
        res = self._set_status_from_call(req, COMPLETED, {"completed": now_iso()})
        if req.get("publish"):
            pub = self.ep_tasks__publish({"task": req["task"], "force": req.get("force")})
            res["published"] = pub["updated"]
            res["fields"]["status"] = PUBLISHED
        return res

    def ep_tasks__failed(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._set_status_from_call(req, FAILED, {"completed": now_iso()})

    def ep_tasks__stopped(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._set_status_from_call(req, STOPPED, {"completed": now_iso()})

    def ep_tasks__close(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._set_status_from_call(req, CLOSED)

    def ep_tasks__publish(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self._task(req["task"])
        res = self._set_status_from_call(req, PUBLISHED, {"published": now_iso()})
        for item in task["models"]["output"][-1:]:
            model = self.state.models.get(item["model"])
            if model is not None:
                model["ready"] = True
        return res

    def _stop(self, task: Doc, force: bool, status_reason: str) -> dict[str, Any]:
        last_update = self.state.task_update_ts.get(task["id"], 0.0)
        run_by_worker = bool(task.get("last_worker")) and time.time() - last_update < 600
        if task["status"] == QUEUED or DEVELOPMENT_TAG in task["system_tags"] or not run_by_worker:
            if task["status"] == QUEUED:
                self._remove_from_queues(task["id"])
            return self._change_status(
                task,
                STOPPED,
                force=force,
                status_reason=status_reason,
                status_message=f"Stopped by {USER_NAME}",
            )
        # A worker runs it: only ask the worker to stop; it reports `stopped` itself.
        return self._change_status(
            task,
            task["status"],
            force=force,
            status_reason=status_reason,
            status_message="stopping",
        )

    def ep_tasks__stop(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self._task(req["task"])
        return self._stop(task, bool(req.get("force")), req.get("status_reason", ""))

    def ep_tasks__stop_many(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._batch(
            req["ids"],
            lambda t: {
                "id": t["id"],
                **self._stop(t, bool(req.get("force")), req.get("status_reason", "")),
            },
        )

    def ep_tasks__reset(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self._task(req["task"])
        return self._reset(task, req)

    def _reset(self, task: Doc, req: dict[str, Any]) -> dict[str, Any]:
        force = bool(req.get("force"))
        if not force and task["status"] == PUBLISHED:
            raise errors.InvalidTaskStatus(task_id=task["id"], status=task["status"])
        dequeued: dict[str, Any] = {}
        if task["status"] == QUEUED:
            dequeued = {"removed": self._remove_from_queues(task["id"])}
        self._remove_from_queues(task["id"])
        execution = task.get("execution") or {}
        if req.get("clear_all"):
            execution = {"artifacts": []}
            task["script"] = {}
        else:
            execution = {k: v for k, v in execution.items() if k != "queue"}
            execution["artifacts"] = [
                a for a in execution.get("artifacts", []) if a.get("mode") == "input"
            ]
        deleted_models = 0
        if req.get("delete_output_models", True):
            for item in task["models"]["output"]:
                model = self.state.models.get(item["model"])
                if model and not model.get("ready"):
                    del self.state.models[item["model"]]
                    deleted_models += 1
        self.state.events.pop(task["id"], None)
        res = self._change_status(
            task,
            CREATED,
            force=force,
            status_reason="reset",
            status_message="reset",
            extra={
                "execution": execution,
                "last_iteration": 0,
                "last_metrics": {},
                "runtime": {},
                "started": None,
                "completed": None,
                "published": None,
                "active_duration": None,
                "last_worker": None,
                "enqueue_status": None,
                "output": {
                    k: v for k, v in (task.get("output") or {}).items() if k == "destination"
                },
                "models": {"input": task["models"]["input"], "output": []},
            },
        )
        res.update(dequeued=dequeued, deleted_models=deleted_models, urls={})
        return res

    def ep_tasks__reset_many(self, req: dict[str, Any]) -> dict[str, Any]:
        def one(task: Doc) -> dict[str, Any]:
            res = self._reset(task, req)
            res["dequeued"] = bool(res["dequeued"].get("removed"))
            return {"id": task["id"], **res}

        return self._batch(req["ids"], one)

    def _clone(self, req: dict[str, Any]) -> dict[str, Any]:
        source = self._task(req["task"])
        now = now_iso()
        execution = copy.deepcopy(source.get("execution") or {})
        overrides = copy.deepcopy(req.get("execution_overrides") or {})
        container = copy.deepcopy(req.get("new_task_container"))
        input_models = copy.deepcopy(req.get("new_task_input_models"))
        if overrides:
            model_id = overrides.pop("model", None)
            if not input_models and model_id:
                input_models = [{"model": model_id, "name": "input", "updated": now}]
            docker_cmd = overrides.pop("docker_cmd", None)
            if not container and docker_cmd:
                image, _, arguments = docker_cmd.partition(" ")
                container = {"image": image, "arguments": arguments}
            execution.update(overrides)
        execution["artifacts"] = [
            a for a in execution.get("artifacts", []) if a.get("mode", "output") != "output"
        ]
        execution.pop("queue", None)
        project = req.get("new_task_project")
        new_project = None
        if not project and req.get("new_project_name"):
            existing = self.state.project_by_name(req["new_project_name"])
            if existing is None:
                existing = self.projects.new_project(req["new_project_name"])
            project = existing["id"]
            new_project = {"id": project, "name": req["new_project_name"]}
        if project:
            self._project(project)
        if req.get("new_task_parent"):
            self._task(req["new_task_parent"])
        system_tags = req.get("new_task_system_tags") or [
            t for t in source["system_tags"] if t not in (DEVELOPMENT_TAG, ARCHIVED_TAG)
        ]
        task = copy.deepcopy(source)
        task.update(
            id=new_id(),
            user=USER_ID,
            created=now,
            last_update=now,
            last_change=now,
            status=CREATED,
            status_reason="",
            status_message="",
            status_changed=now,
            name=req.get("new_task_name") or source["name"],
            comment=req.get("new_task_comment") or source.get("comment", ""),
            parent=req.get("new_task_parent") or source.get("parent") or source["id"],
            project=project or source.get("project"),
            tags=req.get("new_task_tags") or source.get("tags", []),
            system_tags=system_tags,
            output={"destination": source["output"]["destination"]}
            if (source.get("output") or {}).get("destination")
            else {},
            models={"input": input_models or source["models"]["input"], "output": []},
            container=container or source.get("container") or {},
            execution=execution,
            configuration=copy.deepcopy(req.get("new_task_configuration"))
            or source.get("configuration")
            or {},
            hyperparams=copy.deepcopy(req.get("new_task_hyperparams"))
            or source.get("hyperparams")
            or {},
            last_metrics={},
            last_iteration=0,
            runtime={},
        )
        for key in (
            "started",
            "completed",
            "published",
            "last_worker",
            "enqueue_status",
            "active_duration",
        ):
            task.pop(key, None)
        self.state.tasks[task["id"]] = task
        self._touch_project(task["project"])
        return {"id": task["id"], **({"new_project": new_project} if new_project else {})}

    def ep_tasks__clone(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._clone(req)

    def _resolve_queue(self, req: dict[str, Any]) -> str:
        if req.get("queue") and req.get("queue_name"):
            raise errors.ValidationError("Either queue id or queue name should be provided")
        if req.get("queue_name"):
            queue = self.state.queue_by_name(req["queue_name"])
            if queue is None:
                queue = self.queues.new_queue(req["queue_name"])
            return str(queue["id"])
        if req.get("queue"):
            return str(self._queue(req["queue"])["id"])
        return str(self.queues.default_queue()["id"])

    def _enqueue(self, task: Doc, queue_id: str, req: dict[str, Any]) -> dict[str, Any]:
        before = task["status"]
        if before == QUEUED and task.get("enqueue_status"):
            before = task["enqueue_status"]
        queue = self.state.queues[queue_id]
        if any(e["task"] == task["id"] for e in queue["entries"]):
            # The server sets `queued`, fails to add the entry, and reverts the status with
            # force, which also clears enqueue_status.
            original = task["status"]
            self._change_status(task, QUEUED, force=bool(req.get("force")))
            self._change_status(
                task,
                original,
                force=True,
                status_reason="failed enqueueing",
                extra={"enqueue_status": None},
            )
            raise errors.APIError(
                400,
                706,
                "Failed adding task to queue since task is already queued",
                task=task["id"],
            )
        res = self._change_status(
            task,
            QUEUED,
            force=bool(req.get("force")),
            status_reason=req.get("status_reason", ""),
            status_message=req.get("status_message", ""),
            extra={"enqueue_status": before},
        )
        queue["entries"].append({"task": task["id"], "added": now_iso()})
        queue["last_update"] = now_iso()
        task.setdefault("execution", {})["queue"] = queue_id
        res["fields"]["execution.queue"] = queue_id
        self._remove_from_queues(task["id"], exclude=queue_id)
        return {"queued": 1, **res}

    def ep_tasks__enqueue(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self._task(req["task"])
        return self._enqueue(task, self._resolve_queue(req), req)

    def ep_tasks__enqueue_many(self, req: dict[str, Any]) -> dict[str, Any]:
        queue_id = self._resolve_queue(req)
        return self._batch(req["ids"], lambda t: {"id": t["id"], **self._enqueue(t, queue_id, req)})

    def _dequeue(self, task: Doc, req: dict[str, Any]) -> dict[str, Any]:
        new_status = req.get("new_status")
        if new_status and new_status not in TASK_STATUSES:
            raise errors.ValidationError(f"Invalid task status: {new_status}")
        res = self._dequeue_and_change_status(
            task,
            status_reason=req.get("status_reason", ""),
            status_message=req.get("status_message", ""),
            new_status=new_status,
        )
        return {"dequeued": 1, **res}

    def ep_tasks__dequeue(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self.state.tasks.get(req["task"])
        if task is None:
            self._remove_from_queues(req["task"])
            return {"dequeued": 1, "updated": 0}
        return self._dequeue(task, req)

    def ep_tasks__dequeue_many(self, req: dict[str, Any]) -> dict[str, Any]:
        def one(task: Doc) -> dict[str, Any]:
            res = self._dequeue(task, req)
            return {"id": task["id"], **res, "dequeued": bool(res["dequeued"])}

        return self._batch(req["ids"], one)

    def _delete(self, task: Doc, req: dict[str, Any]) -> dict[str, Any]:
        if (
            task["status"] != CREATED
            and ARCHIVED_TAG not in task["system_tags"]
            and not req.get("force")
        ):
            raise errors.TaskCannotBeDeleted(
                "due to status, use force=True",
                task=task["id"],
                expected=CREATED,
                current=task["status"],
            )
        self._dequeue_and_change_status(task)
        deleted_models = 0
        updated_models = 0
        for item in task["models"]["output"]:
            model = self.state.models.get(item["model"])
            if model is None:
                continue
            if req.get("delete_output_models", True) and not model.get("ready"):
                del self.state.models[item["model"]]
                deleted_models += 1
            else:
                model["task"] = None
                updated_models += 1
        updated_children = 0
        for other in self.state.tasks.values():
            if other.get("parent") == task["id"]:
                other["parent"] = None
                updated_children += 1
        del self.state.tasks[task["id"]]
        self.state.events.pop(task["id"], None)
        self._touch_project(task.get("project"))
        return {
            "deleted": 1,
            "updated_children": updated_children,
            "updated_models": updated_models,
            "deleted_models": deleted_models,
            "urls": {},
        }

    def ep_tasks__delete(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._delete(self._task(req["task"]), req)

    def ep_tasks__delete_many(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._batch(req["ids"], lambda t: {"id": t["id"], **self._delete(t, req)})

    def _archive(self, task: Doc, req: dict[str, Any]) -> int:
        self._dequeue_and_change_status(
            task,
            status_reason=req.get("status_reason", ""),
            status_message=req.get("status_message", ""),
            new_status_for_aborted=STOPPED,
        )
        if ARCHIVED_TAG not in task["system_tags"]:
            task["system_tags"] = [*task["system_tags"], ARCHIVED_TAG]
        task["status_message"] = req.get("status_message", "")
        task["status_reason"] = req.get("status_reason", "")
        task["last_change"] = now_iso()
        return 1

    def ep_tasks__archive(self, req: dict[str, Any]) -> dict[str, Any]:
        tasks = [self._task(t) for t in req["tasks"]]
        return {"archived": sum(self._archive(t, req) for t in tasks)}

    def ep_tasks__archive_many(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._batch(
            req["ids"], lambda t: {"id": t["id"], "archived": bool(self._archive(t, req))}
        )

    def ep_tasks__unarchive_many(self, req: dict[str, Any]) -> dict[str, Any]:
        def one(task: Doc) -> dict[str, Any]:
            task["system_tags"] = [t for t in task["system_tags"] if t != ARCHIVED_TAG]
            return {"id": task["id"], "unarchived": True}

        return self._batch(req["ids"], one)

    def _batch(self, ids: list[str], func: Callable[[Doc], dict[str, Any]]) -> dict[str, Any]:
        """Run ``func`` per task; failures are reported per id as the server's batch calls do."""
        if not ids:
            raise errors.ValidationError("ids: at least one id is required")
        succeeded, failed = [], []
        for task_id in ids:
            try:
                succeeded.append(func(self._task(task_id)))
            except errors.APIError as exc:
                failed.append(
                    {
                        "id": task_id,
                        "error": {
                            "codes": [exc.code, exc.subcode],
                            "msg": exc.msg,
                            "data": exc.data,
                        },
                    }
                )
        return {"succeeded": succeeded, "failed": failed}

    def ep_tasks__ping(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self._task(req["task"])
        self.set_last_update(task)
        self.state.task_update_ts[task["id"]] = time.time()
        return {}

    def _task_for_update(self, task_id: str, force: bool = False) -> Doc:
        """clearml-server's get_task_for_update: `created` tasks only, running ones with force."""
        task = self._task(task_id)
        allowed = (CREATED, QUEUED, IN_PROGRESS) if force else (CREATED,)
        if task["status"] not in allowed:
            raise errors.InvalidTaskStatus(expected=CREATED, status=task["status"])
        return task

    def ep_tasks__set_requirements(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self._task(req["task"])
        if not task.get("script"):
            raise errors.MissingTaskFields("Task has no script field", task=task["id"])
        task["script"]["requirements"] = req["requirements"]
        return {"updated": 1, "fields": {"script.requirements": req["requirements"]}}

    def ep_tasks__add_or_update_artifacts(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self._task_for_update(req["task"], force=bool(req.get("force")))
        artifacts = task.setdefault("execution", {}).setdefault("artifacts", [])
        for artifact in req["artifacts"]:
            artifact = {"mode": "output", **artifact}
            key = (artifact["key"], artifact["mode"])
            artifacts[:] = [a for a in artifacts if (a["key"], a.get("mode", "output")) != key]
            artifacts.append(artifact)
        task["last_change"] = now_iso()
        return {"updated": 1}

    def ep_tasks__delete_artifacts(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self._task_for_update(req["task"], force=bool(req.get("force")))
        artifacts = task["execution"].setdefault("artifacts", [])
        drop = {(a["key"], a.get("mode", "output")) for a in req["artifacts"]}
        kept = [a for a in artifacts if (a["key"], a.get("mode", "output")) not in drop]
        deleted = len(artifacts) - len(kept)
        task["execution"]["artifacts"] = kept
        return {"deleted": deleted}

    def ep_tasks__add_or_update_model(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self._task_for_update(req["task"], force=True)
        kind = req["type"]
        items = task["models"].setdefault(kind, [])
        item = {"name": req["name"], "model": req["model"], "updated": now_iso()}
        for index, existing in enumerate(items):
            if existing["name"] == req["name"]:
                items[index] = item
                break
        else:
            items.append(item)
        if req.get("iteration") is not None:
            task["last_iteration"] = max(task.get("last_iteration") or 0, req["iteration"])
        task["last_update"] = now_iso()
        return {"updated": 1}

    def ep_tasks__delete_models(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self._task_for_update(req["task"], force=True)
        drop = {(m["name"], m["type"]) for m in req["models"]}
        deleted = 0
        for kind in ("input", "output"):
            before = task["models"].get(kind, [])
            task["models"][kind] = [m for m in before if (m["name"], kind) not in drop]
            deleted += len(before) - len(task["models"][kind])
        return {"updated": int(bool(deleted))}

    def ep_tasks__get_hyper_params(self, req: dict[str, Any]) -> dict[str, Any]:
        params = []
        for task_id in req["tasks"]:
            task = self._task(task_id)
            flat = [
                dict(p)
                for section in task.get("hyperparams", {}).values()
                for p in section.values()
            ]
            params.append({"task": task_id, "hyperparams": flat})
        return {"params": params}

    def ep_tasks__edit_hyper_params(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self._task_for_update(req["task"], force=bool(req.get("force")))
        replace = req.get("replace_hyperparams", "none")
        hyperparams = task.setdefault("hyperparams", {})
        if replace == "all":
            hyperparams.clear()
        if replace == "section":
            for section in {p.get("section", "General") for p in req["hyperparams"]}:
                hyperparams.pop(section, None)
        for param in req["hyperparams"]:
            section = param.get("section", "General")
            item = {"section": section, **param}
            hyperparams.setdefault(section, {})[param["name"]] = item
        task["last_change"] = now_iso()
        return {"updated": 1}

    def ep_tasks__delete_hyper_params(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self._task_for_update(req["task"], force=bool(req.get("force")))
        deleted = 0
        for param in req["hyperparams"]:
            section = task["hyperparams"].get(param["section"])
            if section is None:
                continue
            if param.get("name"):
                deleted += int(section.pop(param["name"], None) is not None)
            else:
                deleted += int(task["hyperparams"].pop(param["section"], None) is not None)
        return {"deleted": deleted}

    def ep_tasks__get_configurations(self, req: dict[str, Any]) -> dict[str, Any]:
        names = req.get("names")
        result = []
        for task_id in req["tasks"]:
            config = self._task(task_id).get("configuration", {})
            items = [dict(v) for k, v in config.items() if not names or k in names]
            result.append({"task": task_id, "configuration": items})
        return {"configurations": result}

    def ep_tasks__get_configuration_names(self, req: dict[str, Any]) -> dict[str, Any]:
        return {
            "configurations": [
                {"task": t, "names": sorted(self._task(t).get("configuration", {}))}
                for t in req["tasks"]
            ]
        }

    def ep_tasks__edit_configuration(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self._task_for_update(req["task"], force=bool(req.get("force")))
        configuration = task.setdefault("configuration", {})
        if req.get("replace_configuration"):
            configuration.clear()
        for item in req["configuration"]:
            configuration[item["name"]] = dict(item)
        return {"updated": 1}

    def ep_tasks__delete_configuration(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self._task_for_update(req["task"], force=bool(req.get("force")))
        deleted = sum(
            task["configuration"].pop(name, None) is not None for name in req["configuration"]
        )
        return {"deleted": deleted}
