"""Upload a ClearML offline session (what `ak-remote run` writes with no server) to a server."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ak_remote.clearml_api import Client
from ak_remote.contract import COMPLETED, FAILED, INFERENCE_FILE, RUN_COMPLETED, SUMMARY_FILE
from ak_remote.errors import DataError, ServerError, UsageError
from ak_remote.summary import PENDING_IMPORT, RunSummary


@dataclass
class ImportedRun:
    """The server-side task an offline session became, and the model registered for it."""

    task_id: str
    model_id: str | None
    status: str  # what the run itself ended as: "completed" or "failed"


def close_session(zip_path: Path) -> bool:
    """Zip an offline session folder whose job was killed before it could (`<zip>` without
    `.zip`), as ClearML's own close would; True when it did. Without the zip the session cannot
    be imported; the folder holds everything recorded up to the kill, in the zip's layout."""
    folder = zip_path.with_suffix("")
    if zip_path.exists() or not (folder / "task.json").is_file():
        return False
    tmp = zip_path.with_name(f".{zip_path.name}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as out:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    out.write(path, arcname=path.relative_to(folder).as_posix())
        os.replace(tmp, zip_path)
    except OSError:
        tmp.unlink(missing_ok=True)
        return False
    return True


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


def import_session(client: Client, path: Path) -> ImportedRun:
    """Import the session, then register its exported model (offline runs cannot).

    Raises UsageError for a bad file, ServerError when the server refuses or is unreachable.
    """
    check_session(path)
    # The SDK prints progress on stdout, which carries only data here.
    with contextlib.redirect_stdout(sys.stderr):
        return _import(client, path)


def _import(client: Client, path: Path) -> ImportedRun:
    from clearml import Task

    summary = _read_summary(path)
    inference = _read_artifact(path, INFERENCE_FILE)
    try:
        task_id = Task.import_offline_session(str(path))
    except Exception as exc:  # noqa: BLE001 - the SDK raises bare exceptions for HTTP and auth failures
        raise ServerError(
            f"importing {path.name} failed: {exc}",
            "check CLEARML_API_HOST and the credentials in clearml.conf",
        ) from None
    if not task_id:
        raise ServerError(f"the server did not accept {path.name}", "run `ak-remote doctor`")
    task: Any = Task.get_task(task_id=str(task_id))
    if summary is None or summary.status != RUN_COMPLETED:
        # The import always ends the task completed; a failed run must not look good. A job
        # uploads its summary.json when it closes its run: a session without one was killed.
        message = (summary.error if summary is not None else None) or (
            "the offline run failed"
            if summary is not None
            else "the run never finished: its job was killed before it closed its session"
        )
        client.mark_failed(str(task_id), "failed in offline mode", message)
        return ImportedRun(str(task_id), None, FAILED)
    model_id = None
    # The serving model (a zipped TF Serving base folder) when the run has one.
    serving = task.artifacts.get("serving")
    keras_artifact = serving or task.artifacts.get("model.keras")
    wants_model = summary is None or summary.model_registration == PENDING_IMPORT
    if wants_model and keras_artifact is not None and keras_artifact.url:
        classes = (inference.get("output") or {}).get("class_names") or []
        labels = {str(name): i for i, name in enumerate(classes)}
        model_id = client.register_output_model(
            {"id": str(task.id), "project": str(task.project)},
            {
                "name": f"{task.name} model",
                "uri": str(keras_artifact.url),
                "framework": "TensorFlow" if serving is not None else "Keras",
                "labels": labels,
                "comment": "registered by ak-remote import-offline",
            },
        )
    return ImportedRun(str(task_id), model_id, COMPLETED)


def _read_summary(path: Path) -> RunSummary | None:
    """The run's summary.json inside the session zip (None when absent or unreadable)."""
    data = _read_artifact(path, SUMMARY_FILE)
    try:
        return RunSummary.from_dict(data) if data else None
    except DataError:
        return None


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
