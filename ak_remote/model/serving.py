"""The serving model read back: its metadata, raw inputs as users hold them, its answers checked.

Both sides use this path: the job verifies the serving model it exported
(ak_remote.runtime.export), the laptop checks the one it pulled and predicts with it
(ak_remote.launcher.pull, .predict). ak_remote.runtime.serving builds it. TensorFlow is imported
inside the functions that call a model, never at module level.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ak_remote.errors import UsageError
from ak_remote.model.decode import IDENTITY, THRESHOLD, max_abs_diff

SERVING_DIR = "serving"  # under models/: the TF Serving base path
VERSION = "1"  # TF Serving serves the highest numbered folder
# Extra files beside a SavedModel go to assets.extra (TF Serving's convention, ignored by loaders).
METADATA_FILE = "assets.extra/ak_remote_serving.json"
DEFAULT_SIGNATURE = "serving_default"  # the same function as `serve`
FLOAT32 = "float32"  # what every float output of a served model must be


def serving_version_dir(folder: Path) -> Path | None:
    """The serving SavedModel in a run folder, a pulled folder, a serving base or a version."""
    if (folder / "saved_model.pb").is_file():
        return folder
    for base in (folder / "models" / SERVING_DIR, folder / SERVING_DIR, folder):
        versions = [p for p in base.glob("*") if p.name.isdigit() and p.is_dir()]
        versions = [p for p in versions if (p / "saved_model.pb").is_file()]
        if versions:
            return max(versions, key=lambda p: int(p.name))
    return None


def load_metadata(version_dir: Path) -> dict[str, Any]:
    path = version_dir / METADATA_FILE
    if not path.is_file():
        raise UsageError(
            f"{version_dir} has no {METADATA_FILE}", "is it an ak-remote serving model?"
        )
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


# --- raw inputs, as users have them -----------------------------------------------------------


def raw_feeds(meta: dict[str, Any], x_raw: Any) -> dict[str, dict[str, Any]]:
    """Held-out samples as users hold them, per signature: CSV cells (blank for missing),
    typed columns, sentences, or pixels (uint8 where the data are whole 0-255 values)."""
    x = np.asarray(x_raw)
    if meta["family"] == "structured":
        strings: dict[str, Any] = {}
        typed: dict[str, Any] = {}
        for i, column in enumerate(meta["columns"]):
            cells = x[:, i]
            if column["type"] == "numerical":
                values = cells.astype("float32")
                # As a CSV writes them: shortest round-trip text, a missing value left blank.
                strings[column["key"]] = np.array(
                    ["" if np.isnan(v) else repr(float(v)) for v in values]
                )
                typed[column["key"]] = values
            else:
                strings[column["key"]] = cells.astype(str)
                typed[column["key"]] = cells.astype(str)
        return {"serve": strings, "serve_typed": typed}
    if meta["family"] == "text":
        return {"serve": {"text": x.astype(str)}}
    feeds: dict[str, dict[str, Any]] = {"serve_float": {"image": x.astype("float32")}}
    whole = np.all(np.mod(x, 1) == 0) and x.min() >= 0 and x.max() <= 255
    if whole and float(meta["image"]["uint8_scale"]) == 1.0:
        feeds["serve"] = {"image": x.astype("uint8")}
    return feeds


def call(loaded: Any, signature: str, inputs: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """Call a loaded serving model's signature on numpy inputs; numpy outputs."""
    import tensorflow as tf

    function = loaded.signatures[signature]
    tensors = {}
    for key, value in inputs.items():
        spec = function.structured_input_signature[1][key]
        tensors[key] = tf.constant(value, dtype=spec.dtype)
    return {name: np.asarray(value) for name, value in function(**tensors).items()}


def verify(
    version_dir: Path,
    meta: dict[str, Any],
    x_raw: Any,
    expected: Any,
    expected_answers: Any,
    tolerance: float,
) -> dict[str, Any]:
    """Reload the serving model and compare its answers on raw inputs with pipeline + model."""
    import tensorflow as tf

    record: dict[str, Any] = {
        "samples": len(x_raw),
        "max_abs_diff": {},
        "answers_match": {},
        "output_dtypes": {},
    }
    try:
        loaded = tf.saved_model.load(str(version_dir))
        for signature, inputs in raw_feeds(meta, x_raw).items():
            got = call(loaded, signature, inputs)
            record["output_dtypes"][signature] = {
                key: str(value.dtype) for key, value in got.items() if value.dtype.kind == "f"
            }
            want = np.asarray(expected, dtype="float64").reshape(len(x_raw), -1)
            if meta["decode"] == IDENTITY:
                values = got["value"].reshape(len(x_raw), -1)
                same = max_abs_diff(values, want) <= tolerance
                record["max_abs_diff"][signature] = max_abs_diff(values, want)
            else:
                probabilities = got["probabilities"]
                if meta["decode"] == THRESHOLD:
                    probabilities = probabilities[:, 1:]
                record["max_abs_diff"][signature] = max_abs_diff(probabilities, want)
                labels = np.array([v.decode() for v in got["label"].reshape(-1)])
                same = bool(
                    np.array_equal(labels, np.asarray(expected_answers).reshape(-1).astype(str))
                )
            record["answers_match"][signature] = bool(same)
    except Exception as exc:  # noqa: BLE001 - a serving model that cannot answer fails the check
        record["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    record["passed"] = (
        "error" not in record
        and bool(record["max_abs_diff"])
        and all(d <= tolerance for d in record["max_abs_diff"].values())
        and all(record["answers_match"].values())
        and all(
            dtype == FLOAT32
            for outputs in record["output_dtypes"].values()
            for dtype in outputs.values()
        )
    )
    return record
