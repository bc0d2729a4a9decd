"""Jobs against a ClearML server (the loopback API emulator): tracked online, registered model,
and an agent-style run whose server-side parameters are bad.
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from ak_remote.catalog import JOBS
from tests.helpers import error_lines, job_env, run_captured, sets

pytestmark = pytest.mark.slow


def _server_env(handle: Any, home: Path) -> dict[str, str]:
    env = job_env(home)
    env.update(handle.env())
    return env


def test_online_run_is_tracked_and_registers_the_verified_model(
    clearml_emulator: Any, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    argv = [sys.executable, str(JOBS["structured-classifier"].script_path)]
    argv += sets("max_samples=100", "epochs=1", "max_trials=1")
    argv += ["--run-dir", str(tmp_path / "run"), "--project", "ak-remote-tests"]
    proc = run_captured(argv, _server_env(clearml_emulator, home), tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["offline_session"] is None
    assert "offline session:" not in proc.stderr
    model_id = summary["model_registration"]
    assert isinstance(model_id, str)
    assert model_id
    task = clearml_emulator.get_task(summary["task_id"])
    assert task["status"] == "completed"
    assert task["name"] == "structured-classifier on wine"
    general = task["hyperparams"]["General"]
    assert general["max_samples"]["value"] == "100"
    artifacts = {a["key"] for a in task["execution"]["artifacts"]}
    assert {
        "model.keras",
        "savedmodel",
        "inference.json",
        "tensorboard",
        "summary.json",
    } <= artifacts
    models = task.get("models", {}).get("output", [])
    assert [m["model"] for m in models] == [model_id]
    # The registered model is the uploaded serving model, not a path on this machine's disk.
    model = clearml_emulator.state.models[model_id]
    assert model["framework"] == "TensorFlow"
    assert model["uri"].startswith("http")
    assert "file://" not in model["uri"]
    assert model["labels"] == {"class_0": 0, "class_1": 1, "class_2": 2}
    signature = json.loads(model["metadata"]["signature"]["value"])
    assert {"serve", "serve_typed", "serving_default"} <= set(signature)
    path = next(p for p in clearml_emulator.state.files if p.endswith(model["uri"].split("/")[-1]))
    with zipfile.ZipFile(io.BytesIO(clearml_emulator.state.files[path])) as package:
        names = package.namelist()
    assert "1/saved_model.pb" in names  # a TF Serving base folder


def test_agent_run_with_bad_server_parameters_fails_the_task(
    clearml_emulator: Any, tmp_path: Path
) -> None:
    """An agent runs a clone whose General/epochs the server holds as 'ten'."""
    job = JOBS["image-classifier"]
    values = job.params.to_strings(job.params.defaults())
    values["epochs"] = "ten"
    hyperparams = {
        "General": {
            name: {"section": "General", "name": name, "value": value, "type": "str"}
            for name, value in values.items()
        }
    }
    task_id = clearml_emulator.create_task(
        "image-classifier clone", project="ak-remote-tests", hyperparams=hyperparams
    )
    clearml_emulator.call("tasks.enqueue", task=task_id, queue=clearml_emulator.create_queue("q"))
    clearml_emulator.call("tasks.started", task=task_id, force=True)
    env = _server_env(clearml_emulator, tmp_path / "home")
    env["CLEARML_TASK_ID"] = task_id  # what clearml-agent sets for the process it runs
    argv = [sys.executable, str(job.script_path), "--run-dir", str(tmp_path / "run")]
    proc = run_captured(argv, env, tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = error_lines(proc.stderr)
    assert errors == [
        f"Error: epochs: 'ten' is not a valid int value ({job.params.get('epochs').describe()})"
    ]
    task = clearml_emulator.get_task(task_id)
    assert task["status"] == "failed"
    assert "epochs: 'ten' is not a valid int" in task.get("status_message", "")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["task_id"] == task_id
    assert summary["model_registration"] is None
