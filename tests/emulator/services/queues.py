"""queues.*: FIFO queues, the default queue, handing tasks to workers.

Reproduces clearml-server's ``apiserver/services/queues.py`` and ``bll/queue``: entries are
kept in arrival order and ``get_next_task`` pops the head; the default queue is the one whose
system tags hold ``default`` (none: 400/707, several: 400/708); names are unique (400/801);
``delete`` of a non-empty queue needs ``force`` (400/702) and returns its queued tasks to their
pre-enqueue status; ``add_task`` of a task already in the queue answers 400/706.
"""

from __future__ import annotations

import copy
import time
from datetime import datetime
from typing import Any

from tests.emulator import errors
from tests.emulator.services.base import CREATED, QUEUED, STOPPED, Service
from tests.emulator.services.query import QUEUE_QUERY, select, sorted_tags
from tests.emulator.state import COMPANY_ID, USER_ID, Doc, new_id, now_iso


class QueuesService(Service):
    """queues.create/get_all/get_by_id/get_default/update/delete/add_task/remove_task/...."""

    def new_queue(
        self, name: str, tags: list[str] | None = None, system_tags: list[str] | None = None
    ) -> Doc:
        if not name.strip():
            raise errors.ValidationError("queue name is empty")
        if self.state.queue_by_name(name) is not None:
            raise errors.ExpectedUniqueData("Queue with the same name already exists", name=name)
        now = now_iso()
        queue: Doc = {
            "id": new_id(),
            "name": name,
            "display_name": name,
            "company": COMPANY_ID,
            "user": USER_ID,
            "created": now,
            "last_update": now,
            "tags": list(tags or []),
            "system_tags": list(system_tags or []),
            "entries": [],
            "metadata": {},
        }
        self.state.queues[queue["id"]] = queue
        return queue

    def default_queue(self) -> Doc:
        defaults = [q for q in self.state.queues.values() if "default" in q["system_tags"]]
        if not defaults:
            raise errors.NoDefaultQueue()
        if len(defaults) > 1:
            raise errors.APIError(400, 708, "More than one queue is tagged as the default queue")
        return defaults[0]

    def ep_queues__create(self, req: dict[str, Any]) -> dict[str, Any]:
        queue = self.new_queue(req["name"], req.get("tags"), req.get("system_tags"))
        return {"id": queue["id"]}

    def ep_queues__get_by_id(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"queue": copy.deepcopy(self._queue(req["queue"]))}

    def ep_queues__get_all(self, req: dict[str, Any]) -> dict[str, Any]:
        queues, extra = select(self.state.queues.values(), req, QUEUE_QUERY, self.scrolls)
        return {"queues": sorted_tags(queues), **extra}

    def ep_queues__get_all_ex(self, req: dict[str, Any]) -> dict[str, Any]:
        queues, extra = select(
            self.state.queues.values(), req, QUEUE_QUERY, self.scrolls, resolve=self.resolve
        )
        return {"queues": sorted_tags(queues), **extra}

    def ep_queues__get_default(self, req: dict[str, Any]) -> dict[str, Any]:
        queue = self.default_queue()
        return {"id": queue["id"], "name": queue["name"]}

    def ep_queues__update(self, req: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(req["queue"])
        fields: dict[str, Any] = {k: req[k] for k in ("name", "tags", "system_tags") if k in req}
        queue.update(fields, last_update=now_iso())
        return {"updated": 1, "fields": fields}

    def ep_queues__delete(self, req: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(req["queue"])
        if queue["entries"] and not req.get("force"):
            raise errors.QueueNotEmpty("use force=true to delete", queue=queue["id"])
        for entry in queue["entries"]:
            task = self.state.tasks.get(entry["task"])
            if task and task["status"] == QUEUED:
                self._change_status(task, task.get("enqueue_status") or CREATED, force=True)
        del self.state.queues[queue["id"]]
        return {"deleted": 1}

    def ep_queues__add_task(self, req: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(req["queue"])
        self._task(req["task"])
        if any(e["task"] == req["task"] for e in queue["entries"]):
            raise errors.APIError(400, 706, "Task already queued", task=req["task"])
        queue["entries"].append({"task": req["task"], "added": now_iso()})
        return {"added": 1}

    def ep_queues__remove_task(self, req: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(req["queue"])
        before = len(queue["entries"])
        queue["entries"] = [e for e in queue["entries"] if e["task"] != req["task"]]
        if before == len(queue["entries"]):
            raise errors.InvalidQueueOrTaskNotQueued(task=req["task"], queue=queue["id"])
        return {"removed": 1}

    def ep_queues__get_num_entries(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"num": len(self._queue(req["queue"])["entries"])}

    def ep_queues__peek_task(self, req: dict[str, Any]) -> dict[str, Any]:
        entries = self._queue(req["queue"])["entries"]
        return {"task": entries[0]["task"] if entries else None}

    def ep_queues__get_next_task(self, req: dict[str, Any]) -> dict[str, Any]:
        queue = self._queue(req["queue"])
        entries = queue["entries"]
        if not entries or (req.get("task") and entries[0]["task"] != req["task"]):
            return {}
        entry = entries.pop(0)
        queue["last_update"] = now_iso()
        data: dict[str, Any] = {"entry": dict(entry)}
        task = self.state.tasks.get(entry["task"])
        if task is not None:
            if task["status"] == STOPPED:
                task["status"] = QUEUED
            if req.get("get_task_info"):
                data["task_info"] = {"company": task["company"], "user": task["user"]}
        return data

    def ep_queues__get_queue_metrics(self, req: dict[str, Any]) -> dict[str, Any]:
        """The queues page's charts. The emulator keeps no history: one sample per queue, now
        (its length, and how long its oldest entry has waited)."""
        wanted = req.get("queue_ids") or list(self.state.queues)
        now = time.time()
        out = []
        for queue_id in wanted:
            queue = self.state.queues.get(queue_id)
            if queue is None:
                out.append({"queue": queue_id})
                continue
            waits = [now - datetime.fromisoformat(e["added"]).timestamp() for e in queue["entries"]]
            out.append(
                {
                    "queue": queue_id,
                    "dates": [int(req.get("to_date") or now)],
                    "avg_waiting_times": [sum(waits) / len(waits) if waits else 0.0],
                    "queue_lengths": [len(queue["entries"])],
                }
            )
        return {"queues": out}
