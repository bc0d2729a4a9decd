"""Predict with a run's serving model (models/serving/1): raw inputs in, answers out.

Reads a CSV (structured jobs), lines of text or a CSV (text jobs), or image files and folders
(image jobs), feeds them to the serving SavedModel as users hold them, and returns one row per
sample. TensorFlow is imported only when the model is loaded; AutoKeras never.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ak_remote.contract import is_task_id
from ak_remote.errors import DataError, UsageError
from ak_remote.model.serving import load_metadata, serving_version_dir

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
BATCH = 256


@dataclass
class Predictions:
    """One row per sample: its name, then the answer and (classifiers) each class' probability."""

    columns: list[str]
    rows: list[list[Any]]

    def as_records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def resolve(target: str, fetch: Callable[[str], Path] | None = None) -> Path:
    """The serving model's version folder for a local folder or a run id (fetched with `fetch`).

    Raises UsageError when neither gives a serving model.
    """
    folder = Path(target)
    if folder.is_dir():
        found = serving_version_dir(folder)
        if found is None:
            raise UsageError(
                f"{target} holds no serving model (models/serving/<version>/saved_model.pb)",
                "give a run folder of a run made with this ak-remote version, or its pulled copy",
            )
        return found
    if is_task_id(target) and fetch is not None:
        found = serving_version_dir(fetch(target))
        if found is None:
            raise UsageError(
                f"run {target} has no serving model",
                "runs made before serving models existed "
                "cannot be served this way; run the job again",
            )
        return found
    raise UsageError(
        f"{target} is neither a folder nor a run id",
        "give a run folder (runs/JOB/...), a pulled folder, or a 32-character run id",
    )


# --- reading inputs ---------------------------------------------------------------------------


def _read_text(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    path = Path(source)
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {source}: {exc}", "give a UTF-8 text or CSV file") from None


def _csv_rows(text: str, source: str) -> tuple[list[str], list[list[str]]]:
    rows = [row for row in csv.reader(io.StringIO(text)) if any(c.strip() for c in row)]
    if len(rows) < 2:
        raise DataError(f"{source} has no data rows", "a header row and at least one row needed")
    header = [name.strip() for name in rows[0]]
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(
                f"{source} line {number} has {len(row)} fields, the header {len(header)}",
                "fix the CSV so every row has the header's columns",
            )
    return header, rows[1:]


def structured_inputs(meta: dict[str, Any], source: str) -> tuple[list[str], dict[str, Any]]:
    """Row names and the `serve` inputs (CSV cells by column) from a CSV with a header."""
    header, rows = _csv_rows(_read_text(source), source)
    columns = meta["columns"]
    missing = [c["name"] for c in columns if c["name"] not in header]
    if missing:
        raise DataError(
            f"{source} lacks the column(s) {', '.join(missing)}",
            "the model needs: " + ", ".join(c["name"] for c in columns),
        )
    feeds = {
        c["key"]: [row[header.index(c["name"])] for row in rows] for c in columns
    }  # other columns (the target, ids) are ignored
    return [str(i + 1) for i in range(len(rows))], feeds


def text_inputs(meta: dict[str, Any], source: str) -> tuple[list[str], dict[str, Any]]:
    """Texts from a CSV (its text column, else the first) or one text per non-empty line."""
    text = _read_text(source)
    if source.lower().endswith(".csv"):
        header, rows = _csv_rows(text, source)
        column = meta.get("text", {}).get("column")
        index = header.index(column) if column in header else 0
        texts = [row[index] for row in rows]
    else:
        texts = [line for line in text.splitlines() if line.strip()]
    if not texts:
        raise DataError(f"{source} has no text", "give one text per line")
    return [_short(t) for t in texts], {"text": texts}


def image_files(source: str) -> list[Path]:
    path = Path(source)
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"{source} does not exist", "give an image file or a folder of images")
    if not files:
        raise DataError(f"no images in {source}", f"expected {', '.join(IMAGE_SUFFIXES)} files")
    return files


def read_image(path: Path, size: tuple[int, int] | None) -> Any:
    """Pixels as uint8, grayscale or RGB as the training loader reads files (PIL modes)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            mode = "L" if opened.mode in ("1", "L", "I", "I;16") else "RGB"
            image = opened.convert(mode)
            if size is not None and image.size != size:
                image = image.resize(size, Image.Resampling.BILINEAR)
            return np.asarray(image, dtype="uint8")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}", "remove or replace the file") from None


def _short(text: str, width: int = 40) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


# --- predicting -------------------------------------------------------------------------------


def predict(version_dir: Path, source: str, resize: bool = False) -> Predictions:
    """Answers of the serving model in `version_dir` for the inputs in `source` ('-': stdin).

    Raises UsageError/DataError for unusable inputs, with what to do next.
    """
    meta = load_metadata(version_dir)
    family = meta["family"]
    if source == "-" and family == "image":
        raise UsageError("image models read files", "give an image file or a folder")

    from ak_remote.model.reload import import_tensorflow_quietly

    import_tensorflow_quietly()  # no native-library chatter on the terminal
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir))
    function = loaded.signatures["serve"]
    outputs: list[dict[str, Any]] = []
    if family == "image":
        files = image_files(source)
        image = meta["image"]
        size = (int(image["width"]), int(image["height"])) if resize else None
        names = [str(p) for p in files]
        for path in files:
            pixels = read_image(path, size)
            if pixels.shape[:2] != (image["height"], image["width"]):
                raise DataError(
                    f"{path} is {pixels.shape[1]}x{pixels.shape[0]} pixels; the model was trained "
                    f"on {image['width']}x{image['height']}",
                    "pass --resize to resize images to the training size",
                )
            outputs.append(_run(function, {"image": pixels[None, ...]}))
    else:
        reader = structured_inputs if family == "structured" else text_inputs
        names, feeds = reader(meta, source)
        for start in range(0, len(names), BATCH):
            batch = {k: v[start : start + BATCH] for k, v in feeds.items()}
            outputs.append(_run(function, batch))
    merged = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
    return _rows(meta, names, merged)


def _run(function: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import tensorflow as tf

    specs = function.structured_input_signature[1]
    try:
        result = function(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()})
    except (tf.errors.InvalidArgumentError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise DataError(
            f"the model rejected the input: {first}", "check the input values"
        ) from None
    return {k: np.asarray(v) for k, v in result.items()}


def _rows(meta: dict[str, Any], names: Sequence[str], outputs: dict[str, Any]) -> Predictions:
    if "label" in outputs:
        classes = list(meta["class_names"])
        columns = ["input", "label", *(f"p({c})" for c in classes)]
        rows = [
            [name, label.decode(), *(round(float(p), 6) for p in probabilities)]
            for name, label, probabilities in zip(
                names, outputs["label"], outputs["probabilities"], strict=True
            )
        ]
        return Predictions(columns, rows)
    values = outputs["value"].reshape(len(names), -1)
    target = meta.get("target") or "value"
    if values.shape[1] == 1:
        return Predictions(
            ["input", target], [[n, float(v[0])] for n, v in zip(names, values, strict=True)]
        )
    columns = ["input", *(f"{target}_{i}" for i in range(values.shape[1]))]
    return Predictions(columns, [[n, *map(float, v)] for n, v in zip(names, values, strict=True)])


def render(predictions: Predictions, fmt: str) -> str:
    """The predictions as an aligned table, CSV, or JSON (a list of objects)."""
    if fmt == "json":
        return json.dumps(predictions.as_records(), indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(predictions.columns)
        writer.writerows(predictions.rows)
        return buffer.getvalue().rstrip("\n")
    cells = [predictions.columns] + [
        [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in predictions.rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(predictions.columns))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )
