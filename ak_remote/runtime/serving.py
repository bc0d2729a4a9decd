"""The serving model: a SavedModel that takes raw inputs and returns answers (autokeras#1963).

AutoKeras 3.0.0 keeps part of the preprocessing outside the Keras model, in its pipeline
(pipeline.json), and the label decoding too; measured on 3.0.0:
- structured: `CategoricalToNumerical` maps each categorical column to its index among the sorted
  training values (unseen: the number of values) and casts numerical columns to float32, NaN
  becoming 0; normalisation is a layer inside the model;
- text: `CastToString` then `TextTokenizer`: Python `str.split()` on whitespace (no lowercasing),
  the first 100 words, each word's id in a 500-word vocabulary (unknown and padding: 0);
- image: nothing; the model casts to float32 and adds the channel axis of 2-D images itself;
- targets: one-hot (softmax, argmax) or label encoding (one sigmoid unit, rounded).
This module re-expresses that pipeline as TensorFlow ops around the trained model, so the exported
`models/serving/1/` (TF Serving layout) needs neither AutoKeras nor Python preprocessing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ak_remote.catalog import Job
from ak_remote.model.decode import ARGMAX, IDENTITY
from ak_remote.model.serving import (
    DEFAULT_SIGNATURE,
    METADATA_FILE,
    SERVING_DIR,
    VERSION,
    input_keys,
    raw_feeds,
)
from ak_remote.runtime.data import Dataset

# PIL's RGB -> L conversion (Pillow 13 libImaging/Convert.c, L24): what the image loader used.
LUMA = (19595, 38470, 7471)
# Pixels that read like 0-1 floats mean the model was trained on scaled images.
UNIT_RANGE_MAX = 1.0


def _preprocessor(pipeline: Any, cls_name: str) -> Any:
    for item in pipeline.inputs[0]:
        if type(item).__name__ == cls_name:
            return item
    raise RuntimeError(f"AutoKeras' pipeline has no {cls_name}; cannot build the serving model")


def describe(
    job: Job, data: Dataset, model: Any, pipeline: Any, out_spec: dict[str, Any]
) -> dict[str, Any]:
    """Everything the serving graph and its users need, as JSON (assets.extra and summary)."""
    meta: dict[str, Any] = {
        "format_version": 1,
        "job": job.name,
        "family": job.family,
        "task": "classification" if job.is_classifier else "regression",
        "target": data.target_name,
        "class_names": list(out_spec["class_names"]) if out_spec["decode"] != IDENTITY else [],
        "decode": out_spec["decode"],
        "signatures": {},
    }
    if out_spec["decode"] == IDENTITY:
        outputs = {"value": "float32 [batch] (or [batch, n] for several targets)"}
    else:
        outputs = {
            "probabilities": "float32 [batch, classes], in class_names order",
            "label": "string [batch], the class name (AutoKeras' answer)",
        }
    if job.family == "structured":
        encoder = _preprocessor(pipeline, "CategoricalToNumerical")
        keys = input_keys(encoder.column_names)
        columns = []
        for i, name in enumerate(encoder.column_names):
            column: dict[str, Any] = {"name": name, "key": keys[name]}
            if encoder.encoding[i] == "none":
                column["type"] = "numerical"
            else:
                column["type"] = "categorical"
                column["values"] = list(encoder.encoders[i].labels)
            columns.append(column)
        meta["columns"] = columns
        meta["signatures"] = {
            "serve": {
                "inputs": {c["key"]: "string [batch]" for c in columns},
                "outputs": outputs,
                "note": "cells as in the CSV; an empty cell or 'nan' in a numerical column is "
                "missing (0, as in training); unseen categories get their own index",
            },
            "serve_typed": {
                "inputs": {
                    c["key"]: "float32 [batch]" if c["type"] == "numerical" else "string [batch]"
                    for c in columns
                },
                "outputs": outputs,
                "note": "numbers for numerical columns (NaN: missing), strings for categorical",
            },
        }
    elif job.family == "text":
        tokenizer = _preprocessor(pipeline, "TextTokenizer")
        meta["text"] = {
            "column": data.text_column or "text",
            "max_words": int(tokenizer.max_len),
            "vocabulary_size": len(tokenizer.vocab or {}),
            "split": "on whitespace, case kept (as AutoKeras' TextTokenizer)",
        }
        meta["signatures"] = {
            "serve": {"inputs": {"text": "string [batch]"}, "outputs": outputs},
        }
    else:
        shape = [int(d) for d in model.inputs[0].shape[1:]]
        channels = shape[2] if len(shape) == 3 else 1
        high = float(np.max(data.x)) if data.x.size else 255.0
        scale = 1.0 / 255.0 if high <= UNIT_RANGE_MAX else 1.0
        meta["image"] = {
            "height": shape[0],
            "width": shape[1],
            "channels": channels,
            "training_value_range": [float(np.min(data.x)), high],
            "uint8_scale": scale,
            "color": "grayscale and RGB(A) accepted; converted to "
            + ("grayscale with PIL's formula" if channels == 1 else f"{channels} channels"),
            "resize": "not done by the model: give images of the training size "
            "(`ak-remote predict --resize` resizes them)",
        }
        image_inputs = "[batch, height, width] or [batch, height, width, channels]"
        meta["signatures"] = {
            "serve": {
                "inputs": {"image": f"uint8 {image_inputs}, pixels as stored in image files"},
                "outputs": outputs,
            },
            "serve_float": {
                "inputs": {"image": f"float32 {image_inputs}, on the training data's scale"},
                "outputs": outputs,
            },
        }
    meta["signatures"][DEFAULT_SIGNATURE] = {"same_as": "serve"}
    return meta


def build(model: Any, pipeline: Any, meta: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The tf.Module holding the model and the preprocessing, with its signature functions."""
    import tensorflow as tf

    module = tf.Module()
    module.model = model
    family = meta["family"]

    def finish(y: Any) -> dict[str, Any]:
        y = tf.cast(y, tf.float32)
        if meta["decode"] == IDENTITY:
            return {"value": y[:, 0] if y.shape[-1] == 1 else y}
        names = tf.constant(meta["class_names"])
        if meta["decode"] == ARGMAX:
            probabilities, index = y, tf.argmax(y, axis=1)
        else:  # THRESHOLD: one sigmoid unit is the second class' probability
            p = y[:, :1]
            probabilities = tf.concat([1.0 - p, p], axis=1)
            index = tf.cast(tf.round(p[:, 0]), tf.int64)
        return {"probabilities": probabilities, "label": tf.gather(names, index)}

    def predict(x: Any) -> dict[str, Any]:
        return finish(module.model(x, training=False))

    functions: dict[str, Any] = {}
    if family == "structured":
        columns = meta["columns"]
        tables: list[Any] = []
        for column in columns:
            if column["type"] == "categorical":
                values = column["values"]
                initializer = tf.lookup.KeyValueTensorInitializer(
                    tf.constant(values, tf.string), tf.range(len(values), dtype=tf.int64)
                )
                # Unseen values: index len(values), as AutoKeras' LabelEncoder.
                tables.append(tf.lookup.StaticHashTable(initializer, default_value=len(values)))
            else:
                tables.append(None)
        module.tables = [t for t in tables if t is not None]

        def structured(features: dict[str, Any]) -> dict[str, Any]:
            parts = []
            for column, table in zip(columns, tables, strict=True):
                cell = features[column["key"]]
                if table is not None:
                    value = tf.cast(table.lookup(tf.strings.strip(cell)), tf.float32)
                elif cell.dtype == tf.string:
                    text = tf.strings.strip(cell)
                    # The loader turns empty numerical cells into "nan"; to_number reads it.
                    text = tf.where(text == "", tf.constant("nan"), text)
                    value = tf.strings.to_number(text, tf.float32)
                else:
                    value = tf.cast(cell, tf.float32)
                if table is None:
                    # Training refuses an infinite number (ak_remote.model.serving.number_problem):
                    # answering one would be a guess, so the request fails saying why.
                    finite = tf.debugging.assert_equal(
                        tf.reduce_any(tf.math.is_inf(value)),
                        False,
                        # No quotes: TensorFlow escapes them in the message it returns.
                        message=f"column {column['name']} (input {column['key']}): an "
                        "infinite value is not a number the model can use",
                    )
                    with tf.control_dependencies([finite]):
                        value = tf.where(tf.math.is_nan(value), tf.zeros_like(value), value)
                parts.append(tf.reshape(value, [-1, 1]))
            return predict(tf.concat(parts, axis=1))

        strings = {c["key"]: tf.TensorSpec([None], tf.string, name=c["key"]) for c in columns}
        typed = {
            c["key"]: tf.TensorSpec(
                [None], tf.float32 if c["type"] == "numerical" else tf.string, name=c["key"]
            )
            for c in columns
        }
        functions["serve"] = tf.function(structured, input_signature=[strings])
        functions["serve_typed"] = tf.function(structured, input_signature=[typed])
    elif family == "text":
        tokenizer = _preprocessor(pipeline, "TextTokenizer")
        vocab = dict(tokenizer.vocab or {})
        max_len = int(tokenizer.max_len)
        words = tf.constant(list(vocab) or [""], tf.string)
        ids = tf.constant(list(vocab.values()) or [0], tf.int64)
        module.vocab = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(words, ids), default_value=0
        )

        def text(texts: Any) -> dict[str, Any]:
            tokens = tf.strings.split(texts)[:, :max_len]  # whitespace, as str.split()
            token_ids = tf.ragged.map_flat_values(module.vocab.lookup, tokens)
            x = token_ids.to_tensor(default_value=0, shape=[None, max_len])
            return predict(tf.cast(x, tf.int32))

        functions["serve"] = tf.function(
            text, input_signature=[tf.TensorSpec([None], tf.string, name="text")]
        )
    else:
        image = meta["image"]
        height, width, channels = image["height"], image["width"], image["channels"]
        rank3 = len(model.inputs[0].shape) == 3

        def convert(x: Any, scale: float) -> dict[str, Any]:
            # Each check gates what follows (control dependencies): otherwise the graph may
            # run a later shape check first, and users would see its message, not these.
            rank = tf.debugging.assert_rank_in(
                x, [3, 4], message="images must be [batch, height, width(, channels)]"
            )
            with tf.control_dependencies([rank]):
                x = tf.reshape(x, tf.concat([tf.shape(x)[:3], [-1]], axis=0))
            size = tf.debugging.assert_equal(
                tf.shape(x)[1:3],
                tf.constant([height, width]),
                message=f"images must be {height}x{width} pixels, the training size",
            )
            with tf.control_dependencies([size]):
                x = tf.identity(x)
            have = tf.shape(x)[3]
            if channels == 1:
                x = tf.cond(have >= 3, lambda: luminance(x), lambda: x[..., :1])
            elif channels == 3:
                x = tf.cond(
                    have >= 3, lambda: x[..., :3], lambda: tf.tile(x[..., :1], [1, 1, 1, 3])
                )
            x = tf.ensure_shape(tf.cast(x, tf.float32), [None, height, width, channels])
            if scale != 1.0:
                x = x * scale
            return predict(x[..., 0] if rank3 else x)

        def luminance(x: Any) -> Any:
            rgb = x[..., :3]
            if rgb.dtype == tf.uint8:
                wide = tf.cast(rgb, tf.int32)
                gray = (
                    wide[..., 0] * LUMA[0] + wide[..., 1] * LUMA[1] + wide[..., 2] * LUMA[2] + 32768
                ) // 65536
                return tf.cast(gray, tf.uint8)[..., None]
            weights = tf.constant([w / 65536.0 for w in LUMA], rgb.dtype)
            return tf.reduce_sum(rgb * weights, axis=-1, keepdims=True)

        scale = float(image["uint8_scale"])
        functions["serve"] = tf.function(
            lambda x: convert(x, scale),
            input_signature=[tf.TensorSpec(None, tf.uint8, name="image")],
        )
        functions["serve_float"] = tf.function(
            lambda x: convert(x, 1.0),
            input_signature=[tf.TensorSpec(None, tf.float32, name="image")],
        )
    for name, function in functions.items():
        setattr(module, name, function)
    return module, functions


def rest_example(meta: dict[str, Any], x_raw: Any, count: int = 2) -> dict[str, Any]:
    """A TF Serving REST request body (row format) for the first raw samples."""
    if meta["family"] == "image":
        count = 1  # pixels make long bodies
    feeds = raw_feeds(meta, np.asarray(x_raw)[:count])
    signature = "serve" if "serve" in feeds else next(iter(feeds))
    inputs = feeds[signature]
    if len(inputs) == 1:
        instances: list[Any] = next(iter(inputs.values())).tolist()
    else:
        n = len(next(iter(inputs.values())))
        instances = [{key: values[i].item() for key, values in inputs.items()} for i in range(n)]
    body: dict[str, Any] = {"instances": instances}
    if signature != "serve":
        body = {"signature_name": signature, **body}
    return body


def export(
    job: Job,
    data: Dataset,
    model: Any,
    pipeline: Any,
    out_spec: dict[str, Any],
    models_dir: Path,
    x_raw: Any,
) -> dict[str, Any]:
    """Write models/serving/1/ (SavedModel + assets.extra metadata); returns the metadata."""
    import tensorflow as tf

    meta = describe(job, data, model, pipeline, out_spec)
    # POST it to http://HOST:8501/v1/models/NAME:predict (serving_default is `serve`).
    meta["rest_example"] = rest_example(meta, x_raw)
    module, functions = build(model, pipeline, meta)
    target = models_dir / SERVING_DIR / VERSION
    shutil.rmtree(models_dir / SERVING_DIR, ignore_errors=True)
    signatures = {name: fn.get_concrete_function() for name, fn in functions.items()}
    signatures[DEFAULT_SIGNATURE] = signatures["serve"]
    tf.saved_model.save(module, str(target), signatures=signatures)
    extra = target / METADATA_FILE
    extra.parent.mkdir(parents=True, exist_ok=True)
    extra.write_text(json.dumps(meta, indent=2) + "\n")
    return meta
