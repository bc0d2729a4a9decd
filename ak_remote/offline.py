"""Upload a ClearML offline session (what `ak-remote run` writes with no server) to a server."""

from __future__ import annotations

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
    from clearml import OutputModel, Task

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
    model_id = None
    keras_artifact = next(
        (a for name, a in task.artifacts.items() if name.endswith(".keras") or name == "model"),
        None,
    )
    if keras_artifact is not None and keras_artifact.url and not task.models.get("output"):
        labels = _labels(task)
        model = OutputModel(
            task=task,
            framework="Keras",
            name=f"{task.name} model",
            label_enumeration=labels or None,
        )
        model.update_weights(register_uri=keras_artifact.url)
        model_id = model.id
    return ImportedRun(str(task_id), model_id)


def _labels(task: object) -> dict[str, int]:
    """Class names the job recorded in its inference metadata, if any."""
    import json

    artifacts = getattr(task, "artifacts", {})
    meta = artifacts.get("inference.json")
    if meta is None:
        return {}
    try:
        data = json.loads(Path(meta.get_local_copy()).read_text())
    except Exception:  # metadata is a nicety here; the model registers without it
        return {}
    classes = data.get("classes") or data.get("output", {}).get("classes") or []
    return {str(name): i for i, name in enumerate(classes)}
