"""Reading a parallel search back from the server: its trials, their values and objectives.

What `status SEARCH`, `abort SEARCH`, `compare SEARCH` and `pull SEARCH` see: the search task
(the controller, system tag `ak-remote-search`) and its children (system tag
`ak-remote-search-of:<search id>`), each trial's spec (`Search/spec`) and objective.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ak_remote.clearml_api import Client, Doc
from ak_remote.contract import (
    COMPLETED,
    FINAL_FIT_TAG,
    LIVE_STATUSES,
    SEARCH_OF_PREFIX,
    SEARCH_SECTION,
    SEARCH_SPEC_KEY,
    SEARCH_TAG,
    TRIAL_TAG_PREFIX,
    is_task_id,
)
from ak_remote.errors import UsageError
from ak_remote.launcher.runs import check_task_ids

TRIAL_FIELDS = [
    "id",
    "name",
    "status",
    "status_message",
    "system_tags",
    "last_worker",
    "started",
    "completed",
    "created",
    "last_metrics",
    "hyperparams",
]


def is_search(task: Mapping[str, Any]) -> bool:
    return SEARCH_TAG in (task.get("system_tags") or [])


def search_children(client: Client, search_id: str) -> list[Doc]:
    """The trials and final fit of a search, oldest first."""
    tag = f"{SEARCH_OF_PREFIX}{search_id}"
    tasks = [
        t
        for t in client.get_tasks(system_tags=[tag], only_fields=TRIAL_FIELDS)
        if tag in (t.get("system_tags") or [])
    ]
    return sorted(tasks, key=lambda t: str(t.get("created") or ""))


def _spec_of(task: Mapping[str, Any]) -> dict[str, Any]:
    entry = ((task.get("hyperparams") or {}).get(SEARCH_SECTION) or {}).get(SEARCH_SPEC_KEY) or {}
    try:
        spec = json.loads(str(entry.get("value") or "{}"))
    except ValueError:
        return {}
    return spec if isinstance(spec, dict) else {}


def key_values(values: Mapping[str, Any], varying: Sequence[str] = (), limit: int = 4) -> str:
    """A short text of a candidate's most telling values: those that differ between the
    search's trials first, then the optimizer and learning rate."""
    preferred = [k for k in varying if k in values]
    preferred += [k for k in values if k.endswith(("learning_rate", "optimizer"))]
    picked = list(dict.fromkeys(preferred))[:limit]
    labels = [k.rsplit("/", 1)[-1] for k in picked]
    return " ".join(
        f"{k if labels.count(label) > 1 else label}={values[k]}"
        for k, label in zip(picked, labels, strict=True)
    )


def varying_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The hyperparameters whose values differ between the rows' candidates."""
    keys: dict[str, set[str]] = {}
    for row in rows:
        for key, value in (row.get("values") or {}).items():
            keys.setdefault(key, set()).add(json.dumps(value, sort_keys=True, default=str))
    return [k for k, seen in keys.items() if len(seen) > 1]


def trial_rows(tasks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per trial/final attempt: trial, state, worker, key values, objective, duration."""
    from ak_remote.launcher.runs import parse_time
    from ak_remote.search.backends import objective_of

    rows = []
    for task in tasks:
        spec = _spec_of(task)
        tags = task.get("system_tags") or []
        trial = next(
            (t[len(TRIAL_TAG_PREFIX) :] for t in tags if t.startswith(TRIAL_TAG_PREFIX)), ""
        )
        start, end = parse_time(task.get("started")), parse_time(task.get("completed"))
        duration = (end - start).total_seconds() if start and end else None
        rows.append(
            {
                "id": str(task["id"]),
                "trial": "final" if FINAL_FIT_TAG in tags else trial,
                "attempt": int(spec.get("attempt") or 0),
                "status": str(task.get("status") or ""),
                "worker": str(task.get("last_worker") or ""),
                "values": spec.get("candidate") or {},
                "objective": objective_of(task),
                "duration_s": duration,
            }
        )
    return rows


def in_flight(tasks: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(t["id"]) for t in tasks if t.get("status") in LIVE_STATUSES]


@dataclass
class SearchView:
    """A search task and one row per trial/final-fit attempt (`trial_rows`)."""

    id: str
    name: str
    status: str
    rows: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"search": self.id, "status": self.status, "trials": self.rows}


def find_search(client: Client, task_id: str) -> SearchView | None:
    """The search `task_id` with its trials, or None when that task is not a search.

    Raises UsageError for a malformed id.
    """
    (task_id,) = check_task_ids([task_id])
    found = client.get_tasks(ids=[task_id], only_fields=["system_tags", "status", "name"])
    if not found or not is_search(found[0]):
        return None
    search = found[0]
    rows = trial_rows(search_children(client, task_id))
    return SearchView(task_id, str(search.get("name") or ""), str(search.get("status")), rows)


def with_trials(client: Client, ids: tuple[str, ...]) -> list[str]:
    """The ids, each search followed by its trials still queued or running."""
    wanted = check_task_ids(ids)
    result = list(wanted)
    for task in client.get_tasks(ids=wanted, only_fields=["system_tags"]):
        if is_search(task):
            result += [
                i for i in in_flight(search_children(client, str(task["id"]))) if i not in result
            ]
    return result


def trials_of_searches(client: Client, ids: tuple[str, ...]) -> tuple[str, ...]:
    """The ids with each search replaced by its completed trials (in trial order)."""
    wanted = [i.strip().lower() for i in ids if is_task_id(i.strip().lower())]
    if len(wanted) != len(ids) or not wanted:
        return ids  # let the command's own checks explain bad ids
    searches = {
        str(t["id"])
        for t in client.get_tasks(ids=wanted, only_fields=["system_tags"])
        if is_search(t)
    }
    if not searches:
        return ids
    result: list[str] = []
    for task_id in wanted:
        if task_id not in searches:
            result.append(task_id)
            continue
        rows = [r for r in trial_rows(search_children(client, task_id)) if r["trial"] != "final"]
        done = sorted(
            (r for r in rows if r["status"] == COMPLETED),
            key=lambda r: (len(r["trial"]), r["trial"]),
        )
        if not done:
            raise UsageError(
                f"search {task_id} has no finished trial yet", f"ak-remote status {task_id}"
            )
        result += [r["id"] for r in done if r["id"] not in result]
    return tuple(result)
