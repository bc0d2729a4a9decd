"""Queues and workers of a ClearML setup (`queues`, `agents`).

Library logic over `clearml_api.Client`; the click layer is `ak_remote.commands.fleet`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ak_remote.clearml_api import Client
from ak_remote.fleet.agents import QueueSpec


@dataclass
class ApplyResult:
    """What `queues apply` did: the queues it created and those already there."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


def apply_queues(client: Client, specs: Sequence[QueueSpec], dry_run: bool = False) -> ApplyResult:
    """Create the declared queues that are missing; change nothing else.

    Raises ServerError when the server refuses or cannot be reached.
    """
    present = {str(q.get("name")) for q in client.get_queues()}
    result = ApplyResult()
    for spec in specs:
        if spec.name in present:
            result.existing.append(spec.name)
            continue
        if not dry_run:
            client.create_queue(spec.name, tags=spec.tags)
        result.created.append(spec.name)
    return result


@dataclass
class WorkerRow:
    """One registered agent as `ak-remote agents` shows it."""

    worker: str
    queues: list[str]
    task: str
    last_activity: str


def list_workers(client: Client) -> list[WorkerRow]:
    """Registered workers with the names of their queues and their current task."""
    names = {str(q.get("id")): str(q.get("name")) for q in client.get_queues()}
    rows = []
    for worker in client.get_workers():
        queues = [_queue_name(q, names) for q in worker.get("queues") or []]
        task = worker.get("task") or {}
        rows.append(
            WorkerRow(
                worker=str(worker.get("id") or worker.get("key") or "?"),
                queues=queues,
                task=str(task.get("id") or "") if isinstance(task, dict) else str(task),
                last_activity=str(worker.get("last_activity_time") or ""),
            )
        )
    return rows


def _queue_name(entry: Any, names: dict[str, str]) -> str:
    queue_id = str(entry.get("id") if isinstance(entry, dict) else entry)
    return names.get(queue_id, str(entry.get("name") if isinstance(entry, dict) else queue_id))
