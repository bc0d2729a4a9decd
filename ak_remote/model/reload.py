"""Reloading exported models and checking they answer as the run did (`pull --check`).

TensorFlow, Keras and AutoKeras are imported inside the functions, never at module level, and
TensorFlow's native start-up chatter goes to the log, not the terminal.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ak_remote.errors import RunFailedError
from ak_remote.model import serving
from ak_remote.model.decode import decode

VERBOSE_ENV = "AK_REMOTE_VERBOSE"


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 pointed at a temporary file.

    Its native libraries write to stderr while loading (absl's pre-init notice, oneDNN's INFO
    line, twice), whatever TF_CPP_MIN_LOG_LEVEL says; what they wrote is logged at INFO (the
    job's log file; dropped in the CLI). An import error still reaches the terminal, as the
    exception it raises. The CLI's commands that load models (pull, predict) use it too.
    """
    import tempfile

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get(VERBOSE_ENV, "") not in ("", "0") or "tensorflow" in sys.modules:
        import tensorflow

        return

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            written = capture.read().decode("utf-8", errors="replace")
    for line in written.splitlines():
        logging.getLogger("tensorflow.native").info(line)


def serve(loaded: Any, x: Any) -> Any:
    """Call a reloaded SavedModel's `serve` endpoint on `x`, in the input structure it wants.

    AutoKeras builds functional models whose inputs are a *list* of one tensor, so their
    `serve` takes `[x]`; a plain Keras model's takes `x`.
    """
    import tensorflow as tf

    tensor = tf.constant(x)
    spec = loaded.serve.concrete_functions[0].structured_input_signature[0][0]
    return loaded.serve([tensor] if isinstance(spec, (list, tuple)) else tensor)


def load_models(dest: Path, formats: Mapping[str, str]) -> dict[str, Any]:
    """Reload each exported format (custom objects included). Raises RunFailedError."""

    import_tensorflow_quietly()  # no native-library chatter on the terminal
    models: dict[str, Any] = {}
    for name, relative in formats.items():
        path = dest / relative
        try:
            if name == "savedmodel":
                import tensorflow as tf

                models[name] = tf.saved_model.load(str(path))
            else:
                import autokeras as ak
                import keras

                models[name] = keras.models.load_model(str(path), custom_objects=ak.CUSTOM_OBJECTS)
        except Exception as exc:  # noqa: BLE001 - any reload failure means the model is unusable
            raise RunFailedError(
                f"{relative} downloaded intact but does not load: {type(exc).__name__}: {exc}"[
                    :400
                ],
                "check the TensorFlow/Keras/AutoKeras versions against inference.json",
            ) from None
    return models


def check_predictions(
    dest: Path, models: Mapping[str, Any], verification: Mapping[str, Any]
) -> dict[str, Any]:
    """Predict the recorded held-out samples with every reloaded model and compare.

    Raises RunFailedError when any output or decoded answer differs beyond the tolerance.
    """
    import numpy as np

    inference = json.loads((dest / "inference.json").read_text(encoding="utf-8"))
    samples = np.load(dest / "check_samples.npz", allow_pickle=False)
    x, expected, answers = samples["x"], samples["y_pred"], samples["answers"]
    tolerance = float(verification.get("tolerance") or 1e-4)
    report: dict[str, Any] = {"samples": len(x), "tolerance": tolerance, "max_abs_diff": {}}
    for name, model in models.items():
        outputs = np.asarray(
            serve(model, x) if name == "savedmodel" else model.predict(x, verbose=0)
        )
        diff = (
            float(np.max(np.abs(outputs.astype("float64") - expected.astype("float64"))))
            if outputs.shape == expected.shape
            else float("inf")
        )
        report["max_abs_diff"][name] = diff
        decoded = decode(outputs, inference["output"])
        same = (
            np.array_equal(
                np.asarray(decoded).reshape(-1).astype(str), answers.reshape(-1).astype(str)
            )
            if answers.dtype.kind not in "fc"
            else diff <= tolerance
        )
        if diff > tolerance or not same:
            raise RunFailedError(
                f"the reloaded {name} model does not reproduce the run's predictions "
                f"(max |diff| {diff:.3g} > {tolerance:g} or different answers)",
                "do not serve it; compare the package versions with inference.json",
            )
    if (dest / "serving").is_dir():
        report["serving"] = _check_serving(dest / "serving", samples, tolerance)
    report["passed"] = True
    return report


def _check_serving(base: Path, samples: Any, tolerance: float) -> dict[str, Any]:
    """Feed the raw held-out samples to the pulled serving model; its answers must be the run's.

    Raises RunFailedError otherwise.
    """
    version = base / serving.VERSION
    record = serving.verify(
        version,
        serving.load_metadata(version),
        samples["x_raw"],
        samples["y_pred"],
        samples["answers"],
        tolerance,
    )
    if not record["passed"]:
        detail = record.get("error") or f"max |diff| {record['max_abs_diff']}"
        raise RunFailedError(
            f"the pulled serving model does not reproduce the run's answers on raw inputs "
            f"({detail})",
            "do not serve it; compare the TensorFlow version with inference.json",
        )
    return {"max_abs_diff": record["max_abs_diff"], "samples": record["samples"]}
