"""models.*: model documents, their readiness and their link to a task's output models.

Reproduces clearml-server's ``apiserver/services/models.py``: ``edit`` of a ready model's
``uri`` needs ``force`` (400/203); ``update_for_task`` creates a not-ready model (or takes
``override_model_id``) and records it as the task's ``output`` model; ``delete`` also drops it
from every task's input/output models; an ``iteration`` raises the task's ``last_iteration``.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.emulator import errors
from tests.emulator.services.base import Service
from tests.emulator.services.query import MODEL_QUERY, as_list, select, sorted_tags
from tests.emulator.services.tasks import TasksService
from tests.emulator.state import COMPANY_ID, USER_ID, Doc, ServerState, new_id, now_iso


class ModelsService(Service):
    """models.create/get_all/get_by_id/edit/update/set_ready/update_for_task/...."""

    def __init__(self, state: ServerState, tasks: TasksService) -> None:
        super().__init__(state, tasks.scrolls)
        self.tasks = tasks

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
        return {"model": sorted_tags([copy.deepcopy(self._model(req["model"]))])[0]}

    def _query(self, req: dict[str, Any]) -> dict[str, Any]:
        req = dict(req)
        if req.pop("include_subprojects", False) and req.get("project"):
            req["project"] = self.tasks.projects.with_children(as_list(req["project"]))
        return req

    def ep_models__get_all(self, req: dict[str, Any]) -> dict[str, Any]:
        models, extra = select(
            self.state.models.values(), self._query(req), MODEL_QUERY, self.scrolls
        )
        return {"models": sorted_tags(models), **extra}

    def ep_models__get_all_ex(self, req: dict[str, Any]) -> dict[str, Any]:
        models, extra = select(
            self.state.models.values(), self._query(req), MODEL_QUERY, self.scrolls,
            resolve=self.resolve,
        )  # fmt: skip
        if req.get("include_stats"):
            for model in models:
                labels = self.state.models[model["id"]].get("labels") or {}
                model["stats"] = {"labels_count": len(labels)}
        return {"models": sorted_tags(models), **extra}

    def ep_models__get_by_id_ex(self, req: dict[str, Any]) -> dict[str, Any]:
        if not req.get("id"):
            raise errors.MissingRequiredFields(field="id")
        models, _ = select(
            self.state.models.values(), req, MODEL_QUERY, self.scrolls, resolve=self.resolve
        )
        return {"models": sorted_tags(models)}

    def ep_models__get_frameworks(self, req: dict[str, Any]) -> dict[str, Any]:
        models = list(self.state.models.values())
        if req.get("projects"):
            wanted = set(self.tasks.projects.with_children(req["projects"]))
            models = [m for m in models if m.get("project") in wanted]
        return {"frameworks": sorted({m["framework"] for m in models if m.get("framework")})}

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
        self.tasks.ep_tasks__add_or_update_model(
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
