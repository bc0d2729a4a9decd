"""The score of a model that learned nothing, so a run that learned nothing says so.

Classifiers: always answer the training data's most common class. Regressors: always answer the
training mean. Both are scored on the run's own test split, with the metric the run reports.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from ak_remote.summary import BaselineRecord


def baseline(
    is_classifier: bool, y_train: Any, y_test: Any, metrics: Mapping[str, float]
) -> BaselineRecord:
    """The baseline record: rule, metric, its value, the model's, and whether the model wins."""
    if is_classifier:
        counts = Counter(str(v) for v in np.asarray(y_train).reshape(-1).tolist())
        # Most common; ties go to the first name in sorted order, so the choice is stable.
        majority = min(counts, key=lambda name: (-counts[name], name))
        truth = np.asarray(y_test).reshape(-1).astype(str)
        value = float(np.mean(truth == majority))
        model = float(metrics["test_label_accuracy"])
        return BaselineRecord(
            rule=f"always the majority class {majority!r}",
            metric="test_label_accuracy",
            metric_name="baseline_test_accuracy",
            baseline=value,
            model=model,
            beats_baseline=model > value,
        )
    train = np.asarray(y_train, dtype="float64").reshape(len(y_train), -1)
    test = np.asarray(y_test, dtype="float64").reshape(len(y_test), -1)
    mean = train.mean(axis=0)
    value = float(np.mean((test - mean) ** 2))
    model = float(metrics["test_mean_squared_error"])
    return BaselineRecord(
        rule=f"always the training mean {float(mean[0]):.4g}",
        metric="test_mean_squared_error",
        metric_name="baseline_test_mean_squared_error",
        baseline=value,
        model=model,
        beats_baseline=model < value,
    )
