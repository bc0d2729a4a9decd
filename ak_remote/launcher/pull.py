"""Pull: download a run's exported models and inference metadata, verified, reloaded, checked.

Integrity comes from the run itself: the job records a sha256 of every exported file in its
`summary.json` artifact (export.checksums). A download that does not match is fetched once more
and then rejected. A run whose own export check failed is refused outright. Loading the models
(and `--check`, which reproduces the predictions the job recorded on held-out samples) imports
TensorFlow, only here and only then.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ak_remote.clearml_api import Client, Doc
from ak_remote.contract import (
    BAD_STATUSES,
    FINISHED_OK,
    MODEL_METADATA,
    SUMMARY_FILE,
    sha256_file,
)
from ak_remote.errors import DataError, RunFailedError, UsageError
from ak_remote.model.reload import check_predictions, load_models
from ak_remote.summary import ExportRecord, RunSummary

Progress = Callable[[str], None]
SUMMARY = SUMMARY_FILE


@dataclass
class PullResult:
    """What was pulled: where, each file's sha256, and the reload/check outcome."""

    task_id: str
    dest: Path
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    loaded: list[str] = field(default_factory=list)
    check: dict[str, Any] | None = None
    summary: RunSummary = field(default_factory=RunSummary)

    def as_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "dest": str(self.dest),
            "files": self.files,
            "loaded": self.loaded,
            "check": self.check,
        }


def artifacts_of(task: Mapping[str, Any]) -> dict[str, Doc]:
    """The task's artifacts by key."""
    items = (task.get("execution") or {}).get("artifacts") or []
    return {str(a.get("key")): a for a in items if isinstance(a, dict) and a.get("uri")}


def safe_relative(name: str) -> PurePosixPath:
    """A relative path from the server that stays inside its folder. Raises RunFailedError."""
    path = PurePosixPath(name.replace("\\", "/"))
    if not name or path.is_absolute() or ".." in path.parts or any(":" in p for p in path.parts):
        raise RunFailedError(f"the run records an unsafe file name {name!r}", "do not use this run")
    return path


def fetch_summary(client: Client, task: Mapping[str, Any], dest: Path) -> RunSummary:
    """Download and parse the run's summary.json. Raises RunFailedError when it has none."""
    artifact = artifacts_of(task).get(SUMMARY)
    if artifact is None:
        raise RunFailedError(
            f"run {task.get('id')} has no {SUMMARY} artifact",
            "only runs of ak-remote jobs that finished can be pulled",
        )
    path = dest / SUMMARY
    client.download(str(artifact["uri"]), path)
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise RunFailedError(
            f"the run's {SUMMARY} is not valid JSON", "do not use this run"
        ) from None
    try:
        return RunSummary.from_dict(summary, f"the run's {SUMMARY}")
    except DataError as exc:
        raise RunFailedError(exc.message, exc.hint or "do not use this run") from None


def _download_verified(client: Client, url: str, target: Path, expected: str, say: Progress) -> str:
    """Download `url` to `target` and check its sha256; one more try on a mismatch."""
    for attempt in (1, 2):
        got = client.download(url, target)
        if got == expected:
            return got
        say(
            f"{target.name}: sha256 mismatch (attempt {attempt}), "
            + ("retrying" if attempt == 1 else "rejecting")
        )
    target.unlink(missing_ok=True)
    raise RunFailedError(
        f"{target.name} does not match the checksum the run recorded (truncated or altered "
        "download); it was deleted",
        "try again later; if it persists the stored file is damaged",
    )


def _extract_zip(archive: Path, target: Path) -> None:
    """Unpack a zip refusing members that would land outside `target`."""
    with zipfile.ZipFile(archive) as zipped:
        for member in zipped.infolist():
            relative = (
                safe_relative(member.filename.rstrip("/")) if member.filename.strip("/") else None
            )
            if relative is None or member.is_dir():
                continue
            out = target / Path(*relative.parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(member) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst)


def _folder_sums(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _download_folder_verified(
    client: Client, url: str, target: Path, expected: Mapping[str, str], say: Progress
) -> dict[str, str]:
    """Download a zipped folder artifact, unpack it into `target`, check every file's sha256."""
    for attempt in (1, 2):
        with tempfile.TemporaryDirectory(prefix="ak-remote-pull-") as tmp:
            archive = Path(tmp) / "artifact.zip"
            client.download(url, archive)
            unpacked = Path(tmp) / "unpacked"
            try:
                _extract_zip(archive, unpacked)
            except zipfile.BadZipFile:
                got: dict[str, str] = {}
            else:
                got = _folder_sums(unpacked)
                # ClearML may keep the folder's own name as the top level of the zip.
                tops = {k.split("/", 1)[0] for k in got}
                if got and len(tops) == 1 and not set(got) & set(expected):
                    top = next(iter(tops))
                    got = {k.split("/", 1)[1]: v for k, v in got.items() if "/" in k}
                    unpacked = unpacked / top
            if got == dict(expected):
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(unpacked, target)
                return got
        say(f"{target.name}/: contents do not match the run's checksums (attempt {attempt})")
    raise RunFailedError(
        f"{target.name} does not match the checksums the run recorded (truncated or altered "
        "download)",
        "try again later; if it persists the stored files are damaged",
    )


def pull(
    client: Client,
    task_id: str,
    dest: Path | None = None,
    load: bool = True,
    check: bool = False,
    progress: Progress | None = None,
) -> PullResult:
    """Download, verify, and (with load) reload a run's models; with check, replay predictions.

    Raises UsageError (run not finished), RunFailedError (failed export check, integrity or
    prediction mismatch, reload failure), ServerError.
    """
    from ak_remote.launcher.runs import check_task_ids

    say = progress or (lambda _text: None)
    task_id = check_task_ids([task_id])[0]
    task = client.get_task(task_id)
    status = str(task.get("status"))
    if status not in FINISHED_OK:
        if status in BAD_STATUSES:
            raise RunFailedError(
                f"run {task_id} ended {status}; it has no verified model",
                f"ak-remote logs {task_id}",
            )
        raise UsageError(
            f"run {task_id} is {status}, not finished", f"wait for it: ak-remote status {task_id}"
        )
    dest = (dest or Path("pulled") / task_id).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    summary = fetch_summary(client, task, dest)
    export = summary.export or ExportRecord()
    verification = export.verification
    if not verification.get("passed"):
        raise RunFailedError(
            f"run {task_id}'s exported model failed its own verification; not pulling it",
            f"see summary.json in {dest}",
        )
    # Keys are relative to the run folder ("models/model.keras"); older runs used models/ itself.
    checksums: dict[str, str] = {
        safe_relative(k).as_posix().removeprefix("models/"): str(v)
        for k, v in export.checksums.items()
    }
    artifacts = artifacts_of(task)
    result = PullResult(task_id, dest, summary=summary)
    formats: dict[str, str] = {
        name: safe_relative(str(path)).name for name, path in export.formats.items()
    }
    wanted = [(f, f) for f in formats.values()] + [(m, m) for m in MODEL_METADATA]
    if export.serving is not None:  # the serving model (TF Serving base folder)
        wanted.append(("serving", "serving"))
    for key, relative in wanted:
        artifact = artifacts.get(key)
        if artifact is None:
            raise RunFailedError(f"run {task_id} has no {key} artifact", "the run is incomplete")
        url = str(artifact["uri"])
        if relative in checksums:
            say(f"downloading {relative}")
            result.files[relative] = _download_verified(
                client, url, dest / relative, checksums[relative], say
            )
            continue
        inner = {
            k[len(relative) + 1 :]: v for k, v in checksums.items() if k.startswith(relative + "/")
        }
        if not inner:
            raise RunFailedError(
                f"the run recorded no checksum for {relative}",
                "it cannot be verified; do not use it",
            )
        say(f"downloading {relative}/ ({len(inner)} files)")
        for name, digest in _download_folder_verified(
            client, url, dest / relative, inner, say
        ).items():
            result.files[f"{relative}/{name}"] = digest
    say(f"all {len(result.files)} files match the run's checksums")
    if load or check:
        models = load_models(dest, formats)
        result.loaded = sorted(models)
        if check:
            result.check = check_predictions(dest, models, verification)
    return result


def fetch_tensorboard_logs(
    client: Client, task_ids: list[str], root: Path, progress: Progress | None = None
) -> dict[str, Path]:
    """Download and unpack each run's `tensorboard` artifact under root/<id>; {label: dir}.

    Raises UsageError for unknown ids, RunFailedError for a run without TensorBoard logs.
    """
    from ak_remote.launcher.runs import select_tasks

    say = progress or (lambda _text: None)
    tasks = select_tasks(client, ids=task_ids, fields=["id", "name", "status", "execution"])
    found: dict[str, Path] = {}
    for task in tasks:
        task_id = str(task["id"])
        artifact = artifacts_of(task).get("tensorboard")
        if artifact is None:
            raise RunFailedError(
                f"run {task_id} has no tensorboard artifact (yet)",
                "runs upload their logs when they end; check `ak-remote status`",
            )
        target = root / task_id
        with tempfile.TemporaryDirectory(prefix="ak-remote-tb-") as tmp:
            archive = Path(tmp) / "tensorboard.zip"
            say(f"downloading TensorBoard logs of {task_id}")
            client.download(str(artifact["uri"]), archive)
            shutil.rmtree(target, ignore_errors=True)
            try:
                _extract_zip(archive, target)
            except zipfile.BadZipFile:
                raise RunFailedError(
                    f"the TensorBoard logs of {task_id} are not a valid zip", "try again"
                ) from None
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(task.get("name")))
        found[f"{name[:40]}-{task_id[:8]}"] = target
    return found
