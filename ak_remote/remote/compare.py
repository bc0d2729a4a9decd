"""Compare runs: the parameters that differ, the final metrics, learning curves."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ak_remote.errors import UsageError
from ak_remote.params import SECTION
from ak_remote.remote.clearml_api import Client, Doc, last_metric_values
from ak_remote.remote.runs import metric_rank

FORMATS = ("table", "markdown", "csv", "json")
COMPARE_FIELDS = [
    "id",
    "name",
    "status",
    "project",
    "tags",
    "system_tags",
    "created",
    "hyperparams",
    "last_metrics",
]
# Words in a metric name that mean "lower is better".
_LOWER_IS_BETTER = ("loss", "error", "mae", "mse", "rmse", "mape", "diff")


@dataclass
class Comparison:
    """Runs side by side: ids, names, statuses, differing parameters, metrics."""

    runs: list[dict[str, Any]]  # id, name, status, params (differing), metrics
    param_names: list[str]
    metric_names: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"params": self.param_names, "metrics": self.metric_names, "runs": self.runs}


def _general(task: Mapping[str, Any]) -> dict[str, str]:
    section = (task.get("hyperparams") or {}).get(SECTION) or {}
    return {k: str((v or {}).get("value", "")) for k, v in section.items()}


def final_metrics(task: Mapping[str, Any], all_metrics: bool = False) -> dict[str, float]:
    """A run's final metrics: its reported single values (test results), or every last value."""
    values = last_metric_values(task)
    if all_metrics:
        return values
    summary = {k.split("/", 1)[1]: v for k, v in values.items() if k.startswith("Summary/")}
    return summary or values


def lower_is_better(metric: str) -> bool:
    return any(word in metric.lower() for word in _LOWER_IS_BETTER)


def build(
    tasks: Sequence[Doc],
    sort: str | None = None,
    all_metrics: bool = False,
    all_params: bool = False,
) -> Comparison:
    """Rows for the tasks; only parameters whose values differ (all of them for one run).

    Raises UsageError for a --sort metric no run has.
    """
    params = [_general(t) for t in tasks]
    names = sorted({k for p in params for k in p})
    if len(tasks) > 1 and not all_params:
        names = [n for n in names if len({p.get(n) for p in params}) > 1]
    metrics = [final_metrics(t, all_metrics) for t in tasks]
    metric_names = sorted({k for m in metrics for k in m}, key=metric_rank)
    runs = [
        {
            "id": str(task["id"]),
            "name": str(task.get("name") or ""),
            "status": str(task.get("status") or ""),
            "params": {n: p.get(n, "") for n in names},
            "metrics": m,
        }
        for task, p, m in zip(tasks, params, metrics, strict=True)
    ]
    if sort:
        key = _match_metric(sort.lstrip("-+"), metric_names)
        descending = not lower_is_better(key)
        if sort.startswith("-"):
            descending = True
        elif sort.startswith("+"):
            descending = False

        def order(run: dict[str, Any]) -> tuple[bool, float]:
            value = run["metrics"].get(key)
            if value is None or math.isnan(value):
                return (True, 0.0)  # runs without the metric go last
            return (False, -value if descending else value)

        runs.sort(key=order)
    return Comparison(runs, names, metric_names)


def _match_metric(name: str, metric_names: Sequence[str]) -> str:
    if name in metric_names:
        return name
    matches = [m for m in metric_names if m.endswith(name) or m.split("/")[-1] == name]
    if len(matches) == 1:
        return matches[0]
    raise UsageError(
        f"no single metric called {name!r}"
        + (f" (matches: {', '.join(matches)})" if matches else ""),
        f"metrics: {', '.join(metric_names) or '(none yet)'}",
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def render(comparison: Comparison, fmt: str) -> str:
    """The comparison as a table, Markdown, CSV or JSON text."""
    if fmt == "json":
        return json.dumps(comparison.as_dict(), indent=2, sort_keys=True)
    headers = ["id", "name", "status", *comparison.param_names, *comparison.metric_names]
    rows = [
        [
            run["id"],
            run["name"],
            run["status"],
            *(run["params"][n] for n in comparison.param_names),
            *(_fmt(run["metrics"].get(n)) for n in comparison.metric_names),
        ]
        for run in comparison.runs
    ]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(headers)
        # Full precision in CSV: it is for machines.
        for run in comparison.runs:
            writer.writerow(
                [
                    run["id"],
                    run["name"],
                    run["status"],
                    *(run["params"][n] for n in comparison.param_names),
                    *(run["metrics"].get(n, "") for n in comparison.metric_names),
                ]
            )
        return out.getvalue().rstrip("\n")
    if fmt == "markdown":

        def cell(text: Any) -> str:
            return str(text).replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(cell(h) for h in headers) + " |"]
        lines.append("|" + "|".join("---" for _ in headers) + "|")
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
        return "\n".join(lines)
    if fmt == "table":
        from ak_remote.ui import table

        return table(headers, rows)
    raise UsageError(f"unknown format {fmt!r}", f"use one of {', '.join(FORMATS)}")


def curves(client: Client, task_id: str, metric: str) -> dict[str, tuple[list[float], list[float]]]:
    """The series of one task whose title or "title/series" contains `metric`: {label: (x, y)}."""
    histogram = client.scalar_histogram(task_id)
    found: dict[str, tuple[list[float], list[float]]] = {}
    for title, variants in histogram.items():
        if not isinstance(variants, dict):
            continue
        for series, points in variants.items():
            label = f"{title}/{series}"
            if metric not in label or not isinstance(points, dict):
                continue
            xs = [float(x) for x in points.get("x") or []]
            ys = [float(y) for y in points.get("y") or []]
            if xs and len(xs) == len(ys):
                found[label] = (xs, ys)
    return found


def plot(
    client: Client, tasks: Sequence[Doc], metric: str, path: Path, names: Mapping[str, str]
) -> int:
    """Draw every run's `metric` curves into a PNG; returns the number of lines drawn.

    Raises UsageError when no run has such a series.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5.5))
    lines = 0
    available: set[str] = set()
    for task in tasks:
        task_id = str(task["id"])
        series = curves(client, task_id, metric)
        if not series:
            available.update(
                f"{t}/{s}" for t, v in client.scalar_histogram(task_id).items() for s in v
            )
        for label, (xs, ys) in sorted(series.items()):
            axes.plot(
                xs, ys, marker="." if len(xs) < 30 else None, label=f"{names[task_id]} {label}"
            )
            lines += 1
    if not lines:
        plt.close(figure)
        raise UsageError(
            f"no run has a scalar series matching {metric!r}",
            f"series: {', '.join(sorted(available)[:20]) or '(none yet)'}",
        )
    axes.set_xlabel("iteration / epoch")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} of {len(tasks)} run(s)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="best")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return lines
