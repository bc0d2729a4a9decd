"""Export the finally trained model, write what inference needs, and verify the reloads.

Which model: AutoKeras 3.0.0's `export_model()` (and even `AutoModel.predict`) use the best
*trial's* search weights (`tuner.get_best_models()`), while the model AutoKeras retrains at the
end on train+validation is only returned as `history.model` of `fit` and saved as
`<directory>/<project>/best_model.keras`. The job exports that retrained model. Verification
proves it: the `.keras` file AutoKeras wrote predicts the same as our export, and the summary
records how far the best trial's model is from it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ak_remote.catalog import Job
from ak_remote.contract import sha256_file
from ak_remote.model import serving as served
from ak_remote.model.decode import ARGMAX, IDENTITY, THRESHOLD, answers_match, decode, max_abs_diff
from ak_remote.model.reload import serve
from ak_remote.runtime import serving
from ak_remote.runtime.data import Dataset
from ak_remote.runtime.precision import FLOAT32

CHECK_SAMPLES = 32  # held-out samples stored for `pull --check` and verified here
FORMAT_FILES = {"keras": "model.keras", "savedmodel": "savedmodel", "h5": "model.h5"}


@dataclass
class ExportResult:
    """Files written (relative to models/), checksums and the verification record."""

    formats: dict[str, str]
    checksums: dict[str, str]
    verification: dict[str, Any]
    inference: dict[str, Any]
    class_names: list[str] = field(default_factory=list)
    serving: dict[str, Any] = field(default_factory=dict)  # the serving model's metadata

    @property
    def passed(self) -> bool:
        return bool(self.verification.get("passed"))


def model_input_dtype(model: Any) -> str:
    return str(model.inputs[0].dtype)


def output_spec(pipeline: Any, job: Job) -> dict[str, Any]:
    """How outputs decode into answers, read from AutoKeras' fitted target pipeline."""
    from autokeras.preprocessors import encoders

    for preprocessor in pipeline.outputs[0]:
        if isinstance(preprocessor, encoders.OneHotEncoder):
            return {"decode": ARGMAX, "class_names": list(preprocessor.labels)}
        if isinstance(preprocessor, encoders.LabelEncoder):
            return {"decode": THRESHOLD, "class_names": list(preprocessor.labels)}
    if job.is_classifier:
        raise RuntimeError("the AutoKeras pipeline of a classifier has no label encoder")
    return {"decode": IDENTITY, "class_names": []}


def export_and_verify(
    job: Job,
    data: Dataset,
    x_test: Any,
    result: Any,
    models_dir: Path,
    formats: tuple[str, ...],
    tolerance: float,
) -> ExportResult:
    """Save `result.final_model` in `formats`, write inference.json and check_samples.npz, reload
    each format and compare. Never raises for a failed check: the caller reads `passed`."""
    import autokeras as ak
    import keras
    import tensorflow as tf

    model = result.final_model
    automodel = result.automodel
    pipeline = automodel.tuner.get_best_pipeline()
    models_dir.mkdir(parents=True, exist_ok=True)

    samples_raw = x_test[:CHECK_SAMPLES]
    dtype = model_input_dtype(model)
    samples = np.asarray(pipeline.transform_x(samples_raw)).astype(dtype)
    expected = np.asarray(model.predict(samples, verbose=0))
    out_spec = output_spec(pipeline, job)
    # What AutoModel.predict does (pipeline, model, postprocess), with the retrained model.
    expected_answers = np.asarray(pipeline.postprocess(expected)).reshape(len(expected), -1)
    if out_spec["decode"] != IDENTITY:
        expected_answers = expected_answers[:, 0].astype(str)

    written: dict[str, str] = {}
    for name in formats:
        target = models_dir / FORMAT_FILES[name]
        if name == "savedmodel":
            shutil.rmtree(target, ignore_errors=True)
            model.export(str(target), format="tf_saved_model", verbose=False)
        else:
            model.save(str(target))
        written[name] = FORMAT_FILES[name]
    pipeline_file = models_dir / "pipeline.json"
    pipeline.save(str(pipeline_file))

    # The model users serve: raw inputs in, answers out (runtime/serving.py).
    serving_meta = serving.export(job, data, model, pipeline, out_spec, models_dir, samples_raw)
    inference = _inference_spec(job, data, model, pipeline_file.name, written, out_spec, dtype)
    inference["serving"] = {
        "path": f"{served.SERVING_DIR}/{served.VERSION}",
        "metadata": f"{served.SERVING_DIR}/{served.VERSION}/{served.METADATA_FILE}",
        "signatures": serving_meta["signatures"],
    }
    (models_dir / "inference.json").write_text(json.dumps(inference, indent=2) + "\n")
    np.savez(
        models_dir / "check_samples.npz",
        x_raw=np.asarray(samples_raw),
        x=samples,
        y_pred=expected,
        answers=np.asarray(expected_answers),
    )

    diffs: dict[str, float] = {}
    answers_ok: dict[str, bool] = {}
    errors: dict[str, str] = {}
    # Whatever precision it trained in (the `precision` parameter), a model serves float32.
    dtypes: dict[str, str] = {}
    for name, relative in written.items():
        path = models_dir / relative
        try:
            if name == "savedmodel":
                outputs = np.asarray(serve(tf.saved_model.load(str(path)), samples))
            else:
                reloaded = keras.models.load_model(str(path), custom_objects=ak.CUSTOM_OBJECTS)
                outputs = np.asarray(reloaded.predict(samples, verbose=0))
        except Exception as exc:  # noqa: BLE001 - any reload failure is a verification failure, said plainly
            errors[name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            continue
        dtypes[name] = str(outputs.dtype)
        diffs[name] = max_abs_diff(expected, outputs)
        answers_ok[name] = answers_match(decode(outputs, out_spec), expected_answers, tolerance)

    serving_check = served.verify(
        models_dir / served.SERVING_DIR / served.VERSION,
        serving_meta,
        samples_raw,
        expected,
        expected_answers,
        tolerance,
    )
    passed = (
        serving_check["passed"]
        and not errors
        and all(diff <= tolerance for diff in diffs.values())
        and all(answers_ok.values())
        and len(diffs) == len(written)
        and all(dtype == FLOAT32 for dtype in dtypes.values())
    )
    verification: dict[str, Any] = {
        "max_abs_diff": diffs,
        "tolerance": tolerance,
        "answers_match_automodel_pipeline": answers_ok,
        "output_dtypes": dtypes,
        "samples": len(samples),
        "passed": passed,
        "exported_model": "final fit (retrained on train+validation)",
        "final_fit_epochs": result.final_epochs,
        "serving": serving_check,
    }
    if errors:
        verification["errors"] = errors
    verification.update(_provenance(automodel, samples, samples_raw, expected, out_spec))
    checksums = _checksums(models_dir)
    return ExportResult(
        written, checksums, verification, inference, out_spec["class_names"], serving_meta
    )


def _provenance(
    automodel: Any, samples: Any, samples_raw: Any, expected: Any, out_spec: dict[str, Any]
) -> dict[str, Any]:
    """Evidence that the export is AutoKeras' retrained model, not the best trial's."""
    import autokeras as ak
    import keras

    record: dict[str, Any] = {}
    best_model_path = Path(automodel.tuner.best_model_path)
    if best_model_path.is_file():
        saved = keras.models.load_model(str(best_model_path), custom_objects=ak.CUSTOM_OBJECTS)
        record["diff_to_autokeras_best_model_keras"] = max_abs_diff(
            expected, saved.predict(samples, verbose=0)
        )
    best = automodel.tuner.oracle.get_best_trials(1)
    if best and not Path(automodel.tuner._get_checkpoint_fname(best[0].trial_id)).is_file():
        # A resumed search restores trials without their weights (runtime/search_state.py), so a
        # best trial trained before the restart has no model to compare with.
        record["diff_to_best_trial_model"] = None
        record["best_trial_model"] = "not kept: trained before the search was resumed"
        return record
    trial_model = automodel.export_model()
    record["diff_to_best_trial_model"] = max_abs_diff(
        expected, trial_model.predict(samples, verbose=0)
    )
    if out_spec["decode"] != IDENTITY:
        # AutoModel.predict in autokeras 3.0.0 predicts with the best trial's weights.
        predicted = np.asarray(automodel.predict(samples_raw, verbose=0)).reshape(-1).astype(str)
        ours = decode(expected, out_spec)
        record["agreement_with_automodel_predict"] = float(np.mean(predicted == ours))
    return record


def _checksums(models_dir: Path) -> dict[str, str]:
    sums: dict[str, str] = {}
    for path in sorted(models_dir.rglob("*")):
        if path.is_file():
            # Keys relative to the run folder, like every other path in summary.json.
            sums[path.relative_to(models_dir.parent).as_posix()] = sha256_file(path)
    return sums


def _inference_spec(
    job: Job,
    data: Dataset,
    model: Any,
    pipeline_file: str,
    written: dict[str, str],
    out_spec: dict[str, Any],
    dtype: str,
) -> dict[str, Any]:
    import autokeras as ak
    import keras
    import tensorflow as tf

    raw_shape = [None, *[int(d) for d in data.x.shape[1:]]]
    model_shape = [None if d is None else int(d) for d in model.inputs[0].shape]
    input_spec: dict[str, Any] = {
        "kind": job.family,
        "raw": {"shape": raw_shape, "dtype": "str" if data.x.dtype.kind == "U" else "float32"},
        "model": {"shape": model_shape, "dtype": dtype},
        "preprocessing": (
            "none: the model takes the raw input"
            if job.family == "image"
            else f"{pipeline_file}: AutoKeras' pipeline (autokeras.pipeline.load_pipeline) turns "
            "raw input into model input"
        ),
    }
    if job.family == "structured":
        input_spec["columns"] = [
            {"name": name, "type": data.column_types.get(name, "numerical")}
            for name in data.columns
        ]
    if job.family == "text":
        input_spec["text_column"] = data.text_column
    output_shape = [None if d is None else int(d) for d in model.outputs[0].shape]
    output = {
        "target": data.target_name,
        "task": "classification" if job.is_classifier else "regression",
        "shape": output_shape,
        **out_spec,
    }
    if out_spec["decode"] == ARGMAX:
        output["rule"] = "answer = class_names[argmax(output)]"
    elif out_spec["decode"] == THRESHOLD:
        output["rule"] = "answer = class_names[round(output[0])] (one sigmoid unit)"
    else:
        output["rule"] = "answer = output"
    return {
        "format_version": 1,
        "job": job.name,
        "autokeras_class": job.autokeras_class,
        "files": {**written, "pipeline": pipeline_file, "check_samples": "check_samples.npz"},
        "savedmodel_call": "tf.saved_model.load(dir).serve([x]) (a list of one input tensor)",
        "input": input_spec,
        "output": output,
        "custom_objects": "autokeras.CUSTOM_OBJECTS",
        "versions": {
            "autokeras": ak.__version__,
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
        },
    }
