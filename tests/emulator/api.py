"""Endpoint implementations: what each ClearML API call does to the emulator's state.

Semantics follow clearml-server (``apiserver/services/*.py`` and ``apiserver/bll/task/``):
the task status machine, what ``tasks.clone`` copies, FIFO queues, ``last_metrics`` kept up to
date from scalar events. Each handler takes the validated request body and returns the
``data`` part of the response envelope, or raises :class:`errors.APIError`.
"""

from __future__ import annotations

import copy
import hashlib
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from tests.emulator import errors
from tests.emulator.state import COMPANY_ID, USER_ID, USER_NAME, Doc, ServerState, new_id, now_iso

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
TASK_TYPES = (
    "training",
    "testing",
    "inference",
    "data_processing",
    "application",
    "monitor",
    "controller",
    "optimizer",
    "service",
    "qc",
    "custom",
)
# The iteration the SDK uses for single-value scalars (report_single_value).
SINGLE_SCALAR_ITERATION = -(2**31)
DEVELOPMENT_TAG = "development"
ARCHIVED_TAG = "archived"
# Seconds without a status report after which the server forgets a worker (default timeout).
DEFAULT_WORKER_TIMEOUT = 600

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


def md5_key(name: str) -> str:
    """The key clearml-server uses for a metric or variant name inside ``last_metrics``."""
    return hashlib.md5(name.encode("utf-8")).hexdigest()


def _dotted_get(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def _dotted_set(doc: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        doc = doc.setdefault(part, {})
    doc[parts[-1]] = value


def _project_fields(doc: Doc, only_fields: list[str] | None) -> Doc:
    """Return ``doc`` restricted to ``only_fields`` (dotted paths), id always included."""
    if not only_fields:
        return copy.deepcopy(doc)
    out: Doc = {"id": doc["id"]}
    for path in only_fields:
        value = _dotted_get(doc, path)
        if value is not None:
            _dotted_set(out, path, copy.deepcopy(value))
    return out


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise errors.InvalidRegexError(str(exc), pattern=pattern) from exc


def _tags_match(doc_tags: list[str], wanted: list[str]) -> bool:
    """clearml-server's list-field filter: plain values match any, ``-x`` excludes x."""
    include = [t for t in wanted if not t.startswith("-") and not t.startswith("__$")]
    exclude = [t[1:] for t in wanted if t.startswith("-")]
    if any(t in doc_tags for t in exclude):
        return False
    if "__$all" in wanted or "__$and" in wanted:
        return all(t in doc_tags for t in include)
    return not include or any(t in doc_tags for t in include)


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, str(value))


def _select(
    docs: Iterable[Doc],
    req: dict[str, Any],
    *,
    pattern_fields: tuple[str, ...] = ("name",),
    list_fields: tuple[str, ...] = ("id", "tags", "system_tags"),
    value_fields: tuple[str, ...] = (),
) -> list[Doc]:
    """Filter, order, page and project documents the way ``*.get_all`` does."""
    result = list(docs)
    for name in pattern_fields:
        pattern = req.get(name)
        if pattern:
            regex = _compile(pattern)
            result = [d for d in result if regex.search(str(d.get(name) or ""))]
    for name in list_fields:
        wanted = _as_list(req.get(name))
        if not wanted:
            continue
        if name in ("tags", "system_tags"):
            result = [d for d in result if _tags_match(d.get(name) or [], wanted)]
        else:
            result = [d for d in result if _dotted_get(d, name) in wanted]
    for name in value_fields:
        if name in req:
            wanted = _as_list(req[name])
            result = [d for d in result if _dotted_get(d, name) in wanted]
    for key in ("_any_", "_all_"):
        spec = req.get(key)
        if isinstance(spec, dict) and spec.get("pattern"):
            regex = _compile(spec["pattern"])
            fields = spec.get("fields") or list(pattern_fields)
            combine = any if key == "_any_" else all
            result = [
                d
                for d in result
                if combine(regex.search(str(_dotted_get(d, f) or "")) for f in fields)
            ]
    for order in reversed(_as_list(req.get("order_by"))):
        descending = order.startswith("-")
        path = order.lstrip("-+")

        def by_path(doc: Doc, path: str = path) -> tuple[int, Any]:
            return _sort_key(_dotted_get(doc, path))

        result.sort(key=by_path, reverse=descending)
    page, page_size = req.get("page"), req.get("page_size")
    if page is not None and page_size:
        result = result[page * page_size : (page + 1) * page_size]
    elif req.get("size"):
        result = result[: req["size"]]
    return [_project_fields(d, req.get("only_fields")) for d in result]


class ClearMLApi:
    """The endpoints the emulator serves, bound to one :class:`ServerState`."""

    def __init__(self, state: ServerState, files_url: str = "") -> None:
        self.state = state
        self.files_url = files_url
        self.handlers: dict[str, Handler] = {}
        # (task, metric, variant) -> (iteration, timestamp) of the event behind last_metrics' value
        self._last_value_position: dict[tuple[str, str, str], tuple[int, int]] = {}
        # task id -> time.time() of its last ping/worker report (is a worker still running it?)
        self._task_update_ts: dict[str, float] = {}
        for attr in dir(self):
            if attr.startswith("ep_"):
                service, _, action = attr[3:].partition("__")
                self.handlers[f"{service}.{action}"] = getattr(self, attr)

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

    # ---------------------------------------------------------------- auth / server
    def ep_auth__login(self, req: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("auth.login is answered by the HTTP layer")  # pragma: no cover

    def ep_users__get_current_user(self, req: dict[str, Any]) -> dict[str, Any]:
        return {
            "user": {
                "id": USER_ID,
                "name": USER_NAME,
                "company": {"id": COMPANY_ID, "name": "emulator"},
                "role": "user",
                "preferences": {},
            },
            "getting_started": {},
        }

    # ---------------------------------------------------------------- projects
    def _new_project(self, name: str, description: str = "", **extra: Any) -> Doc:
        name = name.strip()
        if not name or any(not part.strip() for part in name.split("/")):
            raise errors.InvalidProjectName(name=name)
        if self.state.project_by_name(name) is not None:
            raise errors.ExpectedUniqueData("Project with the same name already exists", name=name)
        parent_id = None
        if "/" in name:
            parent_name = name.rsplit("/", 1)[0]
            parent = self.state.project_by_name(parent_name) or self._new_project(parent_name)
            parent_id = parent["id"]
        now = now_iso()
        project: Doc = {
            "id": new_id(),
            "name": name,
            "basename": name.rsplit("/", 1)[-1],
            "description": description,
            "company": COMPANY_ID,
            "user": USER_ID,
            "created": now,
            "last_update": now,
            "tags": [],
            "system_tags": [],
            "parent": parent_id,
            "default_output_destination": None,
        }
        project.update({k: v for k, v in extra.items() if v is not None})
        self.state.projects[project["id"]] = project
        return project

    def ep_projects__create(self, req: dict[str, Any]) -> dict[str, Any]:
        extra = {k: req.get(k) for k in ("tags", "system_tags", "default_output_destination")}
        project = self._new_project(req["name"], req.get("description", ""), **extra)
        return {"id": project["id"]}

    def ep_projects__get_by_id(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"project": copy.deepcopy(self._project(req["project"]))}

    def ep_projects__get_all(self, req: dict[str, Any]) -> dict[str, Any]:
        projects = list(self.state.projects.values())
        if not req.get("search_hidden"):
            projects = [p for p in projects if "hidden" not in p["system_tags"]]
        return {
            "projects": _select(
                projects,
                req,
                pattern_fields=("name", "basename", "description"),
                value_fields=("parent",),
            )
        }

    def ep_projects__update(self, req: dict[str, Any]) -> dict[str, Any]:
        project = self._project(req["project"])
        fields: dict[str, Any] = {
            k: req[k]
            for k in ("description", "tags", "system_tags", "default_output_destination")
            if k in req
        }
        project.update(fields, last_update=now_iso())
        return {"updated": 1, "fields": fields}

    def ep_projects__delete(self, req: dict[str, Any]) -> dict[str, Any]:
        project = self._project(req["project"])
        tasks = [t for t in self.state.tasks.values() if t.get("project") == project["id"]]
        if tasks and not req.get("force"):
            raise errors.ProjectHasTasks(project=project["id"], tasks=len(tasks))
        del self.state.projects[project["id"]]
        return {"deleted": 1, "disassociated_tasks": 0, "deleted_models": 0, "deleted_tasks": 0}

    # ---------------------------------------------------------------- tasks
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
        return {"task": copy.deepcopy(self._task(req["task"]))}

    def ep_tasks__get_all(self, req: dict[str, Any]) -> dict[str, Any]:
        tasks = list(self.state.tasks.values())
        if not req.get("search_hidden"):
            hidden_projects = {
                p["id"] for p in self.state.projects.values() if "hidden" in p["system_tags"]
            }
            if not req.get("project"):
                tasks = [t for t in tasks if t.get("project") not in hidden_projects]
        result = _select(
            tasks,
            req,
            pattern_fields=("name", "comment"),
            list_fields=("id", "tags", "system_tags", "status", "type", "project", "user"),
            value_fields=("parent", "execution.queue"),
        )
        return {"tasks": result}

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
        last_update = self._task_update_ts.get(task["id"], 0.0)
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
                existing = self._new_project(req["new_project_name"])
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
                queue = self._new_queue(req["queue_name"])
            return str(queue["id"])
        if req.get("queue"):
            return str(self._queue(req["queue"])["id"])
        return str(self._default_queue()["id"])

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
        task["last_update"] = now_iso()
        self._task_update_ts[task["id"]] = time.time()
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

    def ep_tasks__edit_runtime(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self._task(req["task"])
        task.setdefault("runtime", {}).update(req.get("runtime") or {})
        return {"updated": 1}

    # ---------------------------------------------------------------- models
    def ep_models__create(self, req: dict[str, Any]) -> dict[str, Any]:
        if req.get("project"):
            self._project(req["project"])
        if req.get("task"):
            self._task(req["task"])
        now = now_iso()
        model: Doc = {
            "id": new_id(),
            "company": COMPANY_ID,
            "user": USER_ID,
            "name": req["name"],
            "uri": req["uri"],
            "created": now,
            "last_update": now,
            "ready": req.get("ready", True),
            "tags": [],
            "system_tags": [],
            "labels": {},
            "design": {},
            "comment": "",
            "framework": None,
            "project": None,
            "task": None,
            "parent": None,
            "metadata": {},
        }
        for key in (
            "tags",
            "system_tags",
            "labels",
            "design",
            "comment",
            "framework",
            "project",
            "task",
            "parent",
        ):
            if key in req:
                model[key] = copy.deepcopy(req[key])
        if isinstance(req.get("metadata"), list):
            model["metadata"] = {m["key"]: m for m in req["metadata"]}
        self.state.models[model["id"]] = model
        return {"id": model["id"], "created": True}

    def ep_models__get_by_id(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"model": copy.deepcopy(self._model(req["model"]))}

    def ep_models__get_all(self, req: dict[str, Any]) -> dict[str, Any]:
        models = list(self.state.models.values())
        return {
            "models": _select(
                models,
                req,
                pattern_fields=("name", "comment"),
                list_fields=("id", "tags", "system_tags", "project", "task", "user", "framework"),
                value_fields=("ready", "uri", "parent"),
            )
        }

    def ep_models__edit(self, req: dict[str, Any]) -> dict[str, Any]:
        model = self._model(req["model"])
        if model.get("ready") and not req.get("force") and "uri" in req:
            raise errors.APIError(400, 203, "Model is ready", model=model["id"])
        if req.get("task"):
            self._task(req["task"])
        fields: dict[str, Any] = {
            k: copy.deepcopy(req[k])
            for k in (
                "name",
                "uri",
                "comment",
                "tags",
                "system_tags",
                "framework",
                "design",
                "labels",
                "ready",
                "project",
                "parent",
                "task",
            )
            if k in req
        }
        fields["last_update"] = now_iso()
        model.update(fields)
        if req.get("iteration") is not None and model.get("task") in self.state.tasks:
            task = self.state.tasks[model["task"]]
            task["last_iteration"] = max(task.get("last_iteration") or 0, req["iteration"])
        return {"updated": 1, "fields": fields}

    def ep_models__update(self, req: dict[str, Any]) -> dict[str, Any]:
        return self.ep_models__edit(req)

    def ep_models__set_ready(self, req: dict[str, Any]) -> dict[str, Any]:
        model = self._model(req["model"])
        model["ready"] = True
        return {"updated": 1, "published_task": {}}

    def ep_models__update_for_task(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self._task(req["task"])
        created = False
        if req.get("override_model_id"):
            model_id = self._model(req["override_model_id"])["id"]
        else:
            if not req.get("uri"):
                raise errors.ValidationError("missing uri")
            model_id = self.ep_models__create(
                {
                    "name": req.get("name") or task["name"],
                    "uri": req["uri"],
                    "task": task["id"],
                    "project": task.get("project"),
                    "comment": req.get("comment", ""),
                    "tags": req.get("tags", []),
                    "ready": False,
                }
            )["id"]
            created = True
        self.ep_tasks__add_or_update_model(
            {"task": task["id"], "name": "output", "model": model_id, "type": "output"}
        )
        return {"id": model_id, "created": created, "updated": 1}

    def ep_models__add_or_update_metadata(self, req: dict[str, Any]) -> dict[str, Any]:
        model = self._model(req["model"])
        if req.get("replace_metadata"):
            model["metadata"] = {}
        for item in req["metadata"]:
            model["metadata"][item["key"]] = dict(item)
        return {"updated": 1}

    def ep_models__delete(self, req: dict[str, Any]) -> dict[str, Any]:
        model = self._model(req["model"])
        del self.state.models[model["id"]]
        for task in self.state.tasks.values():
            for kind in ("input", "output"):
                task["models"][kind] = [
                    m for m in task["models"].get(kind, []) if m["model"] != model["id"]
                ]
        return {"deleted": True, "url": model.get("uri")}

    # ---------------------------------------------------------------- queues
    def _new_queue(
        self, name: str, tags: list[str] | None = None, system_tags: list[str] | None = None
    ) -> Doc:
        if not name.strip():
            raise errors.ValidationError("queue name is empty")
        if self.state.queue_by_name(name) is not None:
            raise errors.ExpectedUniqueData("Queue with the same name already exists", name=name)
        now = now_iso()
        queue: Doc = {
            "id": new_id(),
            "name": name,
            "display_name": name,
            "company": COMPANY_ID,
            "user": USER_ID,
            "created": now,
            "last_update": now,
            "tags": list(tags or []),
            "system_tags": list(system_tags or []),
            "entries": [],
            "metadata": {},
        }
        self.state.queues[queue["id"]] = queue
        return queue

    def _default_queue(self) -> Doc:
        defaults = [q for q in self.state.queues.values() if "default" in q["system_tags"]]
        if not defaults:
            raise errors.NoDefaultQueue()
        if len(defaults) > 1:
            raise errors.APIError(400, 708, "More than one queue is tagged as the default queue")
        return defaults[0]

    def ep_queues__create(self, req: dict[str, Any]) -> dict[str, Any]:
        queue = self._new_queue(req["name"], req.get("tags"), req.get("system_tags"))
        return {"id": queue["id"]}

    def ep_queues__get_by_id(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"queue": copy.deepcopy(self._queue(req["queue"]))}

    def ep_queues__get_all(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"queues": _select(self.state.queues.values(), req)}

    def ep_queues__get_default(self, req: dict[str, Any]) -> dict[str, Any]:
        queue = self._default_queue()
        return {"id": queue["id"], "name": queue["name"]}

    def ep_queues__update(self, req: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(req["queue"])
        fields: dict[str, Any] = {k: req[k] for k in ("name", "tags", "system_tags") if k in req}
        queue.update(fields, last_update=now_iso())
        return {"updated": 1, "fields": fields}

    def ep_queues__delete(self, req: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(req["queue"])
        if queue["entries"] and not req.get("force"):
            raise errors.QueueNotEmpty("use force=true to delete", queue=queue["id"])
        for entry in queue["entries"]:
            task = self.state.tasks.get(entry["task"])
            if task and task["status"] == QUEUED:
                self._change_status(task, task.get("enqueue_status") or CREATED, force=True)
        del self.state.queues[queue["id"]]
        return {"deleted": 1}

    def ep_queues__add_task(self, req: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(req["queue"])
        self._task(req["task"])
        if any(e["task"] == req["task"] for e in queue["entries"]):
            raise errors.APIError(400, 706, "Task already queued", task=req["task"])
        queue["entries"].append({"task": req["task"], "added": now_iso()})
        return {"added": 1}

    def ep_queues__remove_task(self, req: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(req["queue"])
        before = len(queue["entries"])
        queue["entries"] = [e for e in queue["entries"] if e["task"] != req["task"]]
        if before == len(queue["entries"]):
            raise errors.InvalidQueueOrTaskNotQueued(task=req["task"], queue=queue["id"])
        return {"removed": 1}

    def ep_queues__get_num_entries(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"num": len(self._queue(req["queue"])["entries"])}

    def ep_queues__peek_task(self, req: dict[str, Any]) -> dict[str, Any]:
        entries = self._queue(req["queue"])["entries"]
        return {"task": entries[0]["task"] if entries else None}

    def ep_queues__get_next_task(self, req: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(req["queue"])
        entries = queue["entries"]
        if not entries or (req.get("task") and entries[0]["task"] != req["task"]):
            return {}
        entry = entries.pop(0)
        queue["last_update"] = now_iso()
        data: dict[str, Any] = {"entry": dict(entry)}
        task = self.state.tasks.get(entry["task"])
        if task is not None:
            if task["status"] == STOPPED:
                task["status"] = QUEUED
            if req.get("get_task_info"):
                data["task_info"] = {"company": task["company"], "user": task["user"]}
        return data

    # ---------------------------------------------------------------- workers
    def _expire_workers(self) -> None:
        now = time.time()
        for worker_id, worker in list(self.state.workers.items()):
            if now - worker["last_report_ts"] > worker["timeout"]:
                del self.state.workers[worker_id]

    def _queue_ids(self, names_or_ids: list[str]) -> list[str]:
        ids = []
        for value in names_or_ids:
            queue = self.state.queues.get(value) or self.state.queue_by_name(value)
            ids.append(queue["id"] if queue else value)
        return ids

    def ep_workers__register(self, req: dict[str, Any]) -> dict[str, Any]:
        self._expire_workers()
        now = now_iso()
        worker = self.state.workers.get(req["worker"]) or {
            "id": req["worker"],
            "user": {"id": USER_ID, "name": USER_NAME},
            "company": {"id": COMPANY_ID, "name": "emulator"},
            "register_time": now,
            "ip": "127.0.0.1",
            "task": None,
            "queue": None,
        }
        worker.update(
            queues=self._queue_ids(req.get("queues") or []),
            tags=req.get("tags", []),
            system_tags=req.get("system_tags", []),
            timeout=req.get("timeout") or DEFAULT_WORKER_TIMEOUT,
            last_activity_time=now,
            last_report_time=now,
            last_report_ts=time.time(),
        )
        self.state.workers[worker["id"]] = worker
        return {}

    def ep_workers__unregister(self, req: dict[str, Any]) -> dict[str, Any]:
        if self.state.workers.pop(req["worker"], None) is None:
            raise errors.WorkerNotRegistered(worker=req["worker"])
        return {}

    def ep_workers__status_report(self, req: dict[str, Any]) -> dict[str, Any]:
        self._expire_workers()
        if req["worker"] not in self.state.workers:
            # The server registers a worker on its first report.
            self.ep_workers__register({"worker": req["worker"], "queues": req.get("queues")})
        worker = self.state.workers[req["worker"]]
        now = now_iso()
        worker.update(last_report_time=now, last_report_ts=time.time())
        if req.get("queues") is not None:
            worker["queues"] = self._queue_ids(req["queues"])
        task_id = req.get("task")
        if task_id and task_id not in self.state.tasks:
            raise errors.InvalidTaskId(id=task_id)
        if task_id:
            task = self.state.tasks[task_id]
            worker["task"] = {
                "id": task_id,
                "name": task["name"],
                "last_iteration": task.get("last_iteration"),
            }
            worker["last_activity_time"] = now
            task["last_worker"] = worker["id"]
            task["last_worker_report"] = now
            task["last_update"] = now
            self._task_update_ts[task["id"]] = time.time()
        else:
            worker["task"] = None
        worker["queue"] = req.get("queue")
        worker["machine_stats"] = req.get("machine_stats", {})
        return {}

    def ep_workers__get_all(self, req: dict[str, Any]) -> dict[str, Any]:
        self._expire_workers()
        workers = []
        for worker in self.state.workers.values():
            if req.get("last_seen") and time.time() - worker["last_report_ts"] > req["last_seen"]:
                continue
            out = {k: copy.deepcopy(v) for k, v in worker.items() if not k.endswith("_ts")}
            out["queues"] = [
                {
                    "id": q,
                    "name": self.state.queues[q]["name"],
                    "num_tasks": len(self.state.queues[q]["entries"]),
                }
                for q in worker["queues"]
                if q in self.state.queues
            ]
            workers.append(out)
        return {"workers": workers}

    # ---------------------------------------------------------------- events
    EVENT_TYPES = (
        "training_stats_scalar",
        "training_stats_vector",
        "training_debug_image",
        "plot",
        "log",
    )

    def add_events(self, events: list[Any]) -> dict[str, Any]:
        """events.add_batch (and events.add): store events, keep last_metrics up to date.

        Like the server, a bad event is counted in ``errors_info`` and skipped; the call fails
        (400/131) only when no event was added.
        """
        if not events:
            raise errors.BatchContainsNoItems()
        added = 0
        errors_info: dict[str, int] = {}

        def reject(reason: str) -> None:
            errors_info[reason] = errors_info.get(reason, 0) + 1

        max_iter: dict[str, int] = {}
        touched: set[str] = set()
        for raw in events:
            if not isinstance(raw, dict):
                raise errors.ValidationError("event must be an object")
            event = {k: v for k, v in raw.items() if v is not None}
            allow_locked = bool(event.pop("allow_locked", False))
            model_event = bool(event.get("model_event", False))
            if model_event and "model" in event:
                event["task"] = event.pop("model")
            event["model_event"] = model_event
            event_type = event.get("type")
            if event_type is None:
                reject("Event must have a 'type' field")
                continue
            event_type = event["type"] = str(event_type).replace(" ", "_")
            if event_type not in self.EVENT_TYPES:
                reject(f"Invalid event type {event_type}")
                continue
            if model_event and event_type == "log":
                reject("Task log events are not supported for models")
                continue
            owner = event.get("task")
            if owner is None:
                reject("Event must have a 'task' field")
                continue
            if not self._accepts_events(owner, model_event, allow_locked):
                reject(f"Invalid {'model' if model_event else 'task'} id {owner}")
                continue
            if "ts" in event:
                event["timestamp"] = event.pop("ts")
            event.setdefault("timestamp", int(time.time() * 1000))
            event.setdefault("worker", "")
            if "iter" in event:
                event["iter"] = int(event["iter"])
                max_iter[owner] = max(max_iter.get(owner, 0), event["iter"])
            event["metric"] = event.get("metric") or ""
            event["variant"] = event.get("variant") or ""
            if (
                event_type == "training_stats_scalar"
                and not model_event
                and event.get("value") is not None
            ):
                self._update_last_metrics(self.state.tasks[owner], event)
            self.state.events.setdefault(owner, []).append(event)
            touched.add(owner)
            added += 1
        for owner in touched:
            doc = self.state.models.get(owner) or self.state.tasks[owner]
            if owner in max_iter:
                doc["last_iteration"] = max(doc.get("last_iteration") or 0, max_iter[owner])
            doc["last_update"] = now_iso()
        if not added:
            raise errors.APIError(400, 131, "Events not added", **errors_info)
        return {"added": added, "errors": sum(errors_info.values()), "errors_info": errors_info}

    def _accepts_events(self, owner: str, model_event: bool, allow_locked: bool) -> bool:
        """The server takes events only for existing, unlocked (unpublished) tasks and models."""
        if model_event:
            model = self.state.models.get(owner)
            return model is not None and (allow_locked or not model.get("ready"))
        task = self.state.tasks.get(owner)
        return task is not None and (allow_locked or task["status"] not in (PUBLISHING, PUBLISHED))

    def _update_last_metrics(self, task: Doc, event: Doc) -> None:
        """Fold one scalar event into the task's last_metrics, as the server's event ingest does."""
        metric, variant = str(event["metric"]), str(event["variant"])
        value, iteration = float(event["value"]), int(event.get("iter", 0))
        order = (iteration, int(event["timestamp"]))
        metrics = task.setdefault("last_metrics", {}).setdefault(md5_key(metric), {})
        entry = metrics.get(md5_key(variant))
        position_key = (task["id"], metric, variant)
        if entry is None:
            entry = {
                "metric": metric,
                "variant": variant,
                "value": value,
                "min_value": value,
                "min_value_iteration": iteration,
                "max_value": value,
                "max_value_iteration": iteration,
                "first_value": value,
                "first_value_iteration": iteration,
                "count": 0,
                "mean_value": 0.0,
            }
            metrics[md5_key(variant)] = entry
            self._last_value_position[position_key] = order
        # "value" is the latest by (iteration, timestamp); "first_value" the lowest iteration.
        if order >= self._last_value_position[position_key]:
            entry["value"] = value
            self._last_value_position[position_key] = order
        if iteration < entry["first_value_iteration"]:
            entry.update(first_value=value, first_value_iteration=iteration)
        if value < entry["min_value"]:
            entry.update(min_value=value, min_value_iteration=iteration)
        if value > entry["max_value"]:
            entry.update(max_value=value, max_value_iteration=iteration)
        entry["mean_value"] = (entry["mean_value"] * entry["count"] + value) / (entry["count"] + 1)
        entry["count"] += 1

    def ep_events__add(self, req: dict[str, Any]) -> dict[str, Any]:
        self.add_events([req])
        return {}

    def _scalars(self, task_id: str) -> list[Doc]:
        return self.state.task_events(task_id, "training_stats_scalar")

    def ep_events__scalar_metrics_iter_histogram(self, req: dict[str, Any]) -> dict[str, Any]:
        """Scalar series per metric/variant: one point per x (the mean of its values).

        The server aggregates in Elasticsearch: a histogram over ``key`` (iter by default) with
        the average value per bucket, single-value scalars (iter -2**31) left out.
        """
        self._task(req["task"])
        key = req.get("key", "iter")
        wanted = {m["metric"]: set(m.get("variants") or []) for m in req.get("metrics") or []}
        buckets: dict[str, dict[str, dict[Any, list[float]]]] = {}
        for event in self._scalars(req["task"]):
            metric, variant = event["metric"], event["variant"]
            if wanted and (
                metric not in wanted or (wanted[metric] and variant not in wanted[metric])
            ):
                continue
            iteration = event.get("iter", 0)
            if iteration == SINGLE_SCALAR_ITERATION:
                continue
            x = iteration if key == "iter" else event["timestamp"]
            buckets.setdefault(metric, {}).setdefault(variant, {}).setdefault(x, []).append(
                float(event["value"])
            )
        out: dict[str, dict[str, Any]] = {}
        for metric in sorted(buckets):
            out[metric] = {}
            for variant in sorted(buckets[metric]):
                points = sorted(buckets[metric][variant].items())
                out[metric][variant] = {
                    "name": variant,
                    "x": [x for x, _ in points],
                    "y": [sum(values) / len(values) for _, values in points],
                }
        return out

    def ep_events__get_scalar_metrics_and_variants(self, req: dict[str, Any]) -> dict[str, Any]:
        self._task(req["task"])
        metrics: dict[str, dict[str, Any]] = {}
        for event in self._scalars(req["task"]):
            metrics.setdefault(event["metric"], {})[event["variant"]] = {"name": event["variant"]}
        return {"metrics": metrics}

    def ep_events__get_task_latest_scalar_values(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self._task(req["task"])
        grouped: dict[str, list[Doc]] = {}
        for variants in task.get("last_metrics", {}).values():
            for entry in variants.values():
                grouped.setdefault(entry["metric"], []).append(
                    {
                        "name": entry["variant"],
                        "last_value": entry["value"],
                        "last_100_value": entry["value"],
                    }
                )
        return {"metrics": [{"name": k, "variants": v} for k, v in grouped.items()]}

    def ep_events__get_task_metrics(self, req: dict[str, Any]) -> dict[str, Any]:
        event_type = req.get("event_type")
        result = []
        for task_id in req["tasks"]:
            self._task(task_id)
            names = sorted(
                {e["metric"] for e in self.state.task_events(task_id, event_type) if "metric" in e}
            )
            result.append({"task": task_id, "metrics": names})
        return {"metrics": result}

    def ep_events__get_task_log(self, req: dict[str, Any]) -> dict[str, Any]:
        self._task(req["task"])
        logs = sorted(self.state.task_events(req["task"], "log"), key=lambda e: e["timestamp"])
        batch = req.get("batch_size", 500)
        start = req.get("from_timestamp")
        earlier = req.get("navigate_earlier", True)
        if earlier:  # newest first, before from_timestamp
            if start is not None:
                logs = [e for e in logs if e["timestamp"] < start]
            page = list(reversed(logs[-batch:])) if batch else []
        else:  # oldest first, after from_timestamp
            if start is not None:
                logs = [e for e in logs if e["timestamp"] > start]
            page = logs[:batch]
        order = req.get("order")
        if (earlier and order == "asc") or (not earlier and order == "desc"):
            page.reverse()
        total = len(self.state.task_events(req["task"], "log"))
        return {"events": copy.deepcopy(page), "returned": len(page), "total": total}

    def ep_events__get_task_events(self, req: dict[str, Any]) -> dict[str, Any]:
        self._task(req["task"])
        events = self.state.task_events(req["task"], req.get("event_type"))
        if req.get("metrics"):
            wanted = {m["metric"] for m in req["metrics"]}
            events = [e for e in events if e.get("metric") in wanted]
        events.sort(key=lambda e: (e.get("iter", 0), e["timestamp"]))
        if req.get("order") == "desc":
            events.reverse()
        offset = int(req.get("scroll_id") or 0)
        size = req.get("batch_size", 500)
        page = events[offset : offset + size]
        return {
            "events": copy.deepcopy(page),
            "returned": len(page),
            "total": len(events),
            "scroll_id": str(offset + len(page)),
        }

    def ep_events__debug_images(self, req: dict[str, Any]) -> dict[str, Any]:
        metrics = []
        for spec in req["metrics"]:
            self._task(spec["task"])
            images = [
                e
                for e in self.state.task_events(spec["task"], "training_debug_image")
                if not spec.get("metric") or e.get("metric") == spec["metric"]
            ]
            by_iter: dict[int, list[Doc]] = {}
            for event in images:
                by_iter.setdefault(event.get("iter", 0), []).append(copy.deepcopy(event))
            iterations = [
                {"iter": it, "events": evs}
                for it, evs in sorted(by_iter.items(), reverse=True)[: req.get("iters", 1)]
            ]
            metrics.append(
                {"task": spec["task"], "metric": spec.get("metric"), "iterations": iterations}
            )
        return {"metrics": metrics, "scroll_id": "0"}

    def ep_events__delete_for_task(self, req: dict[str, Any]) -> dict[str, Any]:
        self._task(req["task"])
        return {"deleted": len(self.state.events.pop(req["task"], []))}
