"""Comparison tables from task documents shaped as the server returns them."""

from __future__ import annotations

import csv
import io
import json

import pytest

from ak_remote.errors import UsageError
from ak_remote.launcher.compare import build, render


def task(task_id: str, epochs: str, seed: str, acc: float, loss: float) -> dict[str, object]:
    def param(name: str, value: str) -> dict[str, str]:
        return {"section": "General", "name": name, "value": value, "type": "int"}

    return {
        "id": task_id,
        "name": f"run {task_id}",
        "status": "completed",
        "hyperparams": {
            "General": {
                "epochs": param("epochs", epochs),
                "seed": param("seed", seed),
                "dataset": param("dataset", "wine"),
            }
        },
        "last_metrics": {
            "a": {
                "b": {"metric": "Summary", "variant": "test_accuracy", "value": acc},
                "c": {"metric": "Summary", "variant": "test_loss", "value": loss},
            },
            "d": {"e": {"metric": "epoch_loss", "variant": "trial-00/train", "value": 9.0}},
        },
    }


TASKS = [
    task("1", "5", "42", 0.8, 0.5),
    task("2", "10", "42", 0.9, 0.3),
    task("3", "20", "42", 0.7, 0.2),
]


def test_only_differing_parameters_and_final_metrics() -> None:
    comparison = build(TASKS)
    assert comparison.param_names == ["epochs"]
    assert comparison.metric_names == ["test_accuracy", "test_loss"]
    assert build(TASKS, all_params=True).param_names == ["dataset", "epochs", "seed"]
    assert "epoch_loss/trial-00/train" in build(TASKS, all_metrics=True).metric_names


def test_sort_best_first_by_the_metric_kind() -> None:
    assert [r["id"] for r in build(TASKS, sort="test_accuracy").runs] == ["2", "1", "3"]
    assert [r["id"] for r in build(TASKS, sort="test_loss").runs] == ["3", "2", "1"]
    assert [r["id"] for r in build(TASKS, sort="+accuracy").runs] == ["3", "1", "2"]
    with pytest.raises(UsageError, match="test_accuracy"):
        build(TASKS, sort="f1")


def test_formats() -> None:
    comparison = build(TASKS, sort="test_accuracy")
    table = render(comparison, "table").splitlines()
    assert table[0].split() == ["id", "name", "status", "epochs", "test_accuracy", "test_loss"]
    assert table[2].startswith("2 ")
    markdown = render(comparison, "markdown").splitlines()
    assert markdown[1] == "|---|---|---|---|---|---|"
    assert markdown[2].startswith("| 2 | run 2 |")
    rows = list(csv.DictReader(io.StringIO(render(comparison, "csv"))))
    assert rows[0]["id"] == "2"
    assert float(rows[0]["test_accuracy"]) == 0.9
    data = json.loads(render(comparison, "json"))
    assert data["runs"][0]["params"] == {"epochs": "10"}


def test_markdown_escapes_pipes() -> None:
    odd = task("4", "5|6", "1", 0.1, 0.1)
    assert "5\\|6" in render(build([odd, TASKS[0]]), "markdown")


def trial(task_id: str, units: int, optimizer: str, objective: float) -> dict[str, object]:
    """A search's trial as the server holds it: the same General values as every other trial,
    its candidate in Search/spec, no test single values; only the objective and its own curve."""
    spec = {
        "role": "trial",
        "trial": task_id,
        "candidate": {
            "structured_data_block_1/dense_block_1/units_0": units,
            "optimizer": optimizer,
            "tuner/epochs": 3,
        },
    }
    base = task(task_id, "5", "42", 0.0, 0.0)
    base["hyperparams"] = {  # type: ignore[index]
        **base["hyperparams"],  # type: ignore[dict-item]
        "Search": {"spec": {"section": "Search", "name": "spec", "value": json.dumps(spec)}},
    }
    base["last_metrics"] = {
        "o": {"v": {"metric": "objective", "variant": "val_accuracy", "value": objective}},
        # only this trial's: a column every other row would leave empty
        task_id: {"x": {"metric": "setup seconds", "variant": f"only {task_id}", "value": 1.0}},
    }
    return base


def test_a_search_is_compared_by_its_candidates_and_common_metrics() -> None:
    comparison = build([trial("1", 32, "adam", 0.8), trial("2", 64, "adam", 0.9)])
    assert comparison.param_names == ["units_0"]  # what differs, by its short name
    assert [r["params"]["units_0"] for r in comparison.runs] == ["32", "64"]
    assert comparison.metric_names == ["objective/val_accuracy"]
    assert [r["metrics"] for r in comparison.runs] == [
        {"objective/val_accuracy": 0.8},
        {"objective/val_accuracy": 0.9},
    ]
