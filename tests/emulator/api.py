"""The endpoint registry: one object per ClearML service, one dispatcher for every call.

Each service module in ``services/`` says which server behaviours it reproduces (from
clearml-server's ``apiserver/services/*.py`` and ``apiserver/bll/``). Its handlers take the
validated request body and return the ``data`` part of the response envelope, or raise
:class:`errors.APIError`. :meth:`ClearMLApi.dispatch` is what the HTTP layer (and
``Emulator.call``) runs for one call, under the state's lock.
"""

from __future__ import annotations

from typing import Any

from tests.emulator import errors
from tests.emulator.schemas import validate_request
from tests.emulator.services.auth import API_VERSION, AuthService
from tests.emulator.services.base import STATUS_TRANSITIONS, TASK_STATUSES, Handler
from tests.emulator.services.events import EventsService, md5_key
from tests.emulator.services.models import ModelsService
from tests.emulator.services.projects import ProjectsService
from tests.emulator.services.queues import QueuesService
from tests.emulator.services.tasks import TasksService
from tests.emulator.services.workers import WorkersService
from tests.emulator.state import ServerState

# Re-exported: tests compare the emulator with the server's status machine and metric keys.
__all__ = ["BATCH_ENDPOINTS", "STATUS_TRANSITIONS", "TASK_STATUSES", "ClearMLApi", "md5_key"]

# Endpoints whose body is JSON lines (a list), not one JSON object.
BATCH_ENDPOINTS = frozenset({"events.add_batch", "tasks.update_batch"})


class ClearMLApi:
    """The endpoints the emulator serves, bound to one :class:`ServerState`."""

    def __init__(self, state: ServerState, files_url: str = "") -> None:
        self.state = state
        self.files_url = files_url
        self.auth = AuthService(state)
        self.projects = ProjectsService(state)
        self.queues = QueuesService(state)
        self.tasks = TasksService(state, self.projects, self.queues)
        self.models = ModelsService(state, self.tasks)
        self.workers = WorkersService(state, self.tasks)
        self.events = EventsService(state)
        self.handlers: dict[str, Handler] = {}
        services = (
            self.auth,
            self.projects,
            self.queues,
            self.tasks,
            self.models,
            self.workers,
            self.events,
        )
        for service in services:
            self.handlers.update(service.handlers())

    def serves(self, endpoint: str) -> bool:
        """Whether the endpoint exists (else the server answers 404 before checking auth)."""
        return endpoint == "auth.login" or endpoint in BATCH_ENDPOINTS or endpoint in self.handlers

    def dispatch(self, endpoint: str, body: Any) -> dict[str, Any]:
        """Validate one call's body and run its handler; the caller holds ``state.lock``."""
        if endpoint in BATCH_ENDPOINTS:
            if endpoint == "events.add_batch":
                return self.events.add_events(body)
            return self._update_batch(body)
        handler = self.handlers.get(endpoint)
        if handler is None:
            raise errors.endpoint_not_found(endpoint, API_VERSION)
        if not isinstance(body, dict):
            raise errors.ValidationError("request body must be a JSON object")
        # The SDK sends "method": "get" in every body; the server ignores it.
        body = {k: v for k, v in body.items() if k != "method"}
        data = validate_request(endpoint, body)
        return handler(data)

    def _update_batch(self, items: list[Any]) -> dict[str, Any]:
        if not items:
            raise errors.BatchContainsNoItems()
        updated = 0
        for item in items:
            updated += self.tasks.ep_tasks__update(validate_request("tasks.update", item))[
                "updated"
            ]
        return {"updated": updated}
