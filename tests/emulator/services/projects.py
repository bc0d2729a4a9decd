"""projects.*: nested project names, uniqueness, hidden projects.

Reproduces clearml-server's ``apiserver/services/projects.py``: a nested name ("a/b") creates
its missing parents; an empty name part is refused (400/407); a duplicate name answers 400/801;
``get_all`` hides projects tagged ``hidden`` unless ``search_hidden`` and matches ``name`` as a
regular expression; ``delete`` of a project with tasks needs ``force`` (400/402).
"""

from __future__ import annotations

import copy
from typing import Any

from tests.emulator import errors
from tests.emulator.services.base import Service
from tests.emulator.services.query import select
from tests.emulator.state import COMPANY_ID, USER_ID, Doc, new_id, now_iso


class ProjectsService(Service):
    """projects.create/get_all/get_by_id/update/delete."""

    def new_project(self, name: str, description: str = "", **extra: Any) -> Doc:
        name = name.strip()
        if not name or any(not part.strip() for part in name.split("/")):
            raise errors.InvalidProjectName(name=name)
        if self.state.project_by_name(name) is not None:
            raise errors.ExpectedUniqueData("Project with the same name already exists", name=name)
        parent_id = None
        if "/" in name:
            parent_name = name.rsplit("/", 1)[0]
            parent = self.state.project_by_name(parent_name) or self.new_project(parent_name)
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
        project = self.new_project(req["name"], req.get("description", ""), **extra)
        return {"id": project["id"]}

    def ep_projects__get_by_id(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"project": copy.deepcopy(self._project(req["project"]))}

    def ep_projects__get_all(self, req: dict[str, Any]) -> dict[str, Any]:
        projects = list(self.state.projects.values())
        if not req.get("search_hidden"):
            projects = [p for p in projects if "hidden" not in p["system_tags"]]
        return {
            "projects": select(
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
