"""Turning an exported model's raw outputs into AutoKeras' answers, from inference.json alone.

AutoKeras keeps label encoding outside the Keras model (its preprocessing pipeline), so an
exported model predicts probabilities, not labels (autokeras#1963). `inference.json` records the
decoding; `decode` applies it with numpy only, so `pull --check` and serving code need neither
AutoKeras nor TensorFlow to give the same labels as `AutoModel.predict`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# How the output of the model becomes a prediction (inference.json: output.decode):
ARGMAX = "argmax"  # softmax over classes -> class_names[argmax]
THRESHOLD = "round"  # one sigmoid unit -> class_names[round(p)] (AutoKeras' binary LabelEncoder)
IDENTITY = "identity"  # regression, or targets that were already encoded


def decode(outputs: Any, output_spec: dict[str, Any]) -> np.ndarray[Any, Any]:
    """Labels (classifiers) or values (regressors) for raw model outputs, per inference.json.

    Raises ValueError for an unknown decoding rule.
    """
    array = np.asarray(outputs)
    rule = output_spec["decode"]
    if rule == IDENTITY:
        return array
    names = list(output_spec["class_names"])
    if rule == ARGMAX:
        indices = np.argmax(array.reshape(len(array), -1), axis=1)
    elif rule == THRESHOLD:
        indices = np.rint(array.reshape(len(array), -1)[:, 0]).astype(int)
    else:
        raise ValueError(f"unknown decode rule {rule!r}")
    # AutoKeras answers "unknown" for an index past the labels; keep that behaviour.
    return np.array([names[i] if 0 <= i < len(names) else "unknown" for i in indices])


def max_abs_diff(a: Any, b: Any) -> float:
    """The largest absolute difference of two arrays (inf when their shapes differ)."""
    left, right = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    if left.shape != right.shape:
        return float("inf")
    return float(np.max(np.abs(left - right))) if left.size else 0.0


def answers_match(got: Any, want: Any, tolerance: float) -> bool:
    """Whether decoded answers agree: values within `tolerance`, labels exactly."""
    got, want = np.asarray(got), np.asarray(want)
    if got.dtype.kind in "fc" and want.dtype.kind in "fc":
        return max_abs_diff(got.reshape(want.shape), want) <= tolerance
    return bool(np.array_equal(got.reshape(-1).astype(str), want.reshape(-1).astype(str)))
