"""The serving model (models/serving/1) of real tiny runs, fed raw inputs in fresh processes.

Three jobs train once each (module fixture): a structured classifier on a CSV with blank cells,
a categorical column and a column name TensorFlow cannot take as is; a text classifier on a
cleanly separable two-topic set made here (the text accuracy goal); an image classifier on
grayscale PNGs. The tests feed their serving models what users hold (CSV rows, sentences, PNG
files in grayscale and RGB) without AutoKeras, and compare with the pipeline + model answers
the run recorded.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ak_remote.catalog import PROJECT_ROOT
from ak_remote.errors import DataError
from ak_remote.runtime import data as data_module
from tests.helpers import error_lines, job_env, run_captured, run_job, sets, write_image_folder

pytestmark = pytest.mark.slow

# One trial of one epoch on all of each test's own small data set.
QUICK = ["epochs=1", "batch_size=16", "max_trials=1", "histogram_freq=0"]
TOPICS = {
    "sports": "match goal team player coach score league season win referee stadium ball",
    "cooking": "recipe oven flour sugar butter bake dinner sauce garlic onion pan taste",
}


def write_wine_with_blanks(path: Path) -> Path:
    """Wine, target first, a categorical column with blanks, ~8% blank numbers, a 'a/b' name."""
    from sklearn.datasets import load_wine

    wine = load_wine()
    rng = np.random.default_rng(0)
    regions = ["north", "south", "east"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cultivar", "region", "od280/od315", *wine.feature_names[:4]])
        for row, target in zip(wine.data, wine.target, strict=True):
            region = regions[target] if rng.random() < 0.8 else regions[rng.integers(3)]
            cells = [f"{v:.3f}" for v in row[[11, 0, 1, 2, 3]]]
            cells = ["" if rng.random() < 0.08 else c for c in cells]
            writer.writerow([f"cultivar_{target}", "" if rng.random() < 0.1 else region, *cells])
    return path


def write_topics(path: Path, count: int = 200) -> Path:
    """Two topics, four topic words and six filler words per text: cleanly separable."""
    rng = np.random.default_rng(1)
    filler = [
        "the",
        "a",
        "and",
        "of",
        "to",
        "in",
        "it",
        "is",
        "was",
        "very",
        "with",
        "for",
        "on",
        "this",
        "that",
    ]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "topic"])
        for i in range(count):
            label = list(TOPICS)[i % 2]
            words = [*rng.choice(TOPICS[label].split(), 4), *rng.choice(filler, 6)]
            rng.shuffle(words)
            writer.writerow([" ".join(words), label])
    return path


JOBS: dict[str, tuple[str, Callable[[Path], Path], list[str]]] = {
    "structured-classifier": (
        "wine_blanks.csv",
        write_wine_with_blanks,
        ["target=cultivar", "epochs=2"],
    ),
    # The text goal: max_trials <= 2 (here 1), >= 0.9 test accuracy.
    "text-classifier": ("topics.csv", write_topics, ["epochs=8"]),
    "image-classifier": ("images", lambda p: write_image_folder(p, 150), []),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    cache: dict[str, Path] = {}

    def get(job: str) -> Path:
        if job not in cache:
            name, write, sets = JOBS[job]
            base = tmp_path_factory.mktemp(job)
            (base / "data").mkdir()
            dataset = write(base / "data" / name)
            merged = dict(item.split("=", 1) for item in [*QUICK, *sets, f"dataset={dataset}"])
            sets = [f"{k}={v}" for k, v in merged.items()]
            proc = run_job(job, sets, base, base / "home")
            assert proc.returncode == 0, proc.stderr[-4000:]
            cache[job] = base / "run"
        return cache[job]

    return get


def fresh_python(code: str, tmp_path: Path, *args: str) -> Any:
    """Run `code` in a new interpreter; it prints JSON on its last line. AutoKeras must not load."""
    script = tmp_path / "probe.py"
    script.write_text(
        code + "\nimport sys\nassert 'autokeras' not in sys.modules, 'autokeras was imported'\n"
    )
    proc = run_captured(
        [sys.executable, str(script), *args], job_env(tmp_path / "home"), timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def predict_cli(tmp_path: Path, *args: str) -> Any:
    """`ak-remote predict ... --format json` in a fresh process, checking AutoKeras stays out."""
    code = (
        "import json, sys\nfrom ak_remote.cli import cli\n"
        "try:\n    cli.main(sys.argv[1:])\nexcept SystemExit as exc:\n    code = exc.code\n"
        "assert 'autokeras' not in sys.modules\nsys.exit(code)\n"
    )
    argv = [sys.executable, "-c", code, "predict", *args, "--format", "json"]
    proc = run_captured(argv, job_env(tmp_path / "home"), tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def recorded(run_dir: Path) -> tuple[Any, Any, Any]:
    """The raw held-out samples, the pipeline + model class probabilities and the answers the
    run recorded (a binary model's one sigmoid unit is the second class' probability)."""
    with np.load(run_dir / "models" / "check_samples.npz", allow_pickle=False) as samples:
        y_pred = samples["y_pred"].astype("float64")
        if y_pred.shape[1] == 1:
            y_pred = np.concatenate([1.0 - y_pred, y_pred], axis=1)
        return samples["x_raw"], y_pred, samples["answers"].reshape(-1).astype(str)


def check_export_record(summary: dict[str, Any]) -> dict[str, Any]:
    serving = summary["export"]["verification"]["serving"]
    assert serving["passed"] is True
    assert serving["samples"] > 0
    assert all(d <= 1e-4 for d in serving["max_abs_diff"].values())
    assert all(serving["answers_match"].values())
    assert summary["export"]["serving"]["path"] == "serving/1"
    return dict(serving)


def test_structured_serving_takes_csv_rows_with_blanks(
    runs: Callable[[str], Path], tmp_path: Path
) -> None:
    run_dir = runs("structured-classifier")
    summary = json.loads((run_dir / "summary.json").read_text())
    check = check_export_record(summary)
    assert set(check["max_abs_diff"]) == {"serve", "serve_typed"}
    assert (run_dir / "models" / "serving" / "1" / "saved_model.pb").is_file()
    x_raw, y_pred, answers = recorded(run_dir)
    meta = json.loads(
        (run_dir / "models/serving/1/assets.extra/ak_remote_serving.json").read_text()
    )
    keys = [c["key"] for c in meta["columns"]]
    assert keys[:2] == ["region", "od280_od315"]  # CSV order; the name TensorFlow accepts
    # The held-out rows as a CSV user has them: blanks for missing values, the target included.
    rows = tmp_path / "rows.csv"
    with rows.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cultivar", *(c["name"] for c in meta["columns"])])
        for row in x_raw:
            writer.writerow(["?", *("" if cell == "nan" else cell for cell in row)])
    assert any(cell == "" for line in rows.read_text().splitlines() for cell in line.split(","))
    outputs = fresh_python(
        "import csv, json, sys\nimport tensorflow as tf\n"
        "model = tf.saved_model.load(sys.argv[1])\n"
        "rows = list(csv.DictReader(open(sys.argv[2])))\n"
        "keys = json.loads(sys.argv[3])\n"
        "out = model.signatures['serving_default'](**{k: tf.constant([r[n] for r in rows]) "
        "for k, n in keys.items()})\n"
        "print(json.dumps({'p': out['probabilities'].numpy().tolist(), "
        "'label': [v.decode() for v in out['label'].numpy()]}))",
        tmp_path,
        str(run_dir / "models/serving/1"),
        str(rows),
        json.dumps({c["key"]: c["name"] for c in meta["columns"]}),
    )
    assert outputs["label"] == answers.tolist()
    assert np.max(np.abs(np.asarray(outputs["p"]) - y_pred)) <= 1e-4
    # predict: the same CSV (target column and all), from the run folder.
    predicted = predict_cli(tmp_path, str(run_dir), "--input", str(rows))
    assert [r["label"] for r in predicted] == answers.tolist()
    classes = summary["data"]["classes"]
    assert set(predicted[0]) == {"input", "label", *(f"p({c})" for c in classes)}


def test_text_serving_takes_sentences_and_text_jobs_learn(
    runs: Callable[[str], Path], tmp_path: Path
) -> None:
    run_dir = runs("text-classifier")
    summary = json.loads((run_dir / "summary.json").read_text())
    check_export_record(summary)
    # The text goal: a separable set is learned, far above its baseline.
    assert summary["metrics"]["test_label_accuracy"] >= 0.9
    assert summary["below_baseline"] is False
    x_raw, y_pred, answers = recorded(run_dir)
    outputs = fresh_python(
        "import json, sys\nimport tensorflow as tf\n"
        "model = tf.saved_model.load(sys.argv[1])\n"
        "out = model.serve(tf.constant(json.loads(sys.argv[2])))\n"
        "print(json.dumps({'p': out['probabilities'].numpy().tolist(), "
        "'label': [v.decode() for v in out['label'].numpy()]}))",
        tmp_path,
        str(run_dir / "models/serving/1"),
        json.dumps(x_raw.tolist()),
    )
    assert outputs["label"] == answers.tolist()
    assert np.max(np.abs(np.asarray(outputs["p"]) - y_pred)) <= 1e-4
    lines = tmp_path / "texts.txt"
    lines.write_text("coach and team win the match\n\nbake the flour with sugar and butter\n")
    predicted = predict_cli(tmp_path, str(run_dir), "--input", str(lines))
    assert [r["label"] for r in predicted] == ["sports", "cooking"]


def test_image_serving_takes_png_pixels_grayscale_and_rgb(
    runs: Callable[[str], Path], tmp_path: Path
) -> None:
    from PIL import Image

    run_dir = runs("image-classifier")
    summary = json.loads((run_dir / "summary.json").read_text())
    check = check_export_record(summary)
    assert set(check["max_abs_diff"]) == {"serve", "serve_float"}
    meta = json.loads(
        (run_dir / "models/serving/1/assets.extra/ak_remote_serving.json").read_text()
    )
    assert meta["image"]["height"] == meta["image"]["width"] == 8
    x_raw, _, answers = recorded(run_dir)
    for mode in ("L", "RGB"):
        folder = tmp_path / mode
        folder.mkdir()
        for i, pixels in enumerate(x_raw.astype(np.uint8)):
            Image.fromarray(pixels).convert(mode).save(folder / f"{i:03d}.png")
        predicted = predict_cli(tmp_path, str(run_dir), "--input", str(folder))
        assert [r["label"] for r in predicted] == answers.tolist(), mode
    # A larger image is refused with the training size, and accepted with --resize.
    big = tmp_path / "big.png"
    Image.fromarray(x_raw[0].astype(np.uint8)).resize((16, 16)).save(big)
    argv = [sys.executable, "-m", "ak_remote", "predict", str(run_dir), "--input", str(big)]
    proc = run_captured(argv, job_env(tmp_path / "home"), timeout=300)
    assert proc.returncode == 3
    assert "--resize" in proc.stderr
    assert len(predict_cli(tmp_path, str(run_dir), "--input", str(big), "--resize")) == 1


def rest_tensors(body: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """TF Serving's row format: `instances` is a list of per-sample values (one named input)
    or of objects keyed by input name; each input is the batch of its values."""
    instances = body["instances"]
    if isinstance(instances[0], dict):
        return {key: [row[key] for row in instances] for key in inputs}
    assert len(inputs) == 1
    return {next(iter(inputs)): instances}


@pytest.mark.parametrize("job", list(JOBS))
def test_rest_example_matches_the_signature(
    job: str, runs: Callable[[str], Path], tmp_path: Path
) -> None:
    """The REST body the README documents (recorded per run) is what the signature takes."""
    import tensorflow as tf

    run_dir = runs(job)
    version = run_dir / "models" / "serving" / "1"
    meta = json.loads((version / "assets.extra/ak_remote_serving.json").read_text())
    body = meta["rest_example"]
    model = tf.saved_model.load(str(version))
    function = model.signatures[body.get("signature_name", "serving_default")]
    specs = function.structured_input_signature[1]
    feeds = rest_tensors(body, specs)
    assert set(feeds) == set(specs)
    out = function(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in feeds.items()})
    _, _, answers = recorded(run_dir)
    got = [v.decode() for v in out["label"].numpy()]
    assert got == answers[: len(got)].tolist()


def test_a_continuous_classification_target_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "measurements.csv"
    rng = np.random.default_rng(3)
    table.write_text(
        "a,b,value\n" + "".join(f"{x:.3f},{x * 2:.3f},{x * 7.1 + 3:.4f}\n" for x in rng.random(80))
    )
    with pytest.raises(DataError) as caught:
        data_module.load(str(table), "structured", "classifier")
    assert "looks continuous" in caught.value.message
    assert "structured-regressor" in str(caught.value.hint)
    # A regressor takes it; integer classes (digits) are not continuous.
    assert len(data_module.load(str(table), "structured", "regressor")) == 80
    assert not data_module.looks_continuous([str(i % 10) for i in range(200)])
    # Through the job: exit 3, one line, before any training.
    proc = run_job(
        "structured-classifier", [f"dataset={table}"], tmp_path / "work", tmp_path / "home"
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    errors = error_lines(proc.stderr)
    assert len(errors) == 1
    assert "structured-regressor" in errors[0]
    assert not (tmp_path / "work" / "run" / "models").exists()


def test_a_run_below_its_baseline_is_flagged_and_can_be_failed(tmp_path: Path) -> None:
    """Labels independent of the inputs, 85% one class: nothing to learn beyond the majority."""
    rng = np.random.default_rng(5)
    table = tmp_path / "noise.csv"
    rows = [
        f"{a:.3f},{b:.3f},{'common' if rng.random() < 0.85 else 'rare'}\n"
        for a, b in rng.random((80, 2))
    ]
    table.write_text("a,b,label\n" + "".join(rows))
    sets = [*QUICK, f"dataset={table}"]
    flagged = run_job("structured-classifier", sets, tmp_path / "w1", tmp_path / "home")
    assert flagged.returncode == 0, flagged.stderr[-3000:]
    summary = json.loads((tmp_path / "w1" / "run" / "summary.json").read_text())
    assert summary["below_baseline"] is True
    assert summary["baseline"]["metric"] == "test_label_accuracy"
    assert summary["metrics"]["baseline_test_accuracy"] == summary["baseline"]["baseline"]
    assert "WARNING: the model does not beat the baseline" in flagged.stderr
    import zipfile

    with zipfile.ZipFile(summary["offline_session"]) as archive:
        task = json.loads(archive.read("task.json"))
    assert "below-baseline" in task.get("tags", [])
    strict = run_job(
        "structured-classifier",
        [*sets, "require_better_than_baseline=true"],
        tmp_path / "w2",
        tmp_path / "home",
    )
    assert strict.returncode == 5, strict.stderr[-3000:]
    failed = json.loads((tmp_path / "w2" / "run" / "summary.json").read_text())
    assert failed["status"] == "failed"
    assert "baseline" in failed["error"]


def test_predict_refuses_what_it_cannot_serve(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    argv = [sys.executable, "-m", "ak_remote", "predict", str(tmp_path), "--input", "-"]
    proc = run_captured(argv, env, PROJECT_ROOT, timeout=60)
    assert proc.returncode == 2
    assert "no serving model" in proc.stderr


# No real input makes the serving model disagree with the pipeline + model path (the measured
# difference is 0 for every family), so a mismatch cannot be forced without changing one piece
# of code. This test changes exactly one, in the job's own process: `serving.describe`, the
# description of AutoKeras' preprocessing that the serving graph is built from, now reads the
# first numerical column as a category it never saw. That is the bug the check exists for (the
# serving graph's preprocessing drifting from the pipeline's). Training, export, the check on
# raw held-out rows, the exit path and the ClearML side are all real.
DRIFTED_JOB = """\
import sys
from ak_remote.entry import main
from ak_remote.runtime import serving

real_describe = serving.describe


def drifted(*args, **kwargs):
    meta = real_describe(*args, **kwargs)
    column = next(c for c in meta["columns"] if c["type"] == "numerical")
    column["type"], column["values"] = "categorical", ["never-seen"]
    return meta


serving.describe = drifted
sys.exit(main("structured-classifier", sys.argv[1:]))
"""


def test_a_serving_mismatch_fails_the_run_and_registers_no_model(
    clearml_emulator: Any, tmp_path: Path
) -> None:
    script = tmp_path / "drifted_job.py"
    script.write_text(DRIFTED_JOB)
    options = sets(*QUICK, "max_samples=100")
    env = job_env(tmp_path / "home", clearml_emulator.env())
    argv = [sys.executable, str(script), *options, "--run-dir", str(tmp_path / "run")]
    proc = run_captured(argv, env, tmp_path, timeout=600)
    assert proc.returncode == 5, proc.stderr[-4000:]
    errors = error_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr[-4000:]
    assert errors[0].startswith(
        "Error: exported model failed verification (serving model on raw inputs: serve: "
    )
    assert "tolerance 0.0001" in errors[0]
    assert "models.unverified/" in errors[0]  # the hint: where the files are, not to serve them

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"].startswith("exported model failed verification (serving model")
    verification = summary["export"]["verification"]
    assert verification["passed"] is False
    # The Keras formats still match the model; only the serving model on raw rows does not.
    assert all(d <= 1e-4 for d in verification["max_abs_diff"].values())
    serving = verification["serving"]
    assert serving["passed"] is False
    assert serving["samples"] > 0
    assert set(serving["max_abs_diff"]) == {"serve", "serve_typed"}
    assert all(d > 1e-4 for d in serving["max_abs_diff"].values())
    assert summary["export"]["formats"] == {}
    assert summary["model_registration"] is None
    # Nothing unverified where a good model would be.
    assert not (tmp_path / "run" / "models").exists()
    assert (tmp_path / "run" / "models.unverified" / "serving" / "1" / "saved_model.pb").is_file()

    task = clearml_emulator.get_task(summary["task_id"])
    assert task["status"] == "failed"
    assert "serving model on raw inputs" in task.get("status_message", "")
    assert not task.get("models", {}).get("output")
    assert clearml_emulator.state.models == {}
    artifacts = {a["key"] for a in task["execution"].get("artifacts", [])}
    assert "summary.json" in artifacts
    assert not {"serving", "savedmodel", "model.keras"} & artifacts
