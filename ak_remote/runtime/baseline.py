"""The score of a model that learned nothing, so a run that learned nothing says so.

Classifiers: always answer the training data's most common class. Regressors: always answer the
training mean. Both are scored on the run's own test split, with the metric the run reports.

Beating it by a hair is not learning: the model must beat the baseline by more than chance on
this test split explains, decided by a one-sided paired test at ALPHA on the same test rows:
- classifiers: McNemar's exact test (the rows one of the two gets right and the other wrong:
  a binomial test that the model wins more of them than a coin would);
- regressors: a sign-flip permutation test of the mean difference of squared errors (baseline
  minus model, row by row; PERMUTATIONS random sign patterns, seeded): no assumption about the
  shape of the errors, and it tests exactly "lower MSE".
Apart from that, a near-constant predictor is flagged whatever its score (a regressor whose
predictions vary by less than NEAR_CONSTANT of the training targets' spread, a classifier that
gives one answer to nearly every test row): it beat a baseline by being a slightly better
constant, not by reading its inputs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from ak_remote.summary import BaselineRecord

ALPHA = 0.05  # one-sided significance level of "beats the baseline"
PERMUTATIONS = 10_000  # sign patterns of the regressors' permutation test
NEAR_CONSTANT = 0.05  # regressors: prediction std below this share of the targets' std
ONE_ANSWER_SHARE = 0.98  # classifiers: the most common answer on at least this share of rows
MCNEMAR = "one-sided McNemar exact test on the test rows"
PERMUTATION = f"one-sided paired sign-flip permutation test of squared errors ({PERMUTATIONS})"


def baseline(
    is_classifier: bool,
    y_train: Any,
    y_test: Any,
    metrics: Mapping[str, float],
    predictions: Any = None,
    seed: int = 0,
) -> BaselineRecord:
    """The baseline record: rule, metric, its value, the model's, whether the model beats it by
    more than noise (when the model's test `predictions` are given: answers or values), and
    whether the model is a near-constant predictor."""
    if is_classifier:
        return _classifier(y_train, y_test, metrics, predictions)
    return _regressor(y_train, y_test, metrics, predictions, seed)


def _classifier(
    y_train: Any, y_test: Any, metrics: Mapping[str, float], predictions: Any
) -> BaselineRecord:
    counts = Counter(str(v) for v in np.asarray(y_train).reshape(-1).tolist())
    # Most common; ties go to the first name in sorted order, so the choice is stable.
    majority = min(counts, key=lambda name: (-counts[name], name))
    truth = np.asarray(y_test).reshape(-1).astype(str)
    value = float(np.mean(truth == majority))
    model = float(metrics["test_label_accuracy"])
    record = BaselineRecord(
        rule=f"always the majority class {majority!r}",
        metric="test_label_accuracy",
        metric_name="baseline_test_accuracy",
        baseline=value,
        model=model,
        beats_baseline=model > value,
    )
    if predictions is None:
        return record
    answers = np.asarray(predictions).reshape(-1).astype(str)
    right, base_right = answers == truth, truth == majority
    wins = int(np.sum(right & ~base_right))
    losses = int(np.sum(~right & base_right))
    record.test = MCNEMAR
    record.p_value = _binomial_tail(wins, wins + losses)
    record.beats_baseline = model > value and record.p_value < ALPHA
    top = Counter(answers.tolist()).most_common(1)[0][1] / len(answers) if len(answers) else 1.0
    record.spread = round(1.0 - top, 6)
    record.near_constant = top >= ONE_ANSWER_SHARE
    return record


def _regressor(
    y_train: Any, y_test: Any, metrics: Mapping[str, float], predictions: Any, seed: int
) -> BaselineRecord:
    train = np.asarray(y_train, dtype="float64").reshape(len(y_train), -1)
    test = np.asarray(y_test, dtype="float64").reshape(len(y_test), -1)
    mean = train.mean(axis=0)
    value = float(np.mean((test - mean) ** 2))
    model = float(metrics["test_mean_squared_error"])
    record = BaselineRecord(
        rule=f"always the training mean {float(mean[0]):.4g}",
        metric="test_mean_squared_error",
        metric_name="baseline_test_mean_squared_error",
        baseline=value,
        model=model,
        beats_baseline=model < value,
    )
    if predictions is None:
        return record
    guess = np.asarray(predictions, dtype="float64").reshape(test.shape)
    gain = np.mean((test - mean) ** 2 - (test - guess) ** 2, axis=1)  # per row, > 0: model wins
    record.test = PERMUTATION
    record.p_value = _sign_flip_p(gain, seed)
    record.beats_baseline = model < value and record.p_value < ALPHA
    target_std = float(np.mean(train.std(axis=0)))
    ratio = float(np.mean(guess.std(axis=0))) / target_std if target_std > 0 else 0.0
    record.spread = round(ratio, 6)
    record.near_constant = ratio < NEAR_CONSTANT
    return record


def _binomial_tail(wins: int, trials: int) -> float:
    """P(X >= wins) for X ~ Binomial(trials, 1/2): McNemar's exact one-sided p-value."""
    if trials == 0:
        return 1.0
    from scipy.stats import binom

    return float(binom.sf(wins - 1, trials, 0.5))


def _sign_flip_p(gain: np.ndarray[Any, Any], seed: int) -> float:
    """One-sided p-value that the mean of `gain` is > 0, by random sign flips (exchangeable
    losses under the null); (1 + as extreme) / (1 + PERMUTATIONS), never 0."""
    observed = float(np.mean(gain))
    if len(gain) == 0 or not np.any(gain):
        return 1.0
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, PERMUTATIONS, 1000):  # 1000 patterns at a time: bounded memory
        count = min(1000, PERMUTATIONS - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(count, len(gain)))
        extreme += int(np.sum(signs @ gain / len(gain) >= observed - 1e-12))
    return (1 + extreme) / (1 + PERMUTATIONS)
