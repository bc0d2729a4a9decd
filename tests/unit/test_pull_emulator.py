"""pull's integrity rules against files on the emulator's fileserver (no model loading here;
the end-to-end test reloads and replays a real model)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from ak_remote.clearml_api import client_from_config
from ak_remote.errors import RunFailedError
from ak_remote.launcher.pull import pull, safe_relative
from tests.emulator.server import Emulator
from tests.helpers import invoke


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


SAVEDMODEL = {"saved_model.pb": b"pb" * 50, "variables/variables.index": b"idx"}
FILES = {
    "model.keras": b"keras-bytes" * 100,
    "inference.json": b'{"output": {"decode": "identity"}}',
    "pipeline.json": b"{}",
    "check_samples.npz": b"npz",
}


def run_with_artifacts(
    emulator: Emulator,
    *,
    passed: bool = True,
    savedmodel_zip: bytes | None = None,
    checksums: dict[str, str] | None = None,
) -> str:
    task_id = emulator.create_task("run", project="ak-remote")
    base = f"/ak-remote/run.{task_id}/artifacts"
    artifacts = []
    blobs: dict[str, bytes] = dict(FILES)
    blobs["savedmodel"] = savedmodel_zip if savedmodel_zip is not None else zipped(SAVEDMODEL)
    sums = {f"models/{k}": sha(v) for k, v in FILES.items()}
    sums.update({f"models/savedmodel/{k}": sha(v) for k, v in SAVEDMODEL.items()})
    summary = {
        "export": {
            "formats": {"keras": "models/model.keras", "savedmodel": "models/savedmodel"},
            "checksums": checksums if checksums is not None else sums,
            "verification": {"passed": passed, "tolerance": 1e-4},
        }
    }
    blobs["summary.json"] = json.dumps(summary).encode()
    for key, data in blobs.items():
        name = f"{key}.zip" if key == "savedmodel" else key
        path = f"{base}/{key}/{name}"
        emulator.state.files[path] = data
        artifacts.append({"key": key, "type": "custom", "uri": emulator.file_url(path)})
    emulator.call("tasks.started", task=task_id)
    emulator.call("tasks.add_or_update_artifacts", task=task_id, artifacts=artifacts, force=True)
    emulator.call("tasks.completed", task=task_id)
    return task_id


def test_everything_is_downloaded_and_matches(clearml_emulator: Emulator, tmp_path: Path) -> None:
    task_id = run_with_artifacts(clearml_emulator)
    result = pull(client_from_config(), task_id, tmp_path / "out", load=False)
    assert (tmp_path / "out" / "model.keras").read_bytes() == FILES["model.keras"]
    assert (
        tmp_path / "out" / "savedmodel" / "variables" / "variables.index"
    ).read_bytes() == b"idx"
    assert sorted(result.files) == sorted(
        [*FILES, "savedmodel/saved_model.pb", "savedmodel/variables/variables.index"]
    )


def test_a_zip_with_the_folder_name_on_top_is_accepted(
    clearml_emulator: Emulator, tmp_path: Path
) -> None:
    nested = zipped({f"savedmodel/{k}": v for k, v in SAVEDMODEL.items()})
    task_id = run_with_artifacts(clearml_emulator, savedmodel_zip=nested)
    pull(client_from_config(), task_id, tmp_path / "out", load=False)
    assert (tmp_path / "out" / "savedmodel" / "saved_model.pb").is_file()


def test_a_zip_reaching_outside_its_folder_is_refused(
    clearml_emulator: Emulator, tmp_path: Path
) -> None:
    evil = zipped({**SAVEDMODEL, "../../escaped.txt": b"x"})
    task_id = run_with_artifacts(clearml_emulator, savedmodel_zip=evil)
    with pytest.raises(RunFailedError, match="unsafe file name"):
        pull(client_from_config(), task_id, tmp_path / "a" / "b" / "out", load=False)
    assert not list(tmp_path.rglob("escaped.txt"))


def test_a_changed_file_in_the_folder_is_refused(
    clearml_emulator: Emulator, tmp_path: Path
) -> None:
    altered = zipped({**SAVEDMODEL, "saved_model.pb": b"other"})
    task_id = run_with_artifacts(clearml_emulator, savedmodel_zip=altered)
    result = invoke("pull", task_id, "--dest", str(tmp_path / "o"), "--no-load")
    assert result.exit_code == 5
    assert "does not match the checksums" in result.stderr
    assert not (tmp_path / "o" / "savedmodel").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"passed": False}, "failed its own verification"),
        ({"checksums": {}}, "recorded no checksum"),
        ({"checksums": {"../../etc/passwd": "0" * 64}}, "unsafe file name"),
    ],
)
def test_runs_that_cannot_be_trusted_are_refused(
    clearml_emulator: Emulator, tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    task_id = run_with_artifacts(clearml_emulator, **kwargs)
    with pytest.raises(RunFailedError, match=message):
        pull(client_from_config(), task_id, tmp_path / "out", load=False)
    assert not (tmp_path / "out" / "model.keras").exists()


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b", "C:/x", ""])
def test_unsafe_relative_names(name: str) -> None:
    with pytest.raises(RunFailedError):
        safe_relative(name)


def test_safe_relative_names() -> None:
    assert safe_relative("models/savedmodel/x.pb").parts == ("models", "savedmodel", "x.pb")
