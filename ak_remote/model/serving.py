"""The serving model read back: its metadata, raw inputs as users hold them, its answers checked.

Both sides use this path: the job verifies the serving model it exported
(ak_remote.runtime.export), the laptop checks the one it pulled and predicts with it
(ak_remote.launcher.pull, .predict). ak_remote.runtime.serving builds it. TensorFlow is imported
inside the functions that call a model, never at module level.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ak_remote.errors import DataError, UsageError
from ak_remote.model.decode import IDENTITY, THRESHOLD, max_abs_diff

SERVING_DIR = "serving"  # under models/: the TF Serving base path
VERSION = "1"  # TF Serving serves the highest numbered folder
# Extra files beside a SavedModel go to assets.extra (TF Serving's convention, ignored by loaders).
METADATA_FILE = "assets.extra/ak_remote_serving.json"
DEFAULT_SIGNATURE = "serving_default"  # the same function as `serve`
FLOAT32 = "float32"  # what every float output of a served model must be


def input_key(name: str) -> str:
    """The serving signature's input name for a CSV column: TensorFlow accepts [A-Za-z0-9_]
    with no leading digit, so other characters become `_` and a leading digit gets `c_`."""
    key = re.sub(r"[^A-Za-z0-9_]", "_", name.strip()) or "column"
    return key if key[0].isalpha() else f"c_{key}"


def input_keys(columns: Sequence[str]) -> dict[str, str]:
    """Each column's input key. Raises DataError when two columns would share one: a request
    naming that key would fill one of them without a word (`x 1` and `x_1` are both `x_1`)."""
    keys: dict[str, str] = {}
    for name in columns:
        key = input_key(name)
        other = next((n for n, k in keys.items() if k == key), None)
        if other is not None or name in keys:
            raise DataError(
                f"the columns {other if other is not None else name!r} and {name!r} would "
                f"both be the serving model's input {key!r}",
                "rename one of them in the data (input names keep only A-Za-z0-9_)",
            )
        keys[name] = key
    return keys


def number_problem(cell: str) -> str | None:
    """What is wrong with `cell` as a numerical column's value, or None when it is a finite
    number or missing (empty, `nan`). An infinite value (`inf`, `1e999`) is no number a model
    can use: training refuses it and so does prediction."""
    text = cell.strip()
    if text == "" or text.lower() == "nan":
        return None
    try:
        value = float(text)
    except ValueError:
        return f"{text!r} is not a number"
    return None if math.isfinite(value) else f"{text!r} is not a finite number"


# PIL modes of grayscale files; I and I;16* are 16-bit PNGs (0-65535).
GRAYSCALE_MODES = ("1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N")
SIXTEEN_BIT_SCALE = 257.0  # 65535 / 255: a 16-bit value on the 8-bit scale


def is_grayscale(mode: str) -> bool:
    return mode in GRAYSCALE_MODES


def image_pixels(image: Any, mode: str) -> np.ndarray[Any, Any]:
    """An opened PIL image's pixels in `mode` ("L" or "RGB"), as training and prediction read
    files: uint8, except 16-bit grayscale, which is float32 on the 0-255 scale (value / 257).

    PIL's own conversion of a 16-bit image to 8 bits clips every value above 255 to 255 (it
    turned 59% of a test image's pixels white); PIL reads 16-bit RGB files as 8-bit itself, by
    their high byte, which is the same scale.
    """
    if image.mode.startswith("I"):
        gray = np.asarray(image, dtype="float32") / SIXTEEN_BIT_SCALE
        return gray if mode == "L" else np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(image.convert(mode), dtype="uint8")


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
                    ["" if np.isnan(v) else _shortest(v) for v in values]
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


def _shortest(value: np.float32) -> str:
    """The shortest text that reads back as the same float32 (`12.36`, not
    `12.359999656677246`), as a CSV holds it."""
    return np.format_float_positional(np.float32(value), unique=True, trim="-")


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
