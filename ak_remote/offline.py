"""Upload a ClearML offline session (what `ak-remote run` writes with no server) to a server."""

from __future__ import annotations

import contextlib
import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ak_remote.errors import ServerError, UsageError


@dataclass
class ImportedRun:
    """The server-side task an offline session became, and the model registered for it."""

    task_id: str
    model_id: str | None
    status: str  # what the run itself ended as: "completed" or "failed"


def check_session(path: Path) -> None:
    """Refuse anything that is not an offline session zip; raises UsageError."""
    if not path.is_file():
        raise UsageError(f"{path} does not exist", "pass the zip that `ak-remote run` printed")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except zipfile.BadZipFile:
        raise UsageError(f"{path} is not a zip file", "pass the offline session zip") from None
    if "task.json" not in names:
        raise UsageError(
            f"{path} is not a ClearML offline session (no task.json inside)",
            "pass the zip that `ak-remote run` printed as 'offline session:'",
        )


def import_session(path: Path) -> ImportedRun:
    """Import the session, then register its exported model (offline runs cannot).

    Raises UsageError for a bad file, ServerError when the server refuses or is unreachable.
    """
    check_session(path)
    # The SDK prints progress on stdout, which carries only data here.
    with contextlib.redirect_stdout(sys.stderr):
        return _import(path)


def _import(path: Path) -> ImportedRun:
    from clearml import Task

    summary = _read_artifact(path, "summary.json")
    inference = _read_artifact(path, "inference.json")
    try:
        task_id = Task.import_offline_session(str(path))
    except Exception as exc:  # the SDK raises bare exceptions for HTTP and auth failures
        raise ServerError(
            f"importing {path.name} failed: {exc}",
            "check CLEARML_API_HOST and the credentials in clearml.conf",
        ) from None
    if not task_id:
        raise ServerError(f"the server did not accept {path.name}", "run `ak-remote doctor`")
    task: Any = Task.get_task(task_id=str(task_id))
    if summary.get("status") == "failed":
        # The import always ends the task completed; a failed run must not look good.
        _mark_failed(str(task_id), str(summary.get("error") or "the offline run failed"))
        return ImportedRun(str(task_id), None, "failed")
    model_id = None
    # The serving model (a zipped TF Serving base folder) when the run has one.
    serving = task.artifacts.get("serving")
    keras_artifact = serving or task.artifacts.get("model.keras")
    wants_model = summary.get("model_registration") == "pending-import" or not summary
    if wants_model and keras_artifact is not None and keras_artifact.url:
        classes = (inference.get("output") or {}).get("class_names") or []
        labels = {str(name): i for i, name in enumerate(classes)}
        framework = "TensorFlow" if serving is not None else "Keras"
        model_id = _register_model(task, str(keras_artifact.url), labels, framework)
    return ImportedRun(str(task_id), model_id, "completed")


def _read_artifact(path: Path, name: str) -> dict[str, Any]:
    """A JSON artifact stored inside the session zip ({} when absent or unreadable)."""
    suffix = f"/artifacts/{name}/{name}"
    with zipfile.ZipFile(path) as archive:
        member = next((n for n in archive.namelist() if n.endswith(suffix)), None)
        if member is None:
            return {}
        try:
            data = json.loads(archive.read(member))
        except ValueError:
            return {}
    return data if isinstance(data, dict) else {}


def _mark_failed(task_id: str, message: str) -> None:
    from ak_remote.clearml_api import client_from_config

    client_from_config().call(
        "tasks.failed",
        {
            "task": task_id,
            "force": True,
            "status_reason": "failed in offline mode",
            "status_message": message[:1000],
        },
    )


def _register_model(task: Any, uri: str, labels: dict[str, int], framework: str) -> str:
    """Create the model record for the uploaded `.keras` file and list it among the task's outputs.

    The import leaves the task completed, and the server lets `tasks.add_or_update_model` touch
    only running tasks (so does the SDK's OutputModel), hence a forced edit of the task's
    `models`, which is idempotent and so safe to retry.
    """
    from ak_remote.clearml_api import client_from_config

    client = client_from_config()
    task_id = str(task.id)
    # Not idempotent: sent once, never retried blindly.
    model_id = client.write(
        "models.create",
        {
            "name": f"{task.name} model",
            "uri": uri,
            "framework": framework,
            "labels": labels,
            "task": task_id,
            "project": str(task.project),
            "ready": True,
            "comment": "registered by ak-remote import-offline",
        },
        find=None,
        parse=lambda data: str(data["id"]),
    )
    current = client.get_task(task_id).get("models") or {}
    outputs = [m for m in current.get("output") or [] if m.get("name") != "model"]
    outputs.append({"name": "model", "model": model_id})
    models = {"input": current.get("input") or [], "output": outputs}
    client.call("tasks.edit", {"task": task_id, "force": True, "models": models})
    return model_id
