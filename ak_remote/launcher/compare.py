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

from ak_remote.clearml_api import Client, Doc, last_metric_values
from ak_remote.contract import SEARCH_SECTION, SEARCH_SPEC_KEY
from ak_remote.errors import UsageError
from ak_remote.launcher.runs import metric_rank
from ak_remote.params import SECTION, shortest_names

FORMATS = ("table", "markdown", "md", "csv", "json")  # md: markdown, as people type it
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
    """The job's parameters, and for a search's trial or final fit its candidate's values (they
    live in `Search/spec`, and are what tells one trial from another)."""
    tree = task.get("hyperparams") or {}
    section = tree.get(SECTION) or {}
    values = {k: str((v or {}).get("value", "")) for k, v in section.items()}
    entry = (tree.get(SEARCH_SECTION) or {}).get(SEARCH_SPEC_KEY) or {}
    try:
        spec = json.loads(str(entry.get("value") or "{}"))
    except ValueError:
        spec = {}
    candidate = spec.get("candidate") if isinstance(spec, dict) else None
    for key, value in (candidate if isinstance(candidate, dict) else {}).items():
        if not str(key).startswith("tuner/"):  # Hyperband's bookkeeping, not a model setting
            values[str(key)] = str(value)
    return values


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
    short = shortest_names(names)
    metrics = [final_metrics(t, all_metrics) for t in tasks]
    found = [k for m in metrics for k in m]
    if not all_metrics:
        # Only what can be compared: a metric more than half the runs report (one that a single
        # trial or the final fit reports alone would be an empty column in every other row).
        found = [k for k in found if len(tasks) == 1 or 2 * found.count(k) > len(tasks)]
    metric_names = sorted(set(found), key=metric_rank)
    runs = [
        {
            "id": str(task["id"]),
            "name": str(task.get("name") or ""),
            "status": str(task.get("status") or ""),
            "params": {short[n]: p.get(n, "") for n in names},
            "metrics": {k: v for k, v in m.items() if k in metric_names},
        }
        for task, p, m in zip(tasks, params, metrics, strict=True)
    ]
    names = [short[n] for n in names]
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
    fmt = "markdown" if fmt == "md" else fmt
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


def run_labels(tasks: Sequence[Doc], limit: int = 60) -> dict[str, str]:
    """A short, distinct legend label per run: the parameters that differ between the runs.

    Runs that differ in nothing shown (or share a label) get their id's first characters.
    """
    params = [_general(t) for t in tasks]
    names = sorted({k for p in params for k in p})
    differing = [n for n in names if len({p.get(n) for p in params}) > 1]
    labels: dict[str, str] = {}
    for task, values in zip(tasks, params, strict=True):
        text = " ".join(f"{n}={values.get(n, '')}" for n in differing)
        labels[str(task["id"])] = text[:limit] if text else str(task.get("name") or "")[:limit]
    counts: dict[str, int] = {}
    for text in labels.values():
        counts[text] = counts.get(text, 0) + 1
    for task_id, text in labels.items():
        if counts[text] > 1 or not text:
            labels[task_id] = f"{text} [{task_id[:6]}]".strip()
    return labels


@dataclass
class Drawn:
    """One line of the plot: whose, which series, its colour and marker, its last value."""

    task_id: str
    label: str
    color: str
    marker: str | None
    points: int
    last: float


# Line styles per series of one run (its colour says which run): train solid, validation dashed.
_STYLES = ("-", "--", ":", "-.")


def plot(
    client: Client, tasks: Sequence[Doc], metric: str, path: Path, names: Mapping[str, str]
) -> list[Drawn]:
    """Draw every run's `metric` curves into a PNG, one colour per run; returns the lines drawn.

    The legend sits outside the axes, best run first (by its last value of `metric`), with that
    value in the label; short runs (a single epoch) are drawn as markers. Raises UsageError when
    no run has such a series.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex
    from matplotlib.ticker import MaxNLocator

    found: list[tuple[str, dict[str, tuple[list[float], list[float]]]]] = []
    available: set[str] = set()
    for task in tasks:
        task_id = str(task["id"])
        series = curves(client, task_id, metric)
        if not series:
            available.update(
                f"{t}/{s}" for t, v in client.scalar_histogram(task_id).items() for s in v
            )
        found.append((task_id, series))
    if not any(series for _, series in found):
        raise UsageError(
            f"no run has a scalar series matching {metric!r}",
            f"series: {', '.join(sorted(available)[:20]) or '(none yet)'}",
        )
    runs = [(task_id, series) for task_id, series in found if series]
    cmap = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20" if len(runs) <= 20 else "turbo")
    count = len(runs)
    colors = [to_hex(cmap(i if count <= 20 else i / max(count - 1, 1))) for i in range(count)]
    sign = 1.0 if lower_is_better(metric) else -1.0

    def last(series: Mapping[str, tuple[list[float], list[float]]]) -> float:
        # The run's standing: the last value of its last (validation when there is one) series.
        names_sorted = sorted(series, key=lambda n: ("validation" not in n, n))
        return series[names_sorted[0]][1][-1]

    order = sorted(range(count), key=lambda i: sign * last(runs[i][1]))
    figure, axes = plt.subplots(figsize=(11, 5.5))
    drawn: list[Drawn] = []
    for rank, i in enumerate(order):
        task_id, series = runs[i]
        color = colors[i]
        for n, (label, (xs, ys)) in enumerate(sorted(series.items())):
            marker = "o" if len(xs) <= 3 else None
            split = label.split("/", 1)[-1]  # the series: "trial 00 · validation", "final · train"
            text = f"{'★ ' if rank == 0 else ''}{names[task_id]} · {split} ({ys[-1]:.4g})"
            axes.plot(
                xs,
                ys,
                color=color,
                linestyle=_STYLES[n % len(_STYLES)],
                marker=marker,
                markersize=7 if marker else 0,
                linewidth=1.6,
                label=text,
            )
            drawn.append(Drawn(task_id, text, color, marker, len(xs), ys[-1]))
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(metric)
    better = "lower" if sign > 0 else "higher"
    axes.set_title(f"{metric} of {len(tasks)} run(s): {better} is better, ★ best last value")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return drawn
