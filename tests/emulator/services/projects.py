"""projects.*: nested project names, uniqueness, hidden projects, statistics, task parents, tags.

Reproduces clearml-server 2.0's ``apiserver/services/projects.py`` and ``bll/project``:

- A nested name ("a/b") creates its missing parents; each project keeps its ``parent`` and
  ``path`` (the ids of its ancestors, root first); an empty name part is refused (400/407); a
  duplicate name answers 400/801; ``delete`` of a project with tasks needs ``force`` (400/402).
- ``get_all``/``get_all_ex`` hide projects tagged ``hidden`` unless ``search_hidden`` or ids
  are given; ``parent`` matches any ancestor (the server queries ``path``) unless
  ``shallow_search``, which also limits a query without ``parent`` to top-level projects.
- ``get_all_ex``: ``include_stats`` adds per-state (``active``/``archived``) task counts by
  status, total run time, tasks completed in the last 24 hours and the last task start, over
  the project and its subprojects (``stats_with_children``), filtered by
  ``include_stats_filter``; ``check_own_contents`` adds ``own_tasks``/``own_models``;
  ``children_type`` keeps projects holding reports, pipelines or datasets (and their parents).
- ``get_task_parents`` (tasks' distinct parents, by name), ``get_user_names`` (users of the
  tasks or models), ``get_task_tags``/``get_model_tags``/``get_project_tags`` (distinct tags,
  sorted, optionally filtered and with system tags), ``get_hyper_parameters`` and
  ``get_unique_metric_variants`` (what the tasks of the projects hold).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from tests.emulator import errors
from tests.emulator.services.base import TASK_STATUSES, Service
from tests.emulator.services.query import (
    PROJECT_QUERY,
    TASK_QUERY,
    Condition,
    as_list,
    list_field_condition,
    list_filter_condition,
    select,
    sorted_tags,
)
from tests.emulator.state import COMPANY_ID, USER_ID, Doc, new_id, now_iso

ARCHIVED = "archived"
HIDDEN = "hidden"
# The tags that mark a project's children as reports, pipelines or datasets.
CHILDREN_TAGS = {"report": "reports", "pipeline": "pipeline", "dataset": "dataset"}


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def filter_condition(filter_: Any) -> Condition:
    """A stats/tags filter (``{field: [values]}`` or ``{field: {any, all, op}}``)."""
    if not filter_:
        return lambda doc: True
    if not isinstance(filter_, dict):
        raise errors.ValidationError("filter must be an object")
    parts: list[Condition] = []
    for name, spec in filter_.items():
        if not spec or not isinstance(spec, (list, dict)):
            raise errors.ValidationError(
                f"Non empty list or dictionary expected for the field: {name}"
            )
        if isinstance(spec, list):
            parts.append(list_field_condition(name, spec))
        else:
            parts.append(list_filter_condition(name, spec))
    return lambda doc: all(p(doc) for p in parts)


class ProjectsService(Service):
    """projects.* (see README.md for the list)."""

    def new_project(self, name: str, description: str = "", **extra: Any) -> Doc:
        name = name.strip()
        if not name or any(not part.strip() for part in name.split("/")):
            raise errors.InvalidProjectName(name=name)
        if self.state.project_by_name(name) is not None:
            raise errors.ExpectedUniqueData("Project with the same name already exists", name=name)
        parent = None
        if "/" in name:
            parent_name = name.rsplit("/", 1)[0]
            parent = self.state.project_by_name(parent_name) or self.new_project(parent_name)
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
            "parent": parent["id"] if parent else None,
            "path": [*parent.get("path", []), parent["id"]] if parent else [],
            "default_output_destination": None,
        }
        project.update({k: v for k, v in extra.items() if v is not None})
        self.state.projects[project["id"]] = project
        if parent is not None:
            parent["last_update"] = now
        return project

    def with_children(self, project_ids: Iterable[str]) -> list[str]:
        """The ids and the ids of all their subprojects (the server's _ids_with_children)."""
        ids = list(project_ids)
        wanted = set(ids)
        children = [
            p["id"] for p in self.state.projects.values() if wanted & set(p.get("path") or [])
        ]
        return list(dict.fromkeys([*ids, *children]))

    def _with_parents(self, project_ids: Iterable[str]) -> list[str]:
        found: list[str] = []
        for project_id in project_ids:
            project = self.state.projects.get(project_id)
            if project is not None:
                found.extend([*project.get("path", []), project_id])
        return list(dict.fromkeys(found))

    def ep_projects__create(self, req: dict[str, Any]) -> dict[str, Any]:
        extra = {k: req.get(k) for k in ("tags", "system_tags", "default_output_destination")}
        project = self.new_project(req["name"], req.get("description", ""), **extra)
        return {"id": project["id"]}

    def ep_projects__get_by_id(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"project": sorted_tags([copy.deepcopy(self._project(req["project"]))])[0]}

    def _search(self, req: dict[str, Any], shallow: bool) -> tuple[dict[str, Any], Condition]:
        """The server's _adjust_search_parameters and hidden-project rule."""
        query = {k: v for k, v in req.items() if k != "path"}
        if not shallow:
            if "parent" in query:
                query["path"] = query.pop("parent")
        elif "parent" not in query:
            query["parent"] = [None]
        if req.get("search_hidden") or req.get("id"):
            return query, lambda p: True
        return query, lambda p: HIDDEN not in (p.get("system_tags") or [])

    def ep_projects__get_all(self, req: dict[str, Any]) -> dict[str, Any]:
        query, visible = self._search(req, bool(req.get("shallow_search")))
        projects, extra = select(
            self.state.projects.values(), query, PROJECT_QUERY, self.scrolls, condition=visible
        )
        return {"projects": sorted_tags(projects), **extra}

    def ep_projects__get_all_ex(self, req: dict[str, Any]) -> dict[str, Any]:
        query, visible = self._search(req, bool(req.get("shallow_search")))
        children_type = req.get("children_type")
        if req.get("active_users") or children_type:
            ids = self._with_selected_children(req, children_type)
            if not ids:
                return {"projects": []}
            query["id"] = ids
        only = query.get("only_fields")
        drop_system_tags = False
        if req.get("search_hidden") and isinstance(only, list) and "system_tags" not in only:
            query["only_fields"] = [*only, "system_tags"]
            drop_system_tags = True
        projects, extra = select(
            self.state.projects.values(), query, PROJECT_QUERY, self.scrolls,
            condition=visible, resolve=self.resolve,
        )  # fmt: skip
        if not projects:
            return {"projects": projects, **extra}
        if req.get("search_hidden"):
            for project in projects:
                tags = (
                    project.pop("system_tags", [])
                    if drop_system_tags
                    else project.get("system_tags", [])
                )
                if HIDDEN in (tags or []):
                    project["hidden"] = True
        ids = [p["id"] for p in projects]
        stats_filter, stats_hidden = self._stats_filter(req)
        state = req.get("stats_for_state", "active")
        if req.get("check_own_contents"):
            own = self._own_contents(ids, stats_filter, state, req.get("active_users"))
            for project in projects:
                project.update(own[project["id"]])
        if req.get("include_stats"):
            stats, children = self._stats(
                ids,
                state,
                include_children=req.get("stats_with_children", True),
                search_hidden=stats_hidden,
                filter_=stats_filter,
                users=req.get("active_users"),
            )
            for project in projects:
                project["stats"] = stats[project["id"]]
                project["sub_projects"] = children[project["id"]]
        return {"projects": sorted_tags(projects), **extra}

    def _stats_filter(self, req: dict[str, Any]) -> tuple[Any, bool]:
        children_type = req.get("children_type")
        if req.get("include_stats_filter") or not children_type:
            return req.get("include_stats_filter"), bool(req.get("search_hidden"))
        tags = req.get("children_tags")
        base: dict[str, Any] = {"tags": tags} if tags else {}
        if children_type == "pipeline":
            return {**base, "system_tags": ["pipeline"], "type": ["controller"]}, True
        if children_type == "report":
            return {**base, "system_tags": ["reports"], "type": ["report"]}, True
        return base, bool(req.get("search_hidden"))

    def _with_selected_children(self, req: dict[str, Any], children_type: str | None) -> list[str]:
        users = req.get("active_users")
        requested = as_list(req.get("id"))
        scope = set(self.with_children(requested)) if requested else None
        found: set[str] = set()

        def user_ok(doc: Doc) -> bool:
            return not users or doc.get("user") in users

        tags_ok = filter_condition(
            {"tags": req["children_tags"]} if req.get("children_tags") else None
        )
        tag = CHILDREN_TAGS.get(children_type or "")
        if children_type in ("dataset", "pipeline"):
            for project in self.state.projects.values():
                if (
                    tag in project.get("system_tags", [])
                    and user_ok(project)
                    and tags_ok(project)
                    and (scope is None or project.get("parent") in scope)
                ):
                    found.add(project["id"])
        else:
            docs: list[Doc] = list(self.state.tasks.values())
            if children_type != "report":
                docs += list(self.state.models.values())
                found |= {
                    p["id"]
                    for p in self.state.projects.values()
                    if user_ok(p) and (scope is None or p["id"] in scope)
                }
            for doc in docs:
                if children_type == "report" and tag not in doc.get("system_tags", []):
                    continue
                in_scope = scope is None or doc.get("project") in scope
                if user_ok(doc) and tags_ok(doc) and doc.get("project") and in_scope:
                    found.add(doc["project"])
        selected = self._with_parents(found)
        return [p for p in selected if p in set(requested)] if requested else selected

    def _tasks_of(self, project_ids: Iterable[str], filter_: Any, users: Any) -> list[Doc]:
        wanted = set(project_ids)
        matches = filter_condition(filter_)
        return [
            t
            for t in self.state.tasks.values()
            if t.get("project") in wanted and matches(t) and (not users or t.get("user") in users)
        ]

    def _own_contents(
        self, project_ids: list[str], filter_: Any, state: str | None, users: Any
    ) -> dict[str, dict[str, int]]:
        filter_ = dict(filter_ or {})
        if state:
            tags = list(filter_.get("system_tags") or [])
            if not any(t in tags for t in (ARCHIVED, f"-{ARCHIVED}")):
                filter_["system_tags"] = [ARCHIVED if state == ARCHIVED else f"-{ARCHIVED}", *tags]
        matches = filter_condition(filter_)
        out = {}
        for project_id in project_ids:
            tasks = [t for t in self._tasks_of([project_id], filter_, users)]
            models = [
                m
                for m in self.state.models.values()
                if m.get("project") == project_id
                and matches(m)
                and (not users or m.get("user") in users)
            ]
            out[project_id] = {"own_tasks": len(tasks), "own_models": len(models)}
        return out

    def _stats(
        self,
        project_ids: list[str],
        state: str | None,
        *,
        include_children: bool,
        search_hidden: bool,
        filter_: Any,
        users: Any,
    ) -> tuple[dict[str, Any], dict[str, list[Doc]]]:
        children: dict[str, list[Doc]] = {}
        for project_id in project_ids:
            subs = [
                p
                for p in self.state.projects.values()
                if project_id in (p.get("path") or [])
                and (search_hidden or HIDDEN not in p.get("system_tags", []))
            ] if include_children else []  # fmt: skip
            children[project_id] = sorted(
                ({"id": p["id"], "name": p["name"]} for p in subs), key=lambda c: str(c["name"])
            )
        day_ago = datetime.now(timezone.utc) - timedelta(hours=24)
        stats: dict[str, Any] = {}
        for project_id in project_ids:
            scope = [project_id, *(c["id"] for c in children[project_id])]
            tasks = self._tasks_of(scope, filter_, users)
            stats[project_id] = {}
            for section in ("archived", "active"):
                if state and state != section:
                    continue
                in_section = [
                    t
                    for t in tasks
                    if (ARCHIVED in (t.get("system_tags") or [])) == (section == ARCHIVED)
                ]
                counts = dict.fromkeys(TASK_STATUSES, 0)
                for task in in_section:
                    counts[task.get("status") or "unknown"] = counts.get(task["status"], 0) + 1
                runtime, recent, last_started = 0, 0, None
                for task in in_section:
                    started, completed = (
                        _parse_time(task.get("started")),
                        _parse_time(task.get("completed")),
                    )
                    if started and completed and completed > started:
                        runtime += int((completed - started).total_seconds())
                    if (
                        completed
                        and completed > day_ago
                        and task.get("status") not in ("queued", "in_progress", "failed")
                    ):
                        recent += 1
                    if started and (last_started is None or started > last_started):
                        last_started = started
                stats[project_id][section] = {
                    "status_count": counts,
                    "total_tasks": sum(counts.values()),
                    "total_runtime": runtime,
                    "completed_tasks_24h": recent,
                    "last_task_run": last_started.isoformat(timespec="milliseconds")
                    if last_started
                    else None,
                }
        return stats, children

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

    # ------------------------------------------------------------ what the projects hold
    def _entities(
        self,
        docs: Iterable[Doc],
        projects: Any,
        include_subprojects: bool = True,
        state: str | None = None,
    ) -> list[Doc]:
        """The server's _get_project_query: entities of the projects (all when none), of a
        visibility state."""
        result = list(docs)
        if projects:
            ids = (
                self.with_children(as_list(projects)) if include_subprojects else as_list(projects)
            )
            wanted = set(ids)
            result = [d for d in result if d.get("project") in wanted]
        if state == ARCHIVED:
            result = [d for d in result if ARCHIVED in (d.get("system_tags") or [])]
        elif state == "active":
            result = [d for d in result if ARCHIVED not in (d.get("system_tags") or [])]
        return result

    def ep_projects__get_task_parents(self, req: dict[str, Any]) -> dict[str, Any]:
        tasks = self._entities(
            self.state.tasks.values(),
            req.get("projects"),
            bool(req.get("include_subprojects", True)),
            req.get("tasks_state", "active"),
        )
        parent_ids = {t["parent"] for t in tasks if t.get("parent")}
        if not parent_ids:
            return {"parents": []}
        query: dict[str, Any] = {"only_fields": ["id", "name", "project.name"]}
        if req.get("task_name"):
            query["name"] = req["task_name"]
        parents, _ = select(
            [self.state.tasks[p] for p in parent_ids if p in self.state.tasks],
            query,
            TASK_QUERY,
            self.scrolls,
            resolve=self.resolve,
        )
        return {"parents": sorted(parents, key=lambda p: str(p.get("name")))}

    def ep_projects__get_user_names(self, req: dict[str, Any]) -> dict[str, Any]:
        source = self.state.models if req.get("entity") == "model" else self.state.tasks
        docs = self._entities(
            source.values(), req.get("projects"), bool(req.get("include_subprojects", True))
        )
        user_ids = {str(d["user"]) for d in docs if d.get("user")}
        users = self.resolve("users", sorted(user_ids))
        return {"users": [{"id": u["id"], "name": u.get("name")} for u in users.values()]}

    def _tags(self, docs: Iterable[Doc], req: dict[str, Any]) -> dict[str, Any]:
        spec = req.get("filter") or {}
        filter_ = {k: spec[k] for k in ("tags", "system_tags") if spec.get(k)}
        matches = filter_condition(filter_)
        chosen = [d for d in self._entities(docs, req.get("projects")) if matches(d)]
        tags = sorted({t for d in chosen for t in d.get("tags") or []})
        system = (
            sorted({t for d in chosen for t in d.get("system_tags") or []})
            if req.get("include_system")
            else []
        )
        return {"tags": tags, "system_tags": system}

    def ep_projects__get_task_tags(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._tags(self.state.tasks.values(), req)

    def ep_projects__get_model_tags(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._tags(self.state.models.values(), req)

    def ep_projects__get_project_tags(self, req: dict[str, Any]) -> dict[str, Any]:
        spec = req.get("filter") or {}
        matches = filter_condition({k: spec[k] for k in ("tags", "system_tags") if spec.get(k)})
        projects = list(self.state.projects.values())
        if req.get("projects"):
            wanted = set(self.with_children(as_list(req["projects"])))
            projects = [p for p in projects if p["id"] in wanted]
        chosen = [p for p in projects if matches(p)]
        return {
            "tags": sorted({t for p in chosen for t in p.get("tags") or []}),
            "system_tags": sorted({t for p in chosen for t in p.get("system_tags") or []})
            if req.get("include_system")
            else [],
        }

    def ep_projects__get_hyper_parameters(self, req: dict[str, Any]) -> dict[str, Any]:
        tasks = self._entities(
            self.state.tasks.values(),
            [req["project"]] if req.get("project") else None,
            bool(req.get("include_subprojects", True)),
        )
        found = sorted(
            {
                (section, name)
                for t in tasks
                for section, params in (t.get("hyperparams") or {}).items()
                for name in params
            }
        )
        page, size = req.get("page", 0), req.get("page_size", 500)
        chunk = found[page * size : (page + 1) * size]
        return {
            "total": len(found),
            "remaining": max(0, len(found) - (page + 1) * size),
            "parameters": [{"section": s, "name": n} for s, n in chunk],
        }

    def ep_projects__get_unique_metric_variants(self, req: dict[str, Any]) -> dict[str, Any]:
        source = self.state.models if req.get("model_metrics") else self.state.tasks
        docs = list(source.values())
        if req.get("ids"):
            wanted = set(req["ids"])
            docs = [d for d in docs if d["id"] in wanted]
        else:
            docs = self._entities(
                docs,
                [req["project"]] if req.get("project") else None,
                bool(req.get("include_subprojects", True)),
            )
        found: dict[tuple[str, str], Doc] = {}
        for doc in docs:
            for metric_key, variants in (doc.get("last_metrics") or {}).items():
                for variant_key, entry in variants.items():
                    found[(metric_key, variant_key)] = {
                        "metric": entry.get("metric"),
                        "metric_hash": metric_key,
                        "variant": entry.get("variant"),
                        "variant_hash": variant_key,
                    }
        return {"metrics": sorted(found.values(), key=lambda m: (m["metric"], m["variant"]))}
