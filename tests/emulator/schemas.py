"""Request validation against the schemas of the clearml SDK (services v2_23) and the server.

clearml-server validates every request body against the JSON schema of its endpoint, after
dropping keys whose value is ``null``, and answers 400/12 (``validation_error``) when it fails.
The SDK carries the same schemas in its generated ``Request`` classes (``_schema``), so the
emulator validates with those. For the endpoints the SDK does not ship (the Web UI's ``*_ex``
reads, login, users, organization...), :func:`server_schemas` holds their request schemas as
clearml-server 2.0 declares them (``apiserver/schema/services/*.conf``, newest version). The
list reads are checked as the server checks them: only the fields of their data models.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
from typing import Any

import jsonschema

from tests.emulator import errors

_SERVICE_MODULES = ("auth", "events", "models", "projects", "queues", "tasks", "workers")


@functools.cache
def request_schemas() -> dict[str, dict[str, Any]]:
    """Map ``service.action`` to the request schema of SDK services v2_23."""
    from clearml.backend_api.session import Request

    found: dict[str, dict[str, Any]] = {}
    for service in _SERVICE_MODULES:
        module = importlib.import_module(f"clearml.backend_api.services.v2_23.{service}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if not issubclass(cls, Request) or cls.__module__ != module.__name__:
                continue
            action = getattr(cls, "_action", None)
            schema = getattr(cls, "_schema", None)
            if action and isinstance(schema, dict):
                found[f"{cls._service}.{action}"] = schema
    return found


def _obj(properties: dict[str, Any], *, required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


_STR, _BOOL, _INT = {"type": "string"}, {"type": "boolean"}, {"type": "integer"}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_TAGS_FILTER = _obj({"tags": _STRINGS, "system_tags": _STRINGS})

# service.action -> (the SDK endpoint whose request schema it extends, or None; properties
# added; required fields): the .conf's newest version of endpoints the SDK does not ship
_SERVER_ONLY: dict[str, tuple[str | None, dict[str, Any], tuple[str, ...]]] = {
    "projects.get_user_names": (
        None,
        {
            "projects": _STRINGS,
            "include_subprojects": _BOOL,
            "entity": {"type": "string", "enum": ["task", "model"]},
        },
        (),
    ),
    "events.get_multi_task_metrics": (
        None,
        {
            "tasks": _STRINGS,
            "model_events": _BOOL,
            "event_type": {
                "type": "string",
                "enum": [
                    "training_stats_scalar",
                    "training_stats_vector",
                    "training_debug_image",
                    "plot",
                    "log",
                ],
            },
        },
        ("tasks",),
    ),
    "organization.get_tags": (None, {"include_system": _BOOL, "filter": _TAGS_FILTER}, ()),
    "organization.get_user_companies": (None, {}, ()),
    "users.get_all": (
        None,
        {
            "name": _STR,
            "id": _STRINGS,
            "only_fields": _STRINGS,
            "page": {"type": "integer", "minimum": 0},
            "page_size": {"type": "integer", "minimum": 1},
            "order_by": _STRINGS,
        },
        (),
    ),
    "users.get_all_ex": (
        None,
        {
            "name": _STR,
            "id": _STRINGS,
            "only_fields": _STRINGS,
            "page": {"type": "integer", "minimum": 0},
            "page_size": {"type": "integer", "minimum": 1},
            "order_by": _STRINGS,
            "active_in_projects": _STRINGS,
        },
        (),
    ),
    "users.get_current_user": (None, {}, ()),
    "users.get_preferences": (None, {}, ()),
    "users.set_preferences": (
        None,
        {"preferences": {"type": "object", "additionalProperties": True}},
        ("preferences",),
    ),
    "login.supported_modes": (None, {}, ()),
    "login.logout": (None, {}, ()),
    "auth.logout": (None, {}, ()),
    "server.info": (None, {}, ()),
    "server.report_stats_option": (None, {"enabled": _BOOL}, ()),
    "debug.ping": (None, {}, ()),
}


# The list reads: the server answers them from call.data as sent, through the query language
# (``services/query.py``), and checks only the fields of the endpoint's data model, if any
# (tasks.get_all has none; tasks.get_all_ex GetAllReq...). A JSON schema of their `get_all`
# would refuse what the server takes: the Web UI's PARENT TASK filter sends `parent` as a list,
# which the schema declares a string.
_QUERY_MODELS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "tasks.get_all": ({}, ()),
    "tasks.get_all_ex": ({"allow_public": _BOOL, "search_hidden": _BOOL}, ()),
    "tasks.get_by_id_ex": ({}, ()),  # required_fields=["id"]: 400/11 from the handler
    "reports.get_all_ex": ({"allow_public": _BOOL}, ()),
    "models.get_all": ({}, ()),
    "models.get_all_ex": ({"include_stats": _BOOL, "allow_public": _BOOL}, ()),
    "models.get_by_id_ex": ({}, ()),
    "projects.get_all": ({}, ()),
    "projects.get_all_ex": (
        {
            "include_dataset_stats": _BOOL,
            "include_stats": _BOOL,
            "include_stats_filter": {"type": "object"},
            "stats_with_children": _BOOL,
            "stats_for_state": {"type": "string", "enum": ["active", "archived"]},
            "non_public": _BOOL,
            "active_users": _STRINGS,
            "check_own_contents": _BOOL,
            "shallow_search": _BOOL,
            "search_hidden": _BOOL,
            "allow_public": _BOOL,
            "children_type": {"type": "string", "enum": ["pipeline", "report", "dataset"]},
            "children_tags": _STRINGS,
            "children_tags_filter": {"type": "object"},
        },
        (),
    ),
    "queues.get_all": ({"max_task_entries": _INT, "search_hidden": _BOOL}, ()),
    "queues.get_all_ex": ({"max_task_entries": _INT, "search_hidden": _BOOL}, ()),
    "users.get_all": ({}, ()),
    "users.get_all_ex": ({}, ()),
}


@functools.cache
def server_schemas() -> dict[str, dict[str, Any]]:
    """Request schemas of the endpoints the SDK does not ship, as the server declares them."""
    sdk = request_schemas()
    found: dict[str, dict[str, Any]] = {
        endpoint: _obj(properties, required=required)
        for endpoint, (properties, required) in _QUERY_MODELS.items()
    }
    for endpoint, (base, extra, required) in _SERVER_ONLY.items():
        if base is None:
            found[endpoint] = _obj(extra, required=required)
            continue
        schema = copy.deepcopy(sdk[base])
        schema.setdefault("properties", {}).update(copy.deepcopy(extra))
        if required:
            schema["required"] = sorted({*schema.get("required", []), *required})
        found[endpoint] = schema
    return found


def schema_for(endpoint: str) -> dict[str, Any] | None:
    """The request schema the emulator validates an endpoint with: a list read's data model,
    else the SDK's schema, else the server's."""
    if endpoint in _QUERY_MODELS:
        return server_schemas()[endpoint]
    return request_schemas().get(endpoint) or server_schemas().get(endpoint)


# Where the SDK's generated schema is stricter than the server's own: the server declares these
# as "number" and clearml-agent sends floats (e.g. machine_stats.memory_free).
_WIDEN_INTEGERS = {"workers.status_report": ("definitions", "machine_stats")}


def _widen_integers(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: _widen_integers(v) for k, v in schema.items()}
        kind = out.get("type")
        if kind == "integer":
            out["type"] = "number"
        elif isinstance(kind, list):
            out["type"] = ["number" if t == "integer" else t for t in kind]
        return out
    if isinstance(schema, list):
        return [_widen_integers(v) for v in schema]
    return schema


@functools.cache
def _validator(endpoint: str) -> jsonschema.Draft7Validator | None:
    schema = schema_for(endpoint)
    if schema is None:
        return None
    widen = _WIDEN_INTEGERS.get(endpoint)
    if widen is not None:
        schema = copy.deepcopy(schema)
        parent = schema
        for key in widen[:-1]:
            parent = parent[key]
        parent[widen[-1]] = _widen_integers(parent[widen[-1]])
    if endpoint not in _CLOSED_SCHEMAS:
        schema = _open(schema)
    return jsonschema.Draft7Validator(schema)


# The server checks a request against the endpoint's JSON schema only for the endpoints declared
# with validate_schema=True; the others go through data models (jsonmodels), which check the
# declared fields' types and required fields and ignore fields they do not declare. So an
# `additionalProperties: false` is enforced only for these (the Web UI sends e.g.
# users.get_current_user {"get_supported_features": true}, whose schema is closed).
_CLOSED_SCHEMAS = frozenset(
    {"workers.get_metric_keys", "workers.get_activity_report", "workers.get_stats"}
)


def _open(schema: Any) -> Any:
    """The schema without any `additionalProperties: false` (unknown fields pass)."""
    if isinstance(schema, dict):
        return {
            k: _open(v)
            for k, v in schema.items()
            if not (k == "additionalProperties" and v is False)
        }
    if isinstance(schema, list):
        return [_open(v) for v in schema]
    return schema


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value if v is not None]
    return value


def validate_request(endpoint: str, data: Any) -> Any:
    """Validate one request body; return it with nulls dropped, as the server sees it.

    Raises errors.APIError 400/12 when the body does not match the endpoint's schema.
    """
    cleaned = _drop_nulls(data)
    validator = _validator(endpoint)
    if validator is None:
        return cleaned
    error = jsonschema.exceptions.best_match(validator.iter_errors(cleaned))
    if error is not None:
        path = ".".join(str(p) for p in error.absolute_path)
        detail = f"{error.message}" + (f" (path: {path})" if path else "")
        raise errors.ValidationError(detail)
    return cleaned
