"""In-memory server state: the documents clearml-server keeps in MongoDB/Elasticsearch/Redis.

Documents are plain JSON-like dicts shaped as the API returns them, so tests can read them
directly (``emulator.state.tasks[task_id]["status"]``).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

COMPANY_ID = "emulator-company"
USER_ID = "emulator-user"
USER_NAME = "Emulator User"

Doc = dict[str, Any]


def new_id() -> str:
    """A 32-hex id, the form clearml-server gives its objects."""
    return uuid.uuid4().hex


def now_iso() -> str:
    """A UTC timestamp in the ISO form the server's JSON carries."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class ServerState:
    """Everything the emulated server stores; guard changes with ``lock``."""

    tasks: dict[str, Doc] = field(default_factory=dict)
    projects: dict[str, Doc] = field(default_factory=dict)
    queues: dict[str, Doc] = field(default_factory=dict)
    models: dict[str, Doc] = field(default_factory=dict)
    workers: dict[str, Doc] = field(default_factory=dict)
    # task id -> events in arrival order (scalars, logs, plots, debug images)
    events: dict[str, list[Doc]] = field(default_factory=dict)
    # fileserver: percent-decoded path (leading "/") -> bytes
    files: dict[str, bytes] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def task_events(self, task_id: str, event_type: str | None = None) -> list[Doc]:
        """Events of one task, optionally of one type (``training_stats_scalar``, ``log``...)."""
        with self.lock:
            events = list(self.events.get(task_id, []))
        if event_type is None:
            return events
        return [e for e in events if e.get("type") == event_type]

    def project_by_name(self, name: str) -> Doc | None:
        """The project with exactly this (full) name, or None."""
        with self.lock:
            return next((p for p in self.projects.values() if p["name"] == name), None)

    def queue_by_name(self, name: str) -> Doc | None:
        """The queue with exactly this name, or None."""
        with self.lock:
            return next((q for q in self.queues.values() if q["name"] == name), None)
