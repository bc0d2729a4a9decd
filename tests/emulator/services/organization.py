"""server.*, organization.*, reports.*: what the Web UI asks besides tasks, models and events.

Reproduces clearml-server 2.0's ``apiserver/services/server``, ``organization.py`` and
``reports.py``: ``server.info`` (version, build, commit, uid, the newest API version; no
credentials needed), ``server.report_stats_option`` (the open-source server without its
statistics reporter answers ``supported: false``), ``organization.get_tags`` (the distinct tags
of all tasks and models, sorted), ``organization.get_user_companies``, ``reports.get_all_ex``
(tasks of type ``report`` through the ``.reports`` projects) and ``debug.ping``.
"""

from __future__ import annotations

from typing import Any

from tests.emulator.services.auth import SERVER_API_VERSION, SERVER_BUILD, SERVER_VERSION
from tests.emulator.services.base import Service
from tests.emulator.services.projects import ProjectsService, filter_condition
from tests.emulator.services.query import TASK_QUERY, as_list, select, sorted_tags
from tests.emulator.state import COMPANY_ID, COMPANY_NAME

REPORTS_PROJECT = ".reports"


class OrganizationService(Service):
    """server.info/report_stats_option, organization.get_tags/..., reports.get_all_ex."""

    def __init__(self, projects: ProjectsService) -> None:
        super().__init__(projects.state, projects.scrolls)
        self.projects = projects

    def ep_server__info(self, req: dict[str, Any]) -> dict[str, Any]:
        uid = self.state.secrets.setdefault("server_uid", "emulator-" + COMPANY_ID)
        return {
            "version": SERVER_VERSION,
            "build": SERVER_BUILD,
            "commit": "",
            "uid": uid,
            "api_version": SERVER_API_VERSION,
        }

    def ep_server__report_stats_option(self, req: dict[str, Any]) -> dict[str, Any]:
        # The statistics reporter is off (StatisticsReporter.supported is false without its
        # configuration): the server answers `supported: false` whatever is asked.
        return {"supported": False}

    def ep_debug__ping(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"msg": "ClearML server"}

    def ep_organization__get_tags(self, req: dict[str, Any]) -> dict[str, Any]:
        spec = req.get("filter") or {}
        matches = filter_condition({k: spec[k] for k in ("tags", "system_tags") if spec.get(k)})
        docs = [d for d in [*self.state.tasks.values(), *self.state.models.values()] if matches(d)]
        return {
            "tags": sorted({t for d in docs for t in d.get("tags") or []}),
            "system_tags": sorted({t for d in docs for t in d.get("system_tags") or []})
            if req.get("include_system")
            else [],
        }

    def ep_organization__get_user_companies(self, req: dict[str, Any]) -> dict[str, Any]:
        users = [
            {"id": u["id"], "name": u.get("name"), "avatar": u.get("avatar")}
            for u in self.state.users.values()
        ]
        return {
            "companies": [
                {
                    "id": COMPANY_ID,
                    "name": COMPANY_NAME,
                    "allocated": len(users),
                    "owners": sorted(users, key=lambda u: str(u["name"])),
                }
            ]
        }

    def ep_reports__get_all_ex(self, req: dict[str, Any]) -> dict[str, Any]:
        query = dict(req)
        query["type"] = ["report"]
        if query.pop("include_subprojects", False) and query.get("project"):
            query["project"] = self.projects.with_children(as_list(query["project"]))
        if "project" in query:
            wanted = set(as_list(query["project"]))
            reports = [
                p["id"]
                for p in self.state.projects.values()
                if p.get("basename") == REPORTS_PROJECT
                and (p["id"] in wanted or p.get("parent") in wanted)
            ]
            if not reports:
                return {"tasks": []}
            query["project"] = reports
        tasks, extra = select(
            self.state.tasks.values(), query, TASK_QUERY, self.scrolls, resolve=self.resolve
        )
        return {"tasks": sorted_tags(tasks), **extra}
