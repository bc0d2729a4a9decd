"""Request validation against the schemas that ship inside the clearml SDK (services v2_23).

clearml-server validates every request body against the JSON schema of its endpoint, after
dropping keys whose value is ``null``, and answers 400/12 (``validation_error``) when it fails.
The SDK carries the same schemas in its generated ``Request`` classes (``_schema``), so the
emulator validates with those.
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
    schema = request_schemas().get(endpoint)
    if schema is None:
        return None
    widen = _WIDEN_INTEGERS.get(endpoint)
    if widen is not None:
        schema = copy.deepcopy(schema)
        parent = schema
        for key in widen[:-1]:
            parent = parent[key]
        parent[widen[-1]] = _widen_integers(parent[widen[-1]])
    return jsonschema.Draft7Validator(schema)


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
