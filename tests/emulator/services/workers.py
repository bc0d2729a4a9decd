"""workers.*: registration, status reports, expiry.

Reproduces clearml-server's ``apiserver/services/workers.py`` and ``bll/workers``: a worker is
registered on its first status report (the server's default ``auto_register``) and forgotten
after ``timeout`` seconds (600 by default) without a report; a report naming an unknown task
answers 400/101 and a known one marks the task as run by that worker; ``get_all`` honours
``last_seen``; queues may be given by name or id.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from tests.emulator import errors
from tests.emulator.services.base import Service
from tests.emulator.services.tasks import TasksService
from tests.emulator.state import COMPANY_ID, USER_ID, USER_NAME, ServerState, now_iso

# Seconds without a status report after which the server forgets a worker (default timeout).
DEFAULT_WORKER_TIMEOUT = 600


class WorkersService(Service):
    """workers.register/unregister/status_report/get_all."""

    def __init__(self, state: ServerState, tasks: TasksService) -> None:
        super().__init__(state, tasks.scrolls)
        # status reports mark tasks as run by a worker (tasks.stop reads it)
        self.tasks = tasks

    def _expire_workers(self) -> None:
        now = time.time()
        for worker_id, worker in list(self.state.workers.items()):
            if now - worker["last_report_ts"] > worker["timeout"]:
                del self.state.workers[worker_id]

    def _queue_ids(self, names_or_ids: list[str]) -> list[str]:
        ids = []
        for value in names_or_ids:
            queue = self.state.queues.get(value) or self.state.queue_by_name(value)
            ids.append(queue["id"] if queue else value)
        return ids

    def ep_workers__register(self, req: dict[str, Any]) -> dict[str, Any]:
        self._expire_workers()
        now = now_iso()
        worker = self.state.workers.get(req["worker"]) or {
            "id": req["worker"],
            "user": {"id": USER_ID, "name": USER_NAME},
            "company": {"id": COMPANY_ID, "name": "emulator"},
            "register_time": now,
            "ip": "127.0.0.1",
            "task": None,
            "queue": None,
        }
        worker.update(
            queues=self._queue_ids(req.get("queues") or []),
            tags=req.get("tags", []),
            system_tags=req.get("system_tags", []),
            timeout=req.get("timeout") or DEFAULT_WORKER_TIMEOUT,
            last_activity_time=now,
            last_report_time=now,
            last_report_ts=time.time(),
        )
        self.state.workers[worker["id"]] = worker
        return {}

    def ep_workers__unregister(self, req: dict[str, Any]) -> dict[str, Any]:
        if self.state.workers.pop(req["worker"], None) is None:
            raise errors.WorkerNotRegistered(worker=req["worker"])
        return {}

    def ep_workers__status_report(self, req: dict[str, Any]) -> dict[str, Any]:
        self._expire_workers()
        if req["worker"] not in self.state.workers:
            # The server registers a worker on its first report.
            self.ep_workers__register({"worker": req["worker"], "queues": req.get("queues")})
        worker = self.state.workers[req["worker"]]
        now = now_iso()
        worker.update(last_report_time=now, last_report_ts=time.time())
        if req.get("queues") is not None:
            worker["queues"] = self._queue_ids(req["queues"])
        task_id = req.get("task")
        if task_id and task_id not in self.state.tasks:
            raise errors.InvalidTaskId(id=task_id)
        if task_id:
            task = self.state.tasks[task_id]
            worker["task"] = {
                "id": task_id,
                "name": task["name"],
                "last_iteration": task.get("last_iteration"),
            }
            worker["last_activity_time"] = now
            task["last_worker"] = worker["id"]
            task["last_worker_report"] = now
            task["last_update"] = now
            self.state.task_update_ts[task["id"]] = time.time()
        else:
            worker["task"] = None
        worker["queue"] = req.get("queue")
        worker["machine_stats"] = req.get("machine_stats", {})
        return {}

    def ep_workers__get_all(self, req: dict[str, Any]) -> dict[str, Any]:
        self._expire_workers()
        workers = []
        for worker in self.state.workers.values():
            if req.get("last_seen") and time.time() - worker["last_report_ts"] > req["last_seen"]:
                continue
            out = {k: copy.deepcopy(v) for k, v in worker.items() if not k.endswith("_ts")}
            out["queues"] = [
                {
                    "id": q,
                    "name": self.state.queues[q]["name"],
                    "num_tasks": len(self.state.queues[q]["entries"]),
                }
                for q in worker["queues"]
                if q in self.state.queues
            ]
            workers.append(out)
        return {"workers": workers}

    def ep_workers__get_activity_report(self, req: dict[str, Any]) -> dict[str, Any]:
        """The workers page's activity chart. The emulator keeps no history: one sample, now."""
        if req["to_date"] < req["from_date"] or req["interval"] < 1:
            raise errors.ValidationError("to_date before from_date, or interval < 1")
        self._expire_workers()
        workers = list(self.state.workers.values())
        date = int(req["to_date"])
        return {
            "total": {"dates": [date], "counts": [len(workers)]},
            "active": {"dates": [date], "counts": [sum(1 for w in workers if w.get("task"))]},
        }
