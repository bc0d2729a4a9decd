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

from ak_remote.contract import (
    RUN_COMPLETED,
    RUN_FAILED,
    SUMMARY_FILE,
    is_task_id,
    sha256_file,
)
from ak_remote.errors import DataError, RunFailedError, UsageError
from ak_remote.model.serving import (
    image_pixels,
    is_grayscale,
    load_metadata,
    number_problem,
    serving_version_dir,
)
from ak_remote.summary import RunSummary, read_summary

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

    Raises UsageError when neither gives a serving model, RunFailedError for a run that failed
    (it has no verified model), UsageError for one that has not finished.
    """
    folder = Path(target)
    if folder.is_dir():
        summary = _summary_near(folder)
        if summary is not None:
            _check_finished(summary, folder)
        found = serving_version_dir(folder)
        if found is None:
            if summary is not None:
                raise UsageError(
                    f"the run in {target} has no serving model",
                    "it was made by an ak-remote without serving models; run the job again",
                )
            raise UsageError(
                f"{target} holds no serving model (models/serving/<version>/saved_model.pb) "
                f"and no {SUMMARY_FILE}",
                "give a run folder (runs/JOB/STAMP), a pulled folder or a run id",
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


def _summary_near(folder: Path) -> tuple[Path, RunSummary] | None:
    """The summary.json of the run `folder` belongs to (a run or pulled folder, or a folder
    inside one: models/serving/1), with the folder it sits in; None when there is none."""
    for candidate in [folder, *list(folder.resolve().parents)[:4]]:
        path = candidate / SUMMARY_FILE
        if path.is_file():
            try:
                return candidate, read_summary(path)
            except DataError as exc:
                raise RunFailedError(
                    f"cannot trust the model in {folder}: {exc.message}",
                    "pull the run again (ak-remote pull ID) or use another run folder",
                ) from None
    return None


def _check_finished(found: tuple[Path, RunSummary], folder: Path) -> None:
    _, summary = found
    if summary.status == RUN_FAILED:
        raise RunFailedError(
            f"the run in {folder} did not complete: it failed "
            f"({summary.error or 'no reason recorded'}), so it has no verified model",
            f"see {SUMMARY_FILE} there; resume it or run the job again",
        )
    if summary.status != RUN_COMPLETED:
        raise UsageError(
            f"the run in {folder} has not finished ({SUMMARY_FILE} says {summary.status}: "
            "still training, or stopped before it ended)",
            f"wait for it, or resume it: ak-remote run {summary.job} --resume {folder}",
        )


def verify_files(version_dir: Path) -> str | None:
    """Check the serving model's files against the sha256s its run recorded (summary.json,
    export.checksums); returns a warning when nothing records them.

    Raises RunFailedError for a file that is missing or does not match.
    """
    found = _summary_near(version_dir)
    export = found[1].export if found is not None else None
    if found is None or export is None or not export.checksums:
        return (
            f"{version_dir} is not checked: no {SUMMARY_FILE} records its files' sha256s "
            "(give the run folder or a pulled folder to have them checked)"
        )
    root = found[0]
    base = version_dir.resolve()
    checked = 0
    for name, digest in sorted(export.checksums.items()):
        # Run folders keep the recorded paths (models/...); pulled folders drop "models/".
        path = next(
            (p for p in (root / name, root / name.removeprefix("models/")) if p.exists()),
            root / name,
        )
        if base not in path.resolve().parents:
            continue
        if not path.is_file() or sha256_file(path) != digest:
            state = "is missing" if not path.is_file() else "does not match the sha256"
            raise RunFailedError(
                f"{path} {state} its run recorded: the serving model was changed or damaged "
                "after the run; not using it",
                "pull the run again (ak-remote pull ID), or restore the run folder",
            )
        checked += 1
    if not checked:
        return f"{version_dir} is not checked: its run recorded no sha256 for it"
    return None


# --- reading inputs ---------------------------------------------------------------------------


def _read_text(source: str) -> str:
    if source == "-":
        raw = sys.stdin.buffer.read()
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"standard input is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                f"{exc.start})",
                "convert it first, e.g. iconv -f latin1 -t utf-8, or give a UTF-8 file",
            ) from None
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
    numerical = [c for c in columns if c["type"] == "numerical"]
    for number in range(len(rows)):  # the first bad cell, row by row as the file reads
        for column in numerical:
            problem = number_problem(feeds[column["key"]][number])
            if problem:
                raise DataError(
                    f"{source} row {number + 1}, column {column['name']!r}: {problem}",
                    "write a number, or leave the cell empty for a missing value",
                )
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
    """Pixels as the training loader reads files (ak_remote.model.serving.image_pixels): uint8
    grayscale or RGB, or float32 on the 0-255 scale for a 16-bit grayscale image."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            pixels = image_pixels(opened, "L" if is_grayscale(opened.mode) else "RGB")
            if size is not None and pixels.shape[1::-1] != size:
                if pixels.dtype == np.uint8:
                    resized = Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR)
                    return np.asarray(resized, dtype="uint8")
                # 16-bit: resized as 32-bit floats, no 8-bit step in between
                resized = Image.fromarray(pixels, mode="F").resize(size, Image.Resampling.BILINEAR)
                return np.asarray(resized, dtype="float32")
            return pixels
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

    try:
        loaded = tf.saved_model.load(str(version_dir))
    except (OSError, ValueError, tf.errors.OpError) as exc:
        raise RunFailedError(
            f"cannot load the serving model in {version_dir}: {_cause(exc)}",
            "it is damaged: pull the run again (ak-remote pull ID) or use another run folder",
        ) from None
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
            if pixels.dtype == np.uint8:
                outputs.append(_run(function, {"image": pixels[None, ...]}))
            else:  # 16-bit: float pixels on the 0-255 scale, then the training data's scale
                scaled = pixels[None, ...] * float(image["uint8_scale"])
                outputs.append(_run(loaded.signatures["serve_float"], {"image": scaled}))
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
        raise DataError(
            f"the model rejected the input: {_cause(exc)}", "check the input values"
        ) from None
    return {k: np.asarray(v) for k, v in result.items()}


# TensorFlow's error text: a generic first line, the graph node, the cause, then op names.
_NOISE = ("Graph execution error", "Detected at node", "File ", "[[", "Op:", "{{")


def _cause(exc: BaseException) -> str:
    """The line of a TensorFlow error that says what went wrong (`could not convert string:
    abc`, an assertion's own message), not its generic first line."""
    text = str(getattr(exc, "message", None) or exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(_NOISE)]
    chosen = (useful or lines or [type(exc).__name__])[-1]
    return chosen.split(" [[", 1)[0].split(" [Op:", 1)[0][:300]


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
