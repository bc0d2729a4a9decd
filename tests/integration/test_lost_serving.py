"""Integration: serving and `predict` on real runs of the three default jobs (issue 20, items
12, 16, 18).

Each default job (wine, digits, reviews) trains once, tiny (module fixture). The README's TF
Serving request bodies must be the ones these runs record and go through their signatures as
TF Serving's row format feeds them; a wrong image size shows the signature's own message.
`ak-remote predict` runs in fresh processes: a cell it cannot use is named by row and column
with TensorFlow's cause, non-UTF-8 standard input is called that, a failed or unfinished run
is called that, a changed model file is caught by the sha256 its run recorded, and a 16-bit
PNG answers as its 8-bit original does.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ak_remote.catalog import JOBS, PROJECT_ROOT

pytestmark = pytest.mark.slow

ONE_TRIAL = ["max_trials=1", "epochs=1", "histogram_freq=0"]  # on the job's own data
FAMILY_JOB = {
    "structured": "structured-classifier",
    "text": "text-classifier",
    "image": "image-classifier",
}


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "AK_REMOTE_"))}
    env.update({"HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"})
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The run folder of a default job (bundled data), trained once per module."""
    cache: dict[str, Path] = {}

    def get(job: str) -> Path:
        if job not in cache:
            base = tmp_path_factory.mktemp(job)
            args = [sys.executable, str(PROJECT_ROOT / JOBS[job].script)]
            for item in ONE_TRIAL:
                args += ["--set", item]
            proc = subprocess.run(
                [*args, "--run-dir", str(base / "run"), "--offline"],
                cwd=base,
                env=_env(base / "home"),
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            assert proc.returncode == 0, proc.stderr[-4000:]
            cache[job] = base / "run"
        return cache[job]

    return get


def _meta(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "models/serving/1/assets.extra/ak_remote_serving.json"
    return dict(json.loads(path.read_text()))


def _answers(run_dir: Path) -> list[str]:
    with np.load(run_dir / "models" / "check_samples.npz", allow_pickle=False) as samples:
        return [str(a) for a in samples["answers"].reshape(-1)]


def readme_bodies() -> dict[str, dict[str, Any]]:
    """The TF Serving bodies the README shows, by family, as written."""
    text = (PROJECT_ROOT / "README.md").read_text()
    block = text.split("in TF Serving's row format", 1)[1].split("```json", 1)[1].split("```")[0]
    bodies = [json.loads(line) for line in block.strip().splitlines()]
    assert len(bodies) == 3
    return dict(zip(["structured", "text", "image"], bodies, strict=True))


def serve_rows(run_dir: Path, body: dict[str, Any]) -> dict[str, Any]:
    """The body through the run's serving model as TF Serving's row format feeds it:
    `instances` holds one value per sample (one input) or one object per sample (by input)."""
    import tensorflow as tf

    model = tf.saved_model.load(str(run_dir / "models" / "serving" / "1"))
    function = model.signatures[body.get("signature_name", "serving_default")]
    specs = function.structured_input_signature[1]
    instances = body["instances"]
    if isinstance(instances[0], dict):
        assert all(set(row) == set(specs) for row in instances), "not the model's inputs"
        feeds = {key: [row[key] for row in instances] for key in specs}
    else:
        assert len(specs) == 1
        feeds = {next(iter(specs)): instances}
    out = function(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in feeds.items()})
    return {k: v.numpy() for k, v in out.items()}


@pytest.mark.parametrize("family", list(FAMILY_JOB))
def test_readme_bodies_are_what_the_default_jobs_record_and_serve(
    family: str, runs: Callable[[str], Path]
) -> None:
    run_dir = runs(FAMILY_JOB[family])
    body = readme_bodies()[family]
    assert body == _meta(run_dir)["rest_example"]
    labels = [v.decode() for v in serve_rows(run_dir, body)["label"]]
    assert labels == _answers(run_dir)[: len(labels)]


def test_a_wrong_image_size_shows_the_signatures_message(runs: Callable[[str], Path]) -> None:
    import tensorflow as tf

    run_dir = runs("image-classifier")
    image = _meta(run_dir)["image"]
    assert (image["height"], image["width"]) == (8, 8)
    for shape in ([1, 4, 4], [1, 4, 4, 3]):
        body = {"instances": np.zeros(shape[1:], dtype="uint8")[None].tolist()}
        with pytest.raises(tf.errors.InvalidArgumentError) as caught:
            serve_rows(run_dir, body)
        assert "images must be 8x8 pixels, the training size" in caught.value.message
        assert "not compatible with expected shape" not in caught.value.message


def predict(
    tmp_path: Path, target: Path, source: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "ak_remote", "predict", str(target), "--input", source],
        input=stdin,
        cwd=tmp_path,
        env=_env(tmp_path / "home"),
        capture_output=True,
        timeout=300,
        check=False,
    )


def _error_lines(proc: subprocess.CompletedProcess[bytes]) -> list[str]:
    return [line for line in proc.stderr.decode().splitlines() if line.startswith("Error:")]


def _wine_csv(run_dir: Path, path: Path, changes: dict[tuple[int, str], str]) -> Path:
    """The run's REST example rows as a CSV (column names as in the data), some cells changed."""
    meta = _meta(run_dir)
    rows = meta["rest_example"]["instances"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([c["name"] for c in meta["columns"]])
        for number, row in enumerate(rows, start=1):
            writer.writerow(
                [changes.get((number, c["name"]), row[c["key"]]) for c in meta["columns"]]
            )
    return path


def test_predict_names_the_cell_it_cannot_use(runs: Callable[[str], Path], tmp_path: Path) -> None:
    run_dir = runs("structured-classifier")
    good = predict(tmp_path, run_dir, str(_wine_csv(run_dir, tmp_path / "good.csv", {})))
    assert good.returncode == 0, good.stderr.decode()[-2000:]
    cases = {
        "abc": ((2, "ash"), "abc", "row 2, column 'ash': 'abc' is not a number"),
        "inf": ((1, "alcohol"), "inf", "row 1, column 'alcohol': 'inf' is not a finite number"),
        "huge": (
            (2, "proline"),
            "1e999",
            "row 2, column 'proline': '1e999' is not a finite number",
        ),
    }
    for name, (cell, value, said) in cases.items():
        table = _wine_csv(run_dir, tmp_path / f"{name}.csv", {cell: value})
        proc = predict(tmp_path, run_dir, str(table))
        assert proc.returncode == 3, proc.stderr.decode()[-2000:]
        assert _error_lines(proc) == [
            f"Error: {table} {said} (write a number, or leave the cell empty for a missing value)"
        ]
        assert proc.stdout == b""


def test_the_serving_model_refuses_an_infinite_number_naming_the_column(
    runs: Callable[[str], Path],
) -> None:
    """What a REST client sending `inf` reads (TF Serving returns the op's message)."""
    import tensorflow as tf

    run_dir = runs("structured-classifier")
    body = _meta(run_dir)["rest_example"]
    body["instances"][0]["alcohol"] = "inf"
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        serve_rows(run_dir, body)
    message = caught.value.message
    assert "column alcohol (input alcohol): an infinite value is not a number" in message


def test_predict_says_standard_input_is_not_utf8(
    runs: Callable[[str], Path], tmp_path: Path
) -> None:
    proc = predict(tmp_path, runs("text-classifier"), "-", stdin="café great\n".encode("latin-1"))
    assert proc.returncode == 3
    assert _error_lines(proc) == [
        "Error: standard input is not UTF-8 text (byte 0xe9 at offset 3) "
        "(convert it first, e.g. iconv -f latin1 -t utf-8, or give a UTF-8 file)"
    ]


def _copy_run(run_dir: Path, target: Path, **summary_changes: Any) -> Path:
    shutil.copytree(run_dir, target)
    path = target / "summary.json"
    summary = json.loads(path.read_text())
    summary.update(summary_changes)
    path.write_text(json.dumps(summary))
    return target


def test_predict_calls_a_failed_or_unfinished_run_what_it_is(
    runs: Callable[[str], Path], tmp_path: Path
) -> None:
    run_dir = runs("structured-classifier")
    table = str(_wine_csv(run_dir, tmp_path / "rows.csv", {}))
    failed = _copy_run(run_dir, tmp_path / "failed", status="failed", error="stopped by SIGTERM")
    shutil.rmtree(failed / "models")  # a failed run has no models/ (models.unverified at most)
    proc = predict(tmp_path, failed, table)
    assert proc.returncode == 5
    (line,) = _error_lines(proc)
    assert "did not complete: it failed (stopped by SIGTERM)" in line
    assert "another version" not in line
    running = _copy_run(run_dir, tmp_path / "running", status="running")
    proc = predict(tmp_path, running, table)
    assert proc.returncode == 2
    (line,) = _error_lines(proc)
    assert "has not finished (summary.json says running" in line
    assert f"ak-remote run structured-classifier --resume {running}" in line


def test_predict_checks_the_recorded_sha256s(runs: Callable[[str], Path], tmp_path: Path) -> None:
    run_dir = runs("structured-classifier")
    table = str(_wine_csv(run_dir, tmp_path / "rows.csv", {}))
    tampered = _copy_run(run_dir, tmp_path / "tampered")
    variables = next((tampered / "models/serving/1/variables").glob("variables.data-*"))
    data = bytearray(variables.read_bytes())
    data[len(data) // 2] ^= 0xFF
    variables.write_bytes(bytes(data))
    proc = predict(tmp_path, tampered, table)
    assert proc.returncode == 5, proc.stderr.decode()[-2000:]
    (line,) = _error_lines(proc)
    assert f"{variables} does not match the sha256 its run recorded" in line
    assert "bug" not in proc.stderr.decode().lower()
    # Given the version folder itself, the run's summary.json is still found and used.
    proc = predict(tmp_path, tampered / "models/serving/1", table)
    assert proc.returncode == 5
    # A serving folder copied away from its run cannot be checked: it says so, and answers.
    bare = tmp_path / "bare"
    shutil.copytree(run_dir / "models/serving", bare)
    proc = predict(tmp_path, bare, table)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert "is not checked: no summary.json records its files' sha256s" in proc.stderr.decode()


def test_predict_scales_a_16_bit_png_as_training_does(
    runs: Callable[[str], Path], tmp_path: Path
) -> None:
    """A 16-bit copy of an 8-bit image (value * 257) answers exactly as the original."""
    from PIL import Image

    run_dir = runs("image-classifier")
    with np.load(run_dir / "models" / "check_samples.npz", allow_pickle=False) as samples:
        pixels = samples["x_raw"][:3].astype("uint8")
    for bits in (8, 16):
        folder = tmp_path / f"png{bits}"
        folder.mkdir()
        for i, image in enumerate(pixels):
            array = image if bits == 8 else image.astype("uint16") * 257
            Image.fromarray(array).save(folder / f"{i}.png")
        assert Image.open(folder / "0.png").mode == ("L" if bits == 8 else "I;16")
    answers = {}
    for bits in (8, 16):
        proc = subprocess.run(
            [
                *(sys.executable, "-m", "ak_remote", "predict", str(run_dir)),
                *("--input", str(tmp_path / f"png{bits}"), "--format", "json"),
            ],
            cwd=tmp_path,
            env=_env(tmp_path / "home"),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        answers[bits] = [
            {k: v for k, v in row.items() if k != "input"} for row in json.loads(proc.stdout)
        ]
    assert answers[16] == answers[8]
    assert [row["label"] for row in answers[8]] == _answers(run_dir)[:3]


def test_readme_structured_body_names_every_column_of_the_wine_model(
    runs: Callable[[str], Path],
) -> None:
    columns = [c["key"] for c in _meta(runs("structured-classifier"))["columns"]]
    body = readme_bodies()["structured"]
    assert [list(row) for row in body["instances"]] == [columns] * len(body["instances"])
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", v) for row in body["instances"] for v in row.values())
