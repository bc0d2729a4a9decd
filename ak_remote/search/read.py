"""Reading a parallel search back from the server: its trials, their values and objectives.

What `status SEARCH`, `abort SEARCH`, `compare SEARCH` and `pull SEARCH` see: the search task
(the controller, system tag `ak-remote-search`) and its children (system tag
`ak-remote-search-of:<search id>`), each trial's spec (`Search/spec`) and objective.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
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
    SETUP_SERIES,
    STOPPED_EARLY_TAG,
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
    "last_update",
    "last_metrics",
    "hyperparams",
    "tags",
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
    now = datetime.now(timezone.utc)
    for task in tasks:
        spec = _spec_of(task)
        tags = task.get("system_tags") or []
        trial = next(
            (t[len(TRIAL_TAG_PREFIX) :] for t in tags if t.startswith(TRIAL_TAG_PREFIX)), ""
        )
        status = str(task.get("status") or "")
        created, start = parse_time(task.get("created")), parse_time(task.get("started"))
        end = parse_time(task.get("completed"))
        if end is None and start is not None and status not in LIVE_STATUSES:
            end = parse_time(task.get("last_update"))  # ended without a completion time
        duration = (end - start).total_seconds() if start and end else None
        busy = ((end or now) - start).total_seconds() if start else None
        if STOPPED_EARLY_TAG in (task.get("tags") or []):
            status = "stopped early"
        rows.append(
            {
                "id": str(task["id"]),
                "trial": "final" if FINAL_FIT_TAG in tags else trial,
                "attempt": int(spec.get("attempt") or 0),
                "status": status,
                "worker": str(task.get("last_worker") or ""),
                "values": spec.get("candidate") or {},
                "objective": objective_of(task),
                "duration_s": duration,
                "busy_s": max(0.0, busy) if busy is not None else None,
                "queued_s": (start - created).total_seconds() if start and created else None,
                "setup_s": _single_value(task, SETUP_SERIES),
                "weights_from": str(spec.get("weights_from") or ""),
            }
        )
    return rows


def _single_value(task: Mapping[str, Any], name: str) -> float | None:
    """A value the task reported with report_single_value (title `Summary`)."""
    for variants in (task.get("last_metrics") or {}).values():
        for entry in (variants or {}).values() if isinstance(variants, dict) else []:
            if entry.get("metric") == "Summary" and entry.get("variant") == name:
                try:
                    return float(entry["value"])
                except (KeyError, TypeError, ValueError):
                    return None
    return None


def parse_prices(text: str) -> dict[str, float]:
    """`gpu_prices` ("gpu=2.5,gpu-large=4.1": price per GPU-hour by queue). Raises UsageError."""
    prices: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        queue, sep, price = item.partition("=")
        try:
            value = float(price)
        except ValueError:
            value = -1.0
        if not sep or not queue.strip() or not value >= 0:
            raise UsageError(
                f"gpu_prices: {item!r} is not QUEUE=PRICE",
                'e.g. gpu_prices = "gpu=2.5,gpu-large=4.1" (price per GPU-hour)',
            )
        prices[queue.strip()] = value
    return prices


@dataclass
class AgentUse:
    """How one agent's time went on a search's trials."""

    worker: str
    trials: int = 0
    busy_s: float = 0.0  # from each task's start to its end (now while running)
    queued_s: float = 0.0  # its tasks' wait in the queue, from creation to start
    setup_s: float = 0.0  # from the job's start to its first epoch (imports, data, model)


@dataclass
class Budget:
    """A search's budget: what it allows (from its spec) and what it used so far."""

    elapsed_s: float | None
    max_time_s: float | None
    gpu_hours: float
    max_gpu_hours: float | None
    target: float | None
    queue: str
    price: float | None  # per GPU-hour for the trial queue, from the configuration
    agents: list[AgentUse] = field(default_factory=list)

    @property
    def cost(self) -> float | None:
        return None if self.price is None else self.gpu_hours * self.price

    def as_dict(self) -> dict[str, Any]:
        return {
            "elapsed_s": self.elapsed_s,
            "max_time_s": self.max_time_s,
            "gpu_hours": round(self.gpu_hours, 5),
            "max_gpu_hours": self.max_gpu_hours,
            "target": self.target,
            "queue": self.queue,
            "price_per_gpu_hour": self.price,
            "cost": None if self.cost is None else round(self.cost, 4),
            "agents": [a.__dict__ for a in self.agents],
        }


def budget_of(
    search: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], prices: Mapping[str, float]
) -> Budget:
    """What the search's trials used: agent-hours by agent, wall time, and their cost."""
    from ak_remote.launcher.runs import parse_time

    spec = _spec_of(search)
    start = parse_time(search.get("started"))
    status = str(search.get("status") or "")
    end = None if status in LIVE_STATUSES else parse_time(search.get("last_update"))
    elapsed = ((end or datetime.now(timezone.utc)) - start).total_seconds() if start else None
    agents: dict[str, AgentUse] = {}
    for row in rows:
        if row["trial"] == "final" or row.get("busy_s") is None:
            continue
        use = agents.setdefault(row["worker"], AgentUse(row["worker"]))
        use.trials += 1
        use.busy_s += float(row["busy_s"])
        use.queued_s += float(row.get("queued_s") or 0.0)
        use.setup_s += float(row.get("setup_s") or 0.0)
    queue = str(spec.get("queue_name") or "")
    return Budget(
        elapsed_s=elapsed,
        max_time_s=spec.get("max_time_s"),
        gpu_hours=sum(a.busy_s for a in agents.values()) / 3600.0,
        max_gpu_hours=spec.get("max_gpu_hours"),
        target=spec.get("target"),
        queue=queue,
        price=prices.get(queue),
        agents=sorted(agents.values(), key=lambda a: a.worker),
    )


def in_flight(tasks: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(t["id"]) for t in tasks if t.get("status") in LIVE_STATUSES]


@dataclass
class SearchView:
    """A search task and one row per trial/final-fit attempt (`trial_rows`)."""

    id: str
    name: str
    status: str
    rows: list[dict[str, Any]]
    budget: Budget | None = None

    def as_dict(self) -> dict[str, Any]:
        budget = self.budget.as_dict() if self.budget is not None else None
        return {"search": self.id, "status": self.status, "trials": self.rows, "budget": budget}


def find_search(
    client: Client, task_id: str, prices: Mapping[str, float] | None = None
) -> SearchView | None:
    """The search `task_id` with its trials and budget, or None when that task is not a search.

    Raises UsageError for a malformed id.
    """
    (task_id,) = check_task_ids([task_id])
    found = client.get_tasks(
        ids=[task_id],
        only_fields=["system_tags", "status", "name", "started", "last_update", "hyperparams"],
    )
    if not found or not is_search(found[0]):
        return None
    search = found[0]
    rows = trial_rows(search_children(client, task_id))
    budget = budget_of(search, rows, prices or {})
    name, status = str(search.get("name") or ""), str(search.get("status"))
    return SearchView(task_id, name, status, rows, budget)


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
