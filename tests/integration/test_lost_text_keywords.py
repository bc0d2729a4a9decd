"""Integration: text jobs learn a keyword task within their default trials (issue 20, item 15).

A generated set: one of ten rating words fixes each text's rating, among 8-16 filler words
drawn from 2,000 (so the tokenizer's 500-word vocabulary holds the rating words, which are
frequent, but not most fillers). Logistic regression on word counts scores 1.0 on it. The
text jobs run with their defaults (3 trials, 10 epochs) and must find it too: AutoKeras' own
first text candidate reached 0.31 test accuracy (classifier) and 0.51 test MSE, in another run
2.09 (a constant), against the mean's 2.13 (regressor) before the first candidate was changed
(ak_remote/runtime/training.py).
"""

from __future__ import annotations

import csv
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from ak_remote.catalog import JOBS, PROJECT_ROOT
from tests.helpers import run_captured

pytestmark = pytest.mark.slow

RATING_WORDS = {
    "abysmal": 1,
    "dreadful": 1,
    "shoddy": 2,
    "lacklustre": 2,
    "passable": 3,
    "middling": 3,
    "commendable": 4,
    "splendid": 4,
    "exquisite": 5,
    "flawless": 5,
}


def write_keyword_set(path: Path, count: int = 600, seed: int = 7, fillers: int = 2000) -> Path:
    """`count` texts of 8-16 made-up filler words plus one rating word, with its rating."""
    rng = random.Random(seed)
    letters, vowels = "bcdfghjklmnprstvwz", "aeiou"
    vocabulary: set[str] = set()
    while len(vocabulary) < fillers:
        syllables = rng.randint(2, 3)
        vocabulary.add("".join(rng.choice(letters) + rng.choice(vowels) for _ in range(syllables)))
    words = sorted(vocabulary - set(RATING_WORDS))
    keys = sorted(RATING_WORDS)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "rating"])
        for i in range(count):
            key = keys[i % len(keys)]
            text = [rng.choice(words) for _ in range(rng.randint(8, 16))]
            text.insert(rng.randint(0, len(text)), key)
            writer.writerow([" ".join(text), RATING_WORDS[key]])
    return path


def run_default(job: str, dataset: Path, tmp_path: Path) -> dict[str, Any]:
    """The job with its default parameters on `dataset`; its summary.json."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "AK_REMOTE_"))}
    env.update({"HOME": str(tmp_path / "home"), "TF_CPP_MIN_LOG_LEVEL": "2"})
    argv = [sys.executable, str(PROJECT_ROOT / JOBS[job].script)]
    argv += ["--set", f"dataset={dataset}", "--run-dir", str(tmp_path / job), "--offline"]
    proc = run_captured(argv, env, tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary: dict[str, Any] = json.loads((tmp_path / job / "summary.json").read_text())
    assert summary["params"]["max_trials"] == "3"  # the defaults, untouched
    assert summary["params"]["epochs"] == "10"
    return summary


def test_word_counts_solve_the_generated_set(tmp_path: Path) -> None:
    """The set is what it claims: a linear model on word counts gets every test text right."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    with write_keyword_set(tmp_path / "k.csv").open() as handle:
        rows = list(csv.reader(handle))[1:]
    texts, ratings = [r[0] for r in rows], [r[1] for r in rows]
    train_x, test_x, train_y, test_y = train_test_split(texts, ratings, random_state=0)
    counts = CountVectorizer(token_pattern=r"\S+").fit(train_x)
    model = LogisticRegression(max_iter=2000).fit(counts.transform(train_x), train_y)
    assert model.score(counts.transform(test_x), test_y) == 1.0


def test_text_classifier_finds_the_rating_word(tmp_path: Path) -> None:
    summary = run_default("text-classifier", write_keyword_set(tmp_path / "k.csv"), tmp_path)
    assert summary["metrics"]["test_label_accuracy"] >= 0.95
    assert summary["baseline"]["beats_baseline"] is True
    assert summary["baseline"]["near_constant"] is False


def test_text_regressor_finds_the_rating_word(tmp_path: Path) -> None:
    summary = run_default("text-regressor", write_keyword_set(tmp_path / "k.csv"), tmp_path)
    mse = summary["metrics"]["test_mean_squared_error"]
    mean_mse = summary["metrics"]["baseline_test_mean_squared_error"]
    # Explains 60% of the variance or more. The result varies from run to run with the same
    # seed (the cause is not found yet): 11 runs gave test MSE 0.09 (2), 0.17 (2), 0.20 (4),
    # 0.34 and 0.70 (2) against the mean's 2.13, so the bar is where every run passed; a
    # constant predictor (2.09, seen before the first candidate changed) fails it.
    assert mse <= 0.4 * mean_mse, (mse, mean_mse)
    assert summary["baseline"]["beats_baseline"] is True
    assert summary["baseline"]["near_constant"] is False


def test_a_text_candidate_is_trained_as_given(tmp_path: Path) -> None:
    """A parallel search's text trial trains its own values: the text jobs' learning-rate
    space used to replace the candidate's Fixed values (every trial was the default)."""
    from ak_remote.catalog import get_job
    from ak_remote.runtime import data as data_module
    from ak_remote.runtime.settings import Settings
    from ak_remote.runtime.training import build_automodel, text_candidates

    job = get_job("text-classifier")
    settings = Settings.from_values(job.params.resolve({}))
    data = data_module.load("reviews", "text", "classifier")
    candidate = text_candidates("classification_head_1")[0]
    automodel = build_automodel(
        job, settings, data, str(tmp_path / "am"), None, candidate=candidate
    )
    values = automodel.tuner.oracle.hyperparameters.values
    assert {key: values[key] for key in candidate} == candidate
