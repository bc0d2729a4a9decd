"""Every job family trains for real (tiny data) in ClearML offline mode, and leaves a run we check.

Each job runs once, as a subprocess exactly as an agent would run it (`python jobs/<job>.py`),
in a module-scoped fixture; the tests below read what it left: summary.json, TensorBoard event
files (with TensorBoard's own reader), the exported models and the offline session zip.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ak_remote.catalog import JOBS
from ak_remote.model.decode import decode
from tests.helpers import TINY, run_job, write_image_folder

pytestmark = pytest.mark.slow


def write_digits_npz(path: Path) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(path, x=digits.images[:200], y=digits.target[:200].astype("float32"))
    return path


def write_mixed_wine_csv(path: Path) -> Path:
    """Wine with a categorical `region` column and the target `cultivar` first (not last)."""
    import csv

    from sklearn.datasets import load_wine

    wine = load_wine()
    rng = np.random.default_rng(0)
    regions = ["north", "south", "east"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cultivar", "region", *wine.feature_names[:6]])
        for row, target in zip(wine.data, wine.target, strict=True):
            region = regions[target] if rng.random() < 0.8 else regions[rng.integers(3)]
            writer.writerow([f"cultivar_{target}", region, *(f"{v:.3f}" for v in row[:6])])
    return path


def write_reviews_csv(path: Path) -> Path:
    import csv

    from ak_remote.datasets.reviews import generate_reviews

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "stars"])
        for review in generate_reviews(200, seed=7):
            writer.writerow([review.text, review.rating])
    return path


# Local data formats ride along with the family runs: each job family trains once, and the
# loaders for image folders, .npz and CSV (categorical columns, a named target, text) are
# exercised end to end; bundled sets cover the others (digits, diabetes, reviews).
LOCAL_DATA: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "image-classifier": ("images", write_image_folder),
    "image-regressor": ("digits.npz", write_digits_npz),
    "structured-classifier": ("wine_mixed.csv", write_mixed_wine_csv),
    "text-regressor": ("reviews.csv", write_reviews_csv),
}
# Per job: extra --set values and environment. structured-classifier runs two trials and two
# epochs (so per-trial series and several points exist) with fake credentials in its
# environment; structured-regressor runs under MirroredStrategy over two logical CPUs;
# image-regressor also exports the legacy .h5.
# Made at run time: a literal here would be found in ClearML's record of the uncommitted diff.
SECRET = f"sekrit-{uuid.uuid4().hex}"
VARIANTS: dict[str, tuple[list[str], dict[str, str]]] = {
    "structured-classifier": (
        ["max_trials=2", "epochs=2", "target=cultivar"],
        {"CLEARML_API_SECRET_KEY": SECRET, "CLEARML_API_ACCESS_KEY": "AKIDTESTACCESS"},
    ),
    # Mixed precision under a MirroredStrategy: the float32 heads are built in its scope.
    "structured-regressor": (
        ["distribution=mirrored", "precision=mixed_bfloat16"],
        {"AK_REMOTE_LOGICAL_CPUS": "2"},
    ),
    "image-classifier": (["precision=mixed_float16"], {}),
    "image-regressor": (["export_formats=keras,savedmodel,h5"], {}),
}
MIXED = {"image-classifier": "mixed_float16", "structured-regressor": "mixed_bfloat16"}
SERIES = re.compile(r"^(trial-\d\d|final)/(train|validation)$")


@dataclass
class JobRun:
    job: str
    proc: subprocess.CompletedProcess[str]
    run_dir: Path
    summary: dict[str, Any]
    seconds: float

    @property
    def zip_path(self) -> Path:
        return Path(self.summary["offline_session"])

    def zip_member(self, name: str) -> bytes:
        with zipfile.ZipFile(self.zip_path) as archive:
            return archive.read(name)


def _execute(job: str, tmp_path_factory: pytest.TempPathFactory) -> JobRun:
    sets, env = VARIANTS.get(job, ([], {}))
    base = tmp_path_factory.mktemp(job)
    merged = dict(item.split("=", 1) for item in [*TINY, "batch_size=16", "max_trials=1", *sets])
    if job in LOCAL_DATA:
        name, write = LOCAL_DATA[job]
        (base / "data").mkdir()
        merged["dataset"] = str(write(base / "data" / name))
    started = time.monotonic()
    proc = run_job(job, [f"{k}={v}" for k, v in merged.items()], base / "work", base / "home", env)
    seconds = time.monotonic() - started
    run_dir = base / "work" / "run"
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    return JobRun(job, proc, run_dir, summary, seconds)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], JobRun]:
    """Runs each job at most once per module, however many tests look at it."""
    cache: dict[str, JobRun] = {}

    def get(job: str) -> JobRun:
        if job not in cache:
            cache[job] = _execute(job, tmp_path_factory)
        return cache[job]

    return get


@pytest.fixture(scope="module", params=list(JOBS))
def job_run(request: pytest.FixtureRequest, runs: Callable[[str], JobRun]) -> JobRun:
    return runs(str(request.param))


def test_run_completes_and_names_its_offline_session(job_run: JobRun) -> None:
    lines = [line for line in job_run.proc.stderr.splitlines() if line.strip()]
    assert lines[-1] == f"offline session: {job_run.zip_path}"
    assert job_run.zip_path.is_file()
    assert job_run.zip_path.parent.name == "offline"  # ~/.clearml/cache/offline/
    assert "Error:" not in job_run.proc.stderr
    assert "Traceback" not in job_run.proc.stderr


def test_summary_describes_the_run(job_run: JobRun) -> None:
    s, job = job_run.summary, JOBS[job_run.job]
    assert s["status"] == "completed"
    assert s["error"] is None  # a completed run has no error line
    assert s["job"] == job.name
    assert s["task_id"].startswith("offline-")
    assert s["run_dir"] == str(job_run.run_dir)
    assert s["tensorboard_dir"] == str(job_run.run_dir / "tensorboard")
    assert s["params"]["max_samples"] == "120"
    assert set(s["params"]) == set(job.params.names())
    data = s["data"]
    assert data["n_train"] + data["n_val"] + data["n_test"] == 120
    assert min(data["n_train"], data["n_val"], data["n_test"]) > 0
    assert re.fullmatch(r"[0-9a-f]{64}", data["fingerprint"])
    assert (job_run.run_dir / data["split_file"]).is_file()
    if job.is_classifier:
        assert len(data["classes"]) >= 2
        assert {"test_accuracy", "test_loss", "test_label_accuracy"} <= set(s["metrics"])
        assert (job_run.run_dir / "confusion_matrix.json").is_file()
    else:
        assert data["classes"] is None
        assert {"test_loss", "test_mean_squared_error"} <= set(s["metrics"])
    assert all(np.isfinite(v) for v in s["metrics"].values())
    repro = s["reproducibility"]
    assert repro["seed"] == 42
    assert {"autokeras", "keras", "clearml", "tensorboard"} <= set(repro["packages"])
    assert repro["packages"]["keras"].startswith("3.12.")
    assert s["model_registration"] == "pending-import"


def _events(folder: Path) -> tuple[Counter[str], list[Any]]:
    """Tags (with their plugin) and the graphs written, read with TensorBoard's loader."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    tags: Counter[str] = Counter()
    graphs: list[Any] = []
    for file in sorted(folder.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(file)).Load():
            if event.HasField("graph_def"):
                graphs.append(event.graph_def)
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                tags[f"{plugin}:{value.tag}"] += 1
                if plugin == "graph_keras_model":
                    graphs.append(value.tensor.string_val[0])
    return tags, graphs


def check_graphs(graphs: list[Any], layers: set[str]) -> None:
    """One op graph and one conceptual graph, each parsed as TensorBoard's graph plugin does:
    a node (conceptual) and an op scope (op graph) for each of `layers`, and no input naming a
    missing node (what TensorBoard shows as "Malformed GraphDef")."""
    from tensorboard.compat.proto.graph_pb2 import GraphDef
    from tensorboard.plugins.graph import keras_util

    op_graphs = [g for g in graphs if isinstance(g, bytes) and not g.startswith(b"{")]
    concepts = [g for g in graphs if isinstance(g, bytes) and g.startswith(b"{")]
    assert len(op_graphs) == 1, graphs
    assert len(concepts) == 1, graphs
    op = GraphDef.FromString(op_graphs[0])
    concept = keras_util.keras_model_to_graph_def(json.loads(concepts[0]))
    for graph in (op, concept):
        names = {node.name for node in graph.node}
        missing = [
            (node.name, name)
            for node in graph.node
            for name in node.input
            if name.lstrip("^").split(":")[0] not in names
        ]
        assert not missing, missing
    # The conceptual graph: exactly the layers, at the top level (no `functional` wrapper).
    assert {node.name for node in concept.node} >= layers
    assert all("/" not in node.name for node in concept.node)
    # The op graph: ops grouped under the layers' own names (`dense/MatMul`).
    scopes = {node.name.split("/")[0] for node in op.node if "/" in node.name}
    assert layers <= scopes, (layers, scopes)


def _trainable(run_dir: Path) -> set[str]:
    """`<layer>/<weight>` of every trainable weight of the exported (final) model."""
    import zipfile as zf

    config = json.loads(zf.ZipFile(run_dir / "models" / "model.keras").read("config.json"))
    layers = config["config"]["layers"]
    kinds = {"Dense": ("kernel", "bias"), "Conv2D": ("kernel", "bias")}
    return {
        f"{layer['config']['name']}/{weight}"
        for layer in layers
        for weight in kinds.get(layer["class_name"], ())
    }


def test_tensorboard_has_readable_runs_histograms_and_graphs(job_run: JobRun) -> None:
    logdir = job_run.run_dir / "tensorboard"
    trials = sorted(p.name for p in logdir.iterdir() if p.name.startswith("trial-"))
    expected_trials = 2 if job_run.job == "structured-classifier" else 1
    assert trials == [f"trial-{i:02d}" for i in range(expected_trials)]
    assert {p.name for p in logdir.iterdir()} == {*trials, "final"}
    epochs = 2 if job_run.job == "structured-classifier" else 1
    for trial in trials:
        train, graphs = _events(logdir / trial / "train")
        assert train["scalars:epoch_loss"] >= 1
        histograms = {tag.removeprefix("histograms:") for tag in train if "histograms:" in tag}
        assert histograms, train
        assert all(re.fullmatch(r"[\w.-]+(/[\w.-]+)+", tag) for tag in histograms), histograms
        assert not any(tag.endswith(("/mean", "/variance", "/count")) for tag in histograms)
        assert len(graphs) == 2, f"no graphs in {trial}"
        validation, _ = _events(logdir / trial / "validation")
        assert validation["scalars:epoch_loss"] >= 1
        hparams, _ = _events(logdir / trial)
        assert hparams["hparams:_hparams_/session_start_info"] == 1
    checkpoints = sorted(p.name for p in (job_run.run_dir / "checkpoints").iterdir())
    expected = [*(f"trial_{t.removeprefix('trial-')}.weights.h5" for t in trials)]
    assert checkpoints == sorted([*expected, "final.weights.h5"])
    final, final_graphs = _events(logdir / "final" / "train")  # AutoKeras' final fit
    assert final["scalars:epoch_loss"] == epochs
    # Every trainable weight of the final model, one histogram each, named by layer.
    weights = _trainable(job_run.run_dir)
    histograms = {tag.removeprefix("histograms:") for tag in final if "histograms:" in tag}
    assert weights, histograms
    assert weights <= histograms, (weights, histograms)
    if job_run.job == "image-classifier":
        assert {"conv2d/kernel", "conv2d_1/kernel", "dense/kernel"} <= histograms
    assert all(final[f"histograms:{tag}"] == epochs for tag in histograms)
    check_graphs(final_graphs, {w.split("/")[0] for w in weights})
    session, _ = _events(logdir / "final")  # the final fit in the HParams tab
    assert session["hparams:_hparams_/session_start_info"] == 1


def test_export_is_the_retrained_model_and_verified(job_run: JobRun) -> None:
    export = job_run.summary["export"]
    models = job_run.run_dir / "models"
    formats = {"keras": "models/model.keras", "savedmodel": "models/savedmodel"}
    if job_run.job == "image-regressor":
        formats["h5"] = "models/model.h5"
        assert (models / "model.h5").is_file()
    else:
        assert not (models / "model.h5").exists()  # legacy format only on request
    assert export["formats"] == formats
    assert (models / "model.keras").is_file()
    assert (models / "savedmodel" / "saved_model.pb").is_file()
    for name, digest in export["checksums"].items():
        import hashlib

        assert hashlib.sha256((job_run.run_dir / name).read_bytes()).hexdigest() == digest
    check = export["verification"]
    assert check["passed"] is True
    assert check["tolerance"] == 1e-4
    assert set(check["max_abs_diff"]) == set(formats)
    assert all(diff <= 1e-4 for diff in check["max_abs_diff"].values())
    assert all(check["answers_match_automodel_pipeline"].values())
    # The export is the final fit AutoKeras saved as best_model.keras, not the best trial's.
    assert check["diff_to_autokeras_best_model_keras"] == 0.0
    assert check["diff_to_best_trial_model"] > 0.0
    assert check["final_fit_epochs"] == (2 if job_run.job == "structured-classifier" else 1)


def test_inference_metadata_reproduces_the_answers_without_autokeras(job_run: JobRun) -> None:
    models = job_run.run_dir / "models"
    spec = json.loads((models / "inference.json").read_text())
    job = JOBS[job_run.job]
    assert spec["job"] == job.name
    assert spec["autokeras_class"] == job.autokeras_class
    assert spec["input"]["kind"] == job.family
    assert spec["versions"]["autokeras"] == "3.0.0"
    with np.load(models / "check_samples.npz", allow_pickle=False) as samples:
        answers = decode(samples["y_pred"], spec["output"])
        assert np.array_equal(answers.reshape(-1), samples["answers"].reshape(-1))
        assert len(samples["x_raw"]) == len(samples["x"]) > 0
    if job.is_classifier:
        assert spec["output"]["decode"] in ("argmax", "round")
        assert spec["output"]["class_names"] == job_run.summary["data"]["classes"]
    else:
        assert spec["output"]["decode"] == "identity"
    if job_run.job == "structured-classifier":
        columns = {c["name"]: c["type"] for c in spec["input"]["columns"]}
        assert columns["region"] == "categorical"
        assert columns["alcohol"] == "numerical"
        assert "cultivar" not in columns
        assert spec["output"]["target"] == "cultivar"
        assert spec["input"]["raw"]["dtype"] == "str"
    if job_run.job == "image-classifier":
        assert spec["output"]["class_names"] == [str(d) for d in range(10)]
        assert spec["input"]["raw"]["shape"] == [None, 8, 8]


def test_offline_session_holds_parameters_series_and_artifacts(job_run: JobRun) -> None:
    task = json.loads(job_run.zip_member("task.json"))
    general = task["hyperparams"]["General"]
    assert {k: v["value"] for k, v in general.items()} == job_run.summary["params"]
    assert set(task["hyperparams"]) == {"General"}  # no argparse or TF-flag sections
    series: dict[str, set[str]] = {}
    for line in job_run.zip_member("metrics.jsonl").decode().splitlines():
        for event in json.loads(line):
            if event["type"] == "training_stats_scalar" and event["metric"].startswith("epoch_"):
                series.setdefault(event["metric"], set()).add(event["variant"])
    assert "epoch_loss" in series
    assert all(SERIES.match(name) for names in series.values() for name in names), series
    trials = 2 if job_run.job == "structured-classifier" else 1
    expected = {
        f"trial-{i:02d}/{split}" for i in range(trials) for split in ("train", "validation")
    }
    assert series["epoch_loss"] == expected | {"final/train"}
    with zipfile.ZipFile(job_run.zip_path) as archive:
        names = archive.namelist()
    artifacts = {Path(n).parts[-2] for n in names if "/artifacts/" in n}
    assert {
        "model.keras",
        "savedmodel",
        "inference.json",
        "pipeline.json",
        "check_samples.npz",
        "tensorboard",
        "data_split.json",
        "summary.json",
    } <= artifacts
    if JOBS[job_run.job].is_classifier:
        metrics = job_run.zip_member("metrics.jsonl").decode()
        assert '"metric": "confusion matrix"' in metrics


def test_secrets_never_land_in_the_run(runs: Callable[[str], JobRun]) -> None:
    job_run = runs("structured-classifier")  # the run with credentials in its environment
    with zipfile.ZipFile(job_run.zip_path) as archive:
        for name in archive.namelist():
            assert SECRET.encode() not in archive.read(name), name
    for path in job_run.run_dir.rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert SECRET.encode() not in path.read_bytes(), path


def test_mirrored_strategy_over_two_logical_cpus(runs: Callable[[str], JobRun]) -> None:
    job_run = runs("structured-regressor")
    distribution = job_run.summary["distribution"]
    assert distribution["strategy"] == "MirroredStrategy"
    assert len(distribution["devices"]) == 2
    assert all("CPU" in device for device in distribution["devices"])
    assert job_run.summary["export"]["verification"]["passed"] is True


@pytest.mark.parametrize("job", sorted(MIXED))
def test_mixed_precision_trains_low_and_exports_float32_outputs(
    runs: Callable[[str], JobRun], job: str
) -> None:
    """The hidden layers computed in the policy's low precision, the heads in float32, and every
    exported form (keras, SavedModel, serving model) answers in float32."""
    import autokeras as ak
    import keras

    job_run = runs(job)
    policy = MIXED[job]
    assert job_run.summary["distribution"]["precision"] == policy
    assert f"precision={policy} on a CPU" in job_run.proc.stderr  # no GPU here: said so
    verification = job_run.summary["export"]["verification"]
    assert verification["passed"] is True
    assert set(verification["output_dtypes"].values()) == {"float32"}
    serving_dtypes = verification["serving"]["output_dtypes"]
    assert serving_dtypes
    assert {d for outputs in serving_dtypes.values() for d in outputs.values()} == {"float32"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = keras.models.load_model(
            job_run.run_dir / "models" / "model.keras", custom_objects=ak.CUSTOM_OBJECTS
        )
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
    if policy == "mixed_float16":  # reloaded ready to train on, loss scaling and its state
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    low = policy.removeprefix("mixed_")
    computing = Counter(layer.dtype_policy.compute_dtype for layer in model.layers)
    assert computing[low] >= 2, computing  # e.g. the Dense/Conv layers of the searched blocks
    heads = [tensor._keras_history.operation for tensor in model.outputs]
    assert [head.dtype_policy.compute_dtype for head in heads] == ["float32"] * len(heads)
    assert all(layer.dtype_policy.variable_dtype == "float32" for layer in model.layers)
    assert keras.mixed_precision.global_policy().name == "float32"


def test_float32_is_the_default_precision(runs: Callable[[str], JobRun]) -> None:
    job_run = runs("text-classifier")
    assert job_run.summary["distribution"]["precision"] == "float32"
    assert "precision=" not in job_run.proc.stderr


def test_text_export_reloads_with_its_pipeline(runs: Callable[[str], JobRun]) -> None:
    """What `pull --check` does: pipeline.json + SavedModel alone give the recorded answers."""
    job_run = runs("text-classifier")  # its input needs AutoKeras' pipeline (tokenizer)
    import tensorflow as tf
    from autokeras.pipeline import load_pipeline

    from ak_remote.model.reload import serve

    models = job_run.run_dir / "models"
    spec = json.loads((models / "inference.json").read_text())
    pipeline = load_pipeline(str(models / spec["files"]["pipeline"]))
    with np.load(models / "check_samples.npz", allow_pickle=False) as samples:
        x = np.asarray(pipeline.transform_x(samples["x_raw"])).astype(
            spec["input"]["model"]["dtype"]
        )
        assert np.array_equal(x, samples["x"])
        outputs = serve(tf.saved_model.load(str(models / "savedmodel")), x)
        assert np.max(np.abs(np.asarray(outputs) - samples["y_pred"])) <= 1e-4
        assert np.array_equal(decode(outputs, spec["output"]), samples["answers"])


NOISE = (
    "WARNING:tensorflow",
    "UserWarning",
    "oneDNN custom operations",
    "absl::InitializeLog",
    "Skipping variable loading",
    "clearml.Repository Detection",
)


def test_console_shows_progress_and_keeps_library_warnings_in_the_log(job_run: JobRun) -> None:
    shown = [noise for noise in NOISE if noise in job_run.proc.stderr]
    assert shown == [], job_run.proc.stderr[-3000:]
    assert "[ak-remote] export verified" in job_run.proc.stderr
    log = (job_run.run_dir / "logs" / "libraries.log").read_text()
    assert "oneDNN custom operations" in log  # what TensorFlow's native code printed on load
