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
from tests.emulator.services.organization import OrganizationService
from tests.emulator.services.projects import ProjectsService
from tests.emulator.services.query import Scrolls
from tests.emulator.services.queues import QueuesService
from tests.emulator.services.tasks import TasksService
from tests.emulator.services.workers import WorkersService
from tests.emulator.state import ServerState

# Re-exported: tests compare the emulator with the server's status machine and metric keys.
__all__ = ["BATCH_ENDPOINTS", "STATUS_TRANSITIONS", "TASK_STATUSES", "ClearMLApi", "md5_key"]

# Endpoints whose body is JSON lines (a list), not one JSON object.
BATCH_ENDPOINTS = frozenset({"events.add_batch", "tasks.update_batch"})

# Reads that change nothing (so the state need not be saved after them). `queues.get_next_task`
# pops a queue and `workers.get_all` forgets expired workers: they count as changes.
_READ_PREFIXES = ("get", "debug_images", "scalar_metrics_iter_histogram", "multi_task_", "next_")
_CHANGING_READS = frozenset({"queues.get_next_task", "workers.get_all"})


# Reads whose handlers see the body with its nulls (the server validates without them but
# queries with call.data as sent).
_QUERY_ACTIONS = frozenset({"get_all", "get_all_ex", "get_by_id_ex"})


def changes_state(endpoint: str) -> bool:
    """Whether a call of this endpoint may change the state (the state is then saved)."""
    action = endpoint.partition(".")[2]
    return endpoint in _CHANGING_READS or not action.startswith(_READ_PREFIXES)


class ClearMLApi:
    """The endpoints the emulator serves, bound to one :class:`ServerState`."""

    def __init__(self, state: ServerState, files_url: str = "") -> None:
        self.state = state
        self.files_url = files_url
        self.scrolls = Scrolls()
        self.auth = AuthService(state, self.scrolls)
        self.projects = ProjectsService(state, self.scrolls)
        self.queues = QueuesService(state, self.scrolls)
        self.tasks = TasksService(state, self.projects, self.queues)
        self.models = ModelsService(state, self.tasks)
        self.workers = WorkersService(state, self.tasks)
        self.events = EventsService(state, self.scrolls)
        self.organization = OrganizationService(self.projects)
        self.handlers: dict[str, Handler] = {}
        services = (
            self.auth,
            self.projects,
            self.queues,
            self.tasks,
            self.models,
            self.workers,
            self.events,
            self.organization,
        )
        for service in services:
            self.handlers.update(service.handlers())

    def login_modes(self, req: dict[str, Any], *, authenticated: bool) -> dict[str, Any]:
        """login.supported_modes (answered by the HTTP layer, which knows the call's auth)."""
        validate_request("login.supported_modes", req)
        # Fixed-users mode: the Web UI asks for a user name and password, and the server's
        # Basic check accepts the access key and secret key there.
        return {
            "basic": {"enabled": True, "guest": {"enabled": False}},
            "sso": {},
            "sso_providers": [],
            "server_errors": {"missed_es_upgrade": False, "es_connection_error": False},
            "authenticated": authenticated,
        }

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
        if endpoint.partition(".")[2] in _QUERY_ACTIONS:
            # Queries read the body as sent: `null` keeps its meaning there ("scroll_id":
            # null starts a scroll, a null in a list field's values matches empty fields).
            return handler(body)
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
