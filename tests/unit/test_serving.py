"""The baseline rules a run's metrics are held against (no training; the serving models of real
runs: tests/integration/test_serving.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from ak_remote.runtime.baseline import baseline


def test_baseline_rules() -> None:
    y_train = np.array(["a", "a", "b", "c", "b", "a"])
    y_test = np.array(["a", "b", "a", "a"])
    record = baseline(True, y_train, y_test, {"test_label_accuracy": 0.75})
    assert record.baseline == 0.75
    assert "'a'" in record.rule
    assert record.beats_baseline is False  # equal is not better
    assert baseline(True, y_train, y_test, {"test_label_accuracy": 1.0}).beats_baseline
    reg = baseline(
        False, np.array([1.0, 3.0]), np.array([2.0, 4.0]), {"test_mean_squared_error": 1.0}
    )
    assert reg.baseline == pytest.approx(2.0)  # mean 2: errors 0 and 2
    assert reg.beats_baseline is True
    assert not baseline(
        False, np.array([1.0, 3.0]), np.array([2.0, 4.0]), {"test_mean_squared_error": 3.0}
    ).beats_baseline
