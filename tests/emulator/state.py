"""Server state: the documents clearml-server keeps in MongoDB/Elasticsearch/Redis.

Documents are plain JSON-like dicts shaped as the API returns them, so tests can read them
directly (``emulator.state.tasks[task_id]["status"]``).

With a state directory (``--state-dir``) the state outlives the process, as a real server's
databases do: :meth:`ServerState.save` writes ``state.json`` atomically (the emulator calls it
at most every half second while calls change the state, and on stop) and stored files are
written through to ``files/`` as they arrive; :meth:`ServerState.load` reads both back.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.parse
import uuid
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

COMPANY_ID = "emulator-company"
COMPANY_NAME = "emulator"
USER_ID = "emulator-user"
USER_NAME = "Emulator User"
STATE_FILE = "state.json"
FILES_DIR = "files"

Doc = dict[str, Any]


def new_id() -> str:
    """A 32-hex id, the form clearml-server gives its objects."""
    return uuid.uuid4().hex


def now_iso() -> str:
    """A UTC timestamp in the ISO form the server's JSON carries."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def default_user() -> Doc:
    """The backend document of the emulator's single user."""
    return {
        "id": USER_ID,
        "name": USER_NAME,
        "given_name": USER_NAME.split()[0],
        "family_name": USER_NAME.split()[-1],
        "company": COMPANY_ID,
        "created": "2026-01-01T00:00:00.000+00:00",
        "preferences": {},
    }


class FileStore(MutableMapping[str, bytes]):
    """The fileserver's files by path; written through to ``root`` when it is set."""

    def __init__(self, root: Path | None = None) -> None:
        self._data: dict[str, bytes] = {}
        self.root = root
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)
            for item in root.rglob("*"):
                if item.is_file() and not item.name.endswith(".partial"):
                    key = "/" + urllib.parse.unquote(item.relative_to(root).as_posix())
                    self._data[key] = item.read_bytes()

    def _disk_path(self, key: str) -> Path:
        assert self.root is not None
        # Quoted, so that no stored path can climb out of the folder ("..") or clash.
        quoted = "/".join(urllib.parse.quote(part, safe="") for part in key.strip("/").split("/"))
        return self.root / quoted

    def __getitem__(self, key: str) -> bytes:
        return self._data[key]

    def __setitem__(self, key: str, value: bytes) -> None:
        self._data[key] = value
        if self.root is not None:
            path = self._disk_path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            partial.write_bytes(value)
            os.replace(partial, path)

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        if self.root is not None:
            self._disk_path(key).unlink(missing_ok=True)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


# The parts of the state saved to state.json (files are saved as files).
_SAVED = (
    "tasks",
    "projects",
    "queues",
    "models",
    "workers",
    "events",
    "users",
    "metric_positions",
    "task_update_ts",
    "secrets",
)


@dataclass
class ServerState:
    """Everything the emulated server stores; guard changes with ``lock``."""

    tasks: dict[str, Doc] = field(default_factory=dict)
    projects: dict[str, Doc] = field(default_factory=dict)
    queues: dict[str, Doc] = field(default_factory=dict)
    models: dict[str, Doc] = field(default_factory=dict)
    workers: dict[str, Doc] = field(default_factory=dict)
    # task (or model) id -> events in arrival order (scalars, logs, plots, debug images)
    events: dict[str, list[Doc]] = field(default_factory=dict)
    # fileserver: percent-decoded path (leading "/") -> bytes
    files: MutableMapping[str, bytes] = field(default_factory=FileStore)
    # backend user documents (name, preferences...) by id: the emulator's single user
    users: dict[str, Doc] = field(default_factory=lambda: {USER_ID: default_user()})
    # json [task, metric, variant] -> [iteration, timestamp] of the event behind last_metrics' value
    metric_positions: dict[str, list[int]] = field(default_factory=dict)
    # task id -> time.time() of its last ping/worker report (is a worker still running it?)
    task_update_ts: dict[str, float] = field(default_factory=dict)
    # server-side secrets that a restart keeps (the token signing key)
    secrets: dict[str, str] = field(default_factory=dict)
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

    # ---------------------------------------------------------------- persistence
    def save(self, directory: Path) -> None:
        """Write the documents to ``directory/state.json`` (atomically)."""
        with self.lock:
            text = json.dumps({name: getattr(self, name) for name in _SAVED})
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / (STATE_FILE + ".partial")
        partial.write_text(text)
        os.replace(partial, directory / STATE_FILE)

    @classmethod
    def load(cls, directory: Path) -> ServerState:
        """The state saved in ``directory`` (empty when there is none), its files written
        through to ``directory/files`` from now on."""
        state = cls(files=FileStore(directory / FILES_DIR))
        saved = directory / STATE_FILE
        if saved.is_file():
            data = json.loads(saved.read_text())
            for name in _SAVED:
                if name in data:
                    setattr(state, name, data[name])
        return state
