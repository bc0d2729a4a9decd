"""Everything a job says to ClearML, in one narrow place (so the traffic is easy to see and test).

Offline mode (ClearML's embedded default here) is chosen when `--offline` is given or when no
server is configured: no CLEARML_API_HOST and no clearml.conf (CLEARML_CONFIG_FILE or
~/clearml.conf). The session then lands as a zip under ~/.clearml/cache/offline/.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ak_remote.contract import ABORTED_KEY, RUN_HERE_ENV, encoded_uri
from ak_remote.errors import DataError
from ak_remote.params import SECTION

# Frameworks whose ClearML auto-capture a job turns off, and why:
# - tensorboard: its per-trial series names are inconsistent (seen in offline sessions); the
#   job reports one clearly named series per trial and split itself (runtime/callbacks.py);
# - tensorflow/keras: every checkpoint save would be registered as an output model, a model
#   "reported as good" before it is verified; the job registers the verified one itself;
# - tfdefines: absl flags captured one `tasks.edit` each (31 edits for a small job);
# - matplotlib, joblib, scikit: nothing of theirs is part of a run's record.
AUTO_CONNECT_FRAMEWORKS: dict[str, bool] = {
    "tensorboard": False,
    "tensorflow": False,
    "keras": False,
    "tfdefines": False,
    "matplotlib": False,
    "joblib": False,
    "scikit": False,
    "pytorch": False,
    "xgboost": False,
    "lightgbm": False,
    "catboost": False,
    "fastai": False,
    "hydra": False,
}


class Tracker:
    """A ClearML task for one job run: parameters, scalars, plots, artifacts, model, status."""

    def __init__(self, project: str, name: str, offline: bool) -> None:
        from clearml import Task

        from ak_remote.runtime import console

        console.tidy()  # ClearML set up its own console logger on import

        if offline:
            Task.set_offline(True)
        # ClearML reports from a forked subprocess on Linux by default; closing then waits
        # about 11 s for it (measured), and the extra process competes with training for the
        # CPU. A reporting thread is what it uses elsewhere; the attribute is private, hence
        # the guard.
        if hasattr(Task, "_report_subprocess_enabled"):
            setattr(Task, "_report_subprocess_enabled", False)  # noqa: B010
        self.offline = offline
        self.task: Any = Task.init(
            project_name=project,
            task_name=name,
            task_type=Task.TaskTypes.training,
            reuse_last_task_id=False,
            auto_connect_arg_parser=False,
            auto_connect_frameworks=AUTO_CONNECT_FRAMEWORKS,
        )
        self.logger: Any = self.task.get_logger()

    @property
    def task_id(self) -> str:
        return str(self.task.id)

    @property
    def running_remotely(self) -> bool:
        from clearml import Task

        return bool(Task.running_locally() is False)

    def connect_parameters(self, values: Mapping[str, str]) -> dict[str, str]:
        """Connect the job's parameters (strings) to the General section; returns the values
        that count: ours locally, the server's (possibly overridden) ones under an agent."""
        connected = self.task.connect(dict(values), name=SECTION)
        return {str(key): str(value) for key, value in dict(connected).items()}

    def offline_zip(self) -> Path | None:
        """Where the offline session's zip is (written by close); None when online."""
        folder = self.task.get_offline_mode_folder() if self.offline else None
        return Path(f"{folder}.zip") if folder else None

    def report_scalar(self, title: str, series: str, value: float, iteration: int) -> None:
        self.logger.report_scalar(title=title, series=series, value=value, iteration=iteration)

    def report_single_value(self, name: str, value: float) -> None:
        self.logger.report_single_value(name=name, value=value)

    def report_table(self, title: str, series: str, rows: Sequence[Sequence[Any]]) -> None:
        """A table plot (first row: the header)."""
        self.logger.report_table(title=title, series=series, iteration=0, table_plot=rows)

    def report_plotly(self, title: str, series: str, figure: Mapping[str, Any]) -> None:
        self.logger.report_plotly(title=title, series=series, iteration=0, figure=dict(figure))

    def flush(self) -> None:
        """Send what was reported now, not at the SDK's next periodic flush."""
        self.logger.flush()

    def report_confusion_matrix(self, matrix: Any, labels: Sequence[str]) -> None:
        self.logger.report_confusion_matrix(
            title="confusion matrix",
            series="test",
            matrix=matrix,
            iteration=0,
            xaxis="predicted",
            yaxis="true",
            xlabels=list(labels),
            ylabels=list(labels),
        )

    def upload(self, name: str, path: Path) -> None:
        """Attach a file or a folder (ClearML zips folders) as an artifact, waiting for it."""
        self.task.upload_artifact(name=name, artifact_object=str(path), wait_on_upload=True)

    def download_artifact(self, name: str) -> Path | None:
        """A fresh local copy of this task's own output artifact `name` (left by an earlier run
        of the same task), or None when it has none. Raises ValueError when it cannot be fetched.
        """
        artifact = self.task.artifacts.get(name)
        if artifact is None:
            return None
        local = artifact.get_local_copy(
            extract_archive=False, raise_on_error=True, force_download=True
        )
        return Path(local)

    def download_task_artifact(self, task_id: str, name: str) -> Path | None:
        """A local copy of another task's output artifact `name`, or None when it has none.
        Raises what the SDK raises when it cannot be fetched."""
        from clearml import Task

        artifact: Any = Task.get_task(task_id=task_id).artifacts.get(name)
        if artifact is None:
            return None
        return Path(artifact.get_local_copy(extract_archive=False, raise_on_error=True))

    def register_model(
        self,
        package: Path,
        labels: Mapping[str, int] | None,
        name: str,
        metadata: Mapping[str, str],
    ) -> str:
        """Upload `package` (the serving model's TF Serving base folder, zipped) and register it
        as the task's output model (online only); its id.

        Uploaded to the task's output destination (the files server by default), so the model
        registry and clearml-serving can fetch it from anywhere, not from the agent's disk.
        """
        from clearml import OutputModel

        model = OutputModel(
            task=self.task,
            framework="TensorFlow",
            label_enumeration=dict(labels or {}),
            name=name,
        )
        destination = self.task.output_uri or self.logger.get_default_upload_destination()
        model.update_weights_package(
            weights_path=str(package),
            upload_uri=destination,
            auto_delete_file=False,
            async_enable=False,
        )
        # The SDK records the URI with the task's name raw in its path (spaces, `=`): fine for
        # the SDK, not for curl or a browser. The fileserver decodes the path: same file.
        uploaded = str(model.url or "")
        base: Any = model._get_base_model()
        if uploaded and encoded_uri(uploaded) != uploaded and base is not None:
            base.edit(uri=encoded_uri(uploaded))
        for key, value in metadata.items():
            model.set_metadata(key, value)
        return str(model.id)

    def add_tags(self, tags: Sequence[str]) -> None:
        self.task.add_tags(list(tags))

    def set_comment(self, text: str) -> None:
        self.task.set_comment(text)

    def complete(self) -> None:
        """Close the task: ClearML marks it completed and writes the offline zip."""
        if self.running_remotely and os.environ.get(RUN_HERE_ENV):
            # An existing task run here: the SDK leaves its status to an agent, and none runs it.
            self.task.mark_completed(force=True)
        self.task.close()

    def aborted_at(self) -> str | None:
        """Who stopped this task and when (`aborted by ak-remote at TIME`), if ak-remote did
        before this process began: an agent that had pulled it still started it
        (contract.ABORTED_KEY). None otherwise."""
        if self.offline or not self.running_remotely:
            return None
        runtime = self.task.data.runtime or {}  # read by Task.init, after the agent started it
        value = runtime.get(ABORTED_KEY)
        return str(value) if value else None

    def stop(self, message: str) -> None:
        """Mark the task stopped with `message` and close it (the SDK's completion at close
        becomes the same stop)."""
        task = self.task

        def _stopped(*_args: Any, **_kwargs: Any) -> Any:
            return task.mark_stopped(force=True, status_message=message)

        task.mark_completed = _stopped
        task.set_progress = lambda *_args, **_kwargs: None
        _stopped()
        task.close()

    def fail(self, message: str, hint: str | None = None) -> None:
        """Mark the task failed with `message` (and what to do, `hint`) and close it."""
        task = self.task
        # Task.close() marks a task completed when the process has not crashed; a run that
        # failed must stay failed, so the completion it sends becomes our failure (the offline
        # session records no status at all: summary.json carries it there).
        reason = status_reason(message, hint)
        # Into the task's log now, with the SDK's last flush: the job prints its error line
        # after the task is closed, and an agent stopped right after the failure may never
        # forward that line (seen in CI: the log ended without it).
        self.logger.report_text(f"Error: {reason}", level=logging.ERROR, print_console=False)

        def _failed(*_args: Any, **_kwargs: Any) -> Any:
            return task.mark_failed(status_reason=reason, status_message=reason, force=True)

        task.mark_completed = _failed
        task.set_progress = lambda *_args, **_kwargs: None
        if self.running_remotely:
            # Under an agent close() leaves the status to the daemon: say failed ourselves.
            _failed()
        task.close()


STATUS_REASON_LENGTH = 250  # what the Web UI shows of a task's status reason


def status_reason(message: str, hint: str | None = None) -> str:
    """`message (hint)` in STATUS_REASON_LENGTH characters: a long message is shortened, never
    the hint, which holds the command to run next (a path or id cut off is no command)."""
    text = f"{message} ({hint})" if hint else message
    if len(text) <= STATUS_REASON_LENGTH:
        return text
    room = STATUS_REASON_LENGTH - len(hint) - 4 if hint else 0
    if room < 20:  # a hint too long to keep whole: cut the end, as anything else would be
        return text[: STATUS_REASON_LENGTH - 1] + "…"
    return f"{message[:room]}… ({hint})"


def fetch_url(url: str, shown: str | None = None, secrets: Sequence[str] = ()) -> Path:
    """A local copy of a URL or bucket path through ClearML's StorageManager (its credentials).

    `shown` is how messages name the URL (masked or with its placeholders) and `secrets` the
    values to redact from the SDK's own error text. Raises DataError when it cannot be fetched.
    """
    from clearml import StorageManager

    from ak_remote.datasets.secrets import mask_credentials, redact

    named = shown if shown is not None else mask_credentials(url)
    try:
        local = StorageManager.get_local_copy(remote_url=url, extract_archive=True)
    except Exception as exc:  # noqa: BLE001 - the SDK raises many types; the message is what matters
        raise DataError(
            f"could not fetch {named}: {redact(str(exc), secrets)}",
            "check the URL and its credentials",
        ) from None
    if not local:
        raise DataError(f"could not fetch {named}", "check the URL and its credentials")
    return Path(local)


def fetch_dataset(dataset_id: str) -> Path:
    """A local copy of a ClearML Dataset. Raises DataError when it cannot be had."""
    from clearml import Dataset

    try:
        folder = Dataset.get(dataset_id=dataset_id).get_local_copy()
    except Exception as exc:  # noqa: BLE001 - the SDK raises untyped errors; its message is reported
        raise DataError(
            f"could not get ClearML dataset {dataset_id}: {exc}",
            "check the id with `clearml-data list` and that the server is configured",
        ) from None
    return Path(folder)
