"""Errors the emulator answers with, using clearml-server's codes and subcodes.

The numbers come from clearml-server's ``apiserver/apierrors/errors.conf``: a result code (HTTP
status) plus a subcode that the SDK and the agent read from ``meta.result_subcode``.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """An error the server reports inside the envelope (``meta.result_code``/``result_subcode``)."""

    def __init__(self, code: int, subcode: int, msg: str, **data: Any) -> None:
        super().__init__(msg)
        self.code = code
        self.subcode = subcode
        self.msg = msg
        self.data = data

    def __repr__(self) -> str:
        return f"APIError({self.code}, {self.subcode}, {self.msg!r})"


def _error(code: int, subcode: int, default_msg: str):  # type: ignore[no-untyped-def]
    def make(detail: str = "", **data: Any) -> APIError:
        msg = default_msg
        if detail:
            msg = f"{default_msg}: {detail}"
        if data:
            extra = ", ".join(f"{k}={v}" for k, v in data.items())
            msg = f"{msg} ({extra})"
        return APIError(code, subcode, msg, **data)

    make.code = code  # type: ignore[attr-defined]
    make.subcode = subcode  # type: ignore[attr-defined]
    return make


# 400 bad_request
RequestPathHasInvalidVersion = _error(400, 2, "Request path has invalid version")
InvalidHeaders = _error(400, 5, "Invalid headers")
InvalidId = _error(400, 10, "Invalid object id")
MissingRequiredFields = _error(400, 11, "Missing required fields")
ValidationError = _error(400, 12, "Validation error")
FieldsValueError = _error(400, 16, "Invalid value for fields")
BatchContainsNoItems = _error(400, 17, "Batch request contains no items")
FieldsTypeError = _error(400, 20, "Invalid type for fields")
InvalidRegexError = _error(400, 21, "Malformed regular expression")
InvalidTaskId = _error(400, 101, "Invalid task id")
InvalidTaskStatus = _error(400, 110, "Invalid task status")
FailedChangingTaskStatus = _error(
    400, 121, "Failed changing task status. probably someone changed it before you"
)
MissingTaskFields = _error(400, 122, "Task is missing expected fields")
TaskCannotBeDeleted = _error(400, 123, "Task cannot be deleted")
InvalidModelId = _error(400, 201, "Invalid model id")
InvalidProjectId = _error(400, 401, "Invalid project id")
ProjectHasTasks = _error(400, 402, "Project has associated tasks")
InvalidProjectName = _error(400, 407, "Invalid project name")
InvalidQueueId = _error(400, 701, "Invalid queue id")
QueueNotEmpty = _error(400, 702, "Queue is not empty")
InvalidQueueOrTaskNotQueued = _error(400, 703, "Invalid queue id or task not in queue")
NoDefaultQueue = _error(400, 707, "No queue is tagged as the default queue for this company")
ExpectedUniqueData = _error(
    400, 801, "Value combination already exists (unique field already contains this value)"
)
InvalidWorkerId = _error(400, 1001, "Invalid worker id")
WorkerNotRegistered = _error(400, 1004, "Worker is not registered")

# 401 unauthorized
NotAuthorized = _error(401, 1, "Unauthorized (not authorized for endpoint)")
BadAuthType = _error(401, 10, "Unauthorized (bad authentication header type)")
NoCredentials = _error(401, 20, "Unauthorized (missing credentials)")
BadCredentials = _error(401, 21, "Unauthorized (malformed credentials)")
InvalidCredentials = _error(401, 22, "Unauthorized (invalid credentials)")
InvalidToken = _error(401, 30, "Invalid token")

# 500 server_error
GeneralError = _error(500, 0, "General server error")
InternalError = _error(500, 1, "Internal server error")


def endpoint_not_found(name: str, version: str) -> APIError:
    """The real server answers 404/0 (not an errors.conf entry) for an unknown endpoint."""
    return APIError(404, 0, f"Unable to find endpoint for name {name} and version {version}")
