"""The embedded default, then a server: an offline run imported with `ak-remote import-offline`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import requests

from ak_remote.catalog import PROJECT_ROOT
from ak_remote.contract import encoded_uri
from tests.emulator.server import Emulator

TINY = ["max_trials=1", "epochs=1", "max_samples=120", "batch_size=16"]


def offline_env() -> dict[str, str]:
    """The test's environment without any ClearML server settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CLEARML_")}


def run_offline(tmp_path: Path, sets: list[str]) -> subprocess.CompletedProcess[str]:
    """The structured-classifier job in offline mode, in <tmp_path>/run."""
    argv = [sys.executable, str(PROJECT_ROOT / "jobs" / "structured_classifier.py"), "--offline"]
    argv += ["--run-dir", str(tmp_path / "run")]
    for item in sets:
        argv += ["--set", item]
    return subprocess.run(
        argv,
        env=offline_env(),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        timeout=600,
    )


def import_offline(
    emulator: Emulator, session: str, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """`ak-remote import-offline SESSION --json` in a fresh process pointed at the emulator."""
    return subprocess.run(
        [sys.executable, "-m", "ak_remote", "import-offline", session, "--json"],
        env={**os.environ, **emulator.env()},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        timeout=300,
    )


def test_offline_run_imports_with_metrics_artifacts_and_a_registered_model(
    clearml_emulator: Emulator, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    job = run_offline(tmp_path, TINY)
    assert job.returncode == 0, job.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    session = Path(summary["offline_session"])
    assert session.is_file()
    assert summary["model_registration"] == "pending-import"
    assert clearml_emulator.count() == 0  # offline mode made no request at all

    imported = import_offline(clearml_emulator, str(session), tmp_path)
    assert imported.returncode == 0, imported.stderr[-3000:]
    result = json.loads(imported.stdout)
    task = clearml_emulator.state.tasks[result["task_id"]]

    assert task["name"] == "structured-classifier on wine"
    general = task["hyperparams"]["General"]
    assert general["max_trials"]["value"] == "1"
    assert general["dataset"]["value"] == "wine"
    metrics = {
        (v["metric"], v["variant"]) for m in task["last_metrics"].values() for v in m.values()
    }
    assert any(metric == "epoch_accuracy" for metric, _ in metrics), metrics

    artifacts = {a["key"]: a for a in task["execution"]["artifacts"]}
    assert {"model.keras", "savedmodel", "inference.json", "check_samples.npz"} <= set(artifacts)
    # The imported session's URIs are not percent-encoded (the SDK's doing); requests copes.
    uploaded = requests.get(artifacts["model.keras"]["uri"], timeout=30).content
    local = (run_dir / summary["export"]["formats"]["keras"]).read_bytes()
    assert hashlib.sha256(uploaded).hexdigest() == hashlib.sha256(local).hexdigest()

    model = clearml_emulator.state.models[result["model_id"]]
    # The registered model is the serving model (a zipped TF Serving base folder), its URI
    # percent-encoded (the artifact's holds the task name's spaces raw): curl takes it.
    assert model["uri"] == encoded_uri(artifacts["serving"]["uri"])
    assert " " not in model["uri"]
    assert model["framework"].lower() == "tensorflow"
    assert model["labels"] == {"class_0": 0, "class_1": 1, "class_2": 2}
    assert result["model_id"] in [m["model"] for m in task["models"]["output"]]


def test_a_failed_offline_run_imports_as_failed_without_a_model(
    clearml_emulator: Emulator, tmp_path: Path
) -> None:
    one_class = tmp_path / "one_class.csv"
    one_class.write_text("a,b,label\n" + "".join(f"{i},{i * 2},x\n" for i in range(12)))
    run_dir = tmp_path / "run"
    job = run_offline(tmp_path, [f"dataset={one_class}"])
    assert job.returncode == 3, job.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"

    imported = import_offline(clearml_emulator, summary["offline_session"], tmp_path)
    assert imported.returncode == 0, imported.stderr[-3000:]
    result = json.loads(imported.stdout)
    assert result["status"] == "failed"
    assert result["model_id"] is None
    task = clearml_emulator.state.tasks[result["task_id"]]
    assert task["status"] == "failed"
    assert "single class" in task["status_message"]
    assert clearml_emulator.state.models == {}
    assert "imported as failed" in imported.stderr
