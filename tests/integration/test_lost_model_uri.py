"""Integration: the registered model's URI is a URL curl takes as it is (issue 20, item 19).

The task's name (spaces, `=`) lands in the fileserver path; the SDK records it raw. Real SDK,
the emulator's fileserver, real curl.
"""

from __future__ import annotations

import io
import subprocess
import zipfile
from pathlib import Path
from typing import Any

from ak_remote.contract import encoded_uri
from tests.emulator.fixtures import run_python, script_result


def test_encoded_uri_quotes_the_path_once() -> None:
    raw = "http://files:8081/p q/job max_trials=1.abc/models/model_package.zip"
    assert encoded_uri(raw) == (
        "http://files:8081/p%20q/job%20max_trials%3D1.abc/models/model_package.zip"
    )
    assert encoded_uri(encoded_uri(raw)) == encoded_uri(raw)
    assert encoded_uri("s3://bucket/a b") == "s3://bucket/a b"  # not an HTTP URL: left alone


def _curl(url: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--fail", "-o", str(out), url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_registered_model_uri_is_fetched_by_curl(clearml_emulator: Any, tmp_path: Path) -> None:
    package = tmp_path / "package"
    (package / "1").mkdir(parents=True)
    (package / "1" / "saved_model.pb").write_bytes(b"graph bytes")
    proc = run_python(
        clearml_emulator,
        f"""
        import json
        from pathlib import Path
        from ak_remote.runtime.tracking import Tracker

        tracker = Tracker("lost tests", "structured-classifier max_trials=1 epochs=2", False)
        model_id = tracker.register_model(
            Path({str(package)!r}), {{"a": 0, "b": 1}}, "structured-classifier model", {{}}
        )
        print("RESULT " + json.dumps(model_id))
        tracker.complete()
        """,
        tmp_path / "work",
    )
    model = clearml_emulator.state.models[script_result(proc)]
    uri = model["uri"]
    assert " " not in uri
    assert "=" not in uri
    assert "max_trials%3D1" in uri
    out = tmp_path / "fetched.zip"
    fetched = _curl(uri, out)
    assert fetched.returncode == 0, fetched.stderr
    with zipfile.ZipFile(io.BytesIO(out.read_bytes())) as archive:
        assert archive.read("1/saved_model.pb") == b"graph bytes"


def test_imported_run_model_uri_is_encoded(clearml_emulator: Any, tmp_path: Path) -> None:
    """import-offline registers through the client: the same rule."""
    from ak_remote.clearml_api import client_from_config

    clearml_emulator.state.files["/p q/run a=1.x/artifacts/serving/serving.zip"] = b"zip bytes"
    task_id = clearml_emulator.create_task("run a=1", project="p q")
    client = client_from_config()
    raw = f"{clearml_emulator.files_url}/p q/run a=1.x/artifacts/serving/serving.zip"
    model_id = client.register_output_model(
        client.get_task(task_id), {"name": "run a=1 model", "uri": raw}
    )
    uri = clearml_emulator.state.models[model_id]["uri"]
    assert uri == f"{clearml_emulator.files_url}/p%20q/run%20a%3D1.x/artifacts/serving/serving.zip"
    out = tmp_path / "fetched"
    fetched = _curl(uri, out)
    assert fetched.returncode == 0, fetched.stderr
    assert out.read_bytes() == b"zip bytes"
