"""Following runs: which runs a command means, their status, their logs, stopping them, waiting."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

from ak_remote.clearml_api import Client, Doc, ServerUnavailable, last_metric_values
from ak_remote.contract import (
    FINAL_STATUSES,
    QUEUED,
    SWEEP_TAG_PREFIX,
    is_task_id,
    is_template,
)
from ak_remote.errors import UsageError, WaitTimeout

STATUS_FIELDS = [
    "id",
    "name",
    "status",
    "status_message",
    "status_reason",
    "project",
    "tags",
    "system_tags",
    "execution.queue",
    "last_worker",
    "started",
    "completed",
    "created",
    "last_update",
    "last_metrics",
]


def check_task_ids(ids: Sequence[str]) -> list[str]:
    """Task ids as typed: 32 hex characters each. Raises UsageError otherwise."""
    result = []
    for raw in ids:
        text = raw.strip().lower()
        if not is_task_id(text):
            raise UsageError(
                f"{raw!r} is not a task id", "task ids are 32 hex characters, as `launch` prints"
            )
        if text not in result:
            result.append(text)
    return result


def select_tasks(
    client: Client,
    ids: Sequence[str] = (),
    sweep: str | None = None,
    project: str | None = None,
    fields: Sequence[str] | None = STATUS_FIELDS,
    limit: int | None = None,
) -> list[Doc]:
    """The runs meant by ids, a sweep id or a project (templates excluded), oldest first.

    Raises UsageError for unknown ids, an empty sweep or an unknown project.
    """
    given = sum(bool(x) for x in (ids, sweep, project))
    if given != 1:
        raise UsageError(
            "pick runs by ids, --sweep ID or --project NAME (one of them)",
            "for example: --sweep sw-1a2b3c4d (printed by `ak-remote launch`)",
        )
    if ids:
        wanted = check_task_ids(ids)
        tasks = client.get_tasks(ids=wanted, only_fields=fields)
        found = {str(t["id"]) for t in tasks}
        missing = [i for i in wanted if i not in found]
        if missing:
            raise UsageError(
                f"no such task: {', '.join(missing)}", "check the ids `ak-remote launch` printed"
            )
        order = {task_id: n for n, task_id in enumerate(wanted)}
        return sorted(tasks, key=lambda t: order[str(t["id"])])
    if sweep:
        tag = sweep if sweep.startswith(SWEEP_TAG_PREFIX) else f"{SWEEP_TAG_PREFIX}{sweep}"
        tasks = [
            t
            for t in client.get_tasks(tags=[tag], only_fields=fields)
            if tag in (t.get("tags") or [])
        ]
        if not tasks:
            raise UsageError(f"no runs in sweep {sweep!r}", "the sweep id is printed by `launch`")
        return sorted(tasks, key=lambda t: str(t.get("created") or ""))
    assert project is not None
    project_id = client.find_project(project)
    if project_id is None:
        raise UsageError(f"no project {project!r} on the server", "check the name in the Web UI")
    tasks = [
        t
        for t in client.get_tasks(
            project=project_id, only_fields=fields, order_by=["-created"], limit=limit
        )
        if not is_template(t)
    ]
    tasks = tasks[:limit] if limit else tasks
    return sorted(tasks, key=lambda t: str(t.get("created") or ""))


def parse_time(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def metric_rank(name: str) -> tuple[int, str]:
    """Sort key for metrics: test results first, then validation, then the rest; checks last."""
    low = name.lower()
    if "export_" in low:
        return (3, name)
    if "test" in low:
        return (0, name)
    if "val" in low:
        return (1, name)
    return (2, name)


def key_metrics(metrics: Mapping[str, float], limit: int = 3) -> dict[str, float]:
    """The few metrics worth a status line (single values shown without "Summary/")."""
    ranked = sorted(metrics, key=metric_rank)[:limit]
    return {name.removeprefix("Summary/"): metrics[name] for name in ranked}


@dataclass
class RunStatus:
    """What `status` shows for one run."""

    id: str
    name: str
    status: str
    message: str
    queue: str
    worker: str
    runtime_s: float | None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "message": self.message,
            "queue": self.queue,
            "worker": self.worker,
            "runtime_s": self.runtime_s,
            "metrics": self.metrics,
        }


def run_statuses(
    client: Client, tasks: Sequence[Doc], queues: Mapping[str, str] | None = None
) -> list[RunStatus]:
    """Status rows for tasks (queue ids named from one queues.get_all)."""
    if queues is None:
        needs_queue = any((t.get("execution") or {}).get("queue") for t in tasks)
        queues = (
            {str(q["id"]): str(q.get("name")) for q in client.get_queues()} if needs_queue else {}
        )
    now = datetime.now(timezone.utc)
    rows = []
    for task in tasks:
        started = parse_time(task.get("started"))
        ended = parse_time(task.get("completed"))
        status = str(task.get("status") or "unknown")
        runtime = None
        if started:
            end = ended if (ended and status in FINAL_STATUSES) else now
            runtime = (end - started).total_seconds()
        queue_id = str((task.get("execution") or {}).get("queue") or "")
        rows.append(
            RunStatus(
                id=str(task["id"]),
                name=str(task.get("name") or ""),
                status=status,
                message=str(task.get("status_message") or task.get("status_reason") or ""),
                queue=queues.get(queue_id, queue_id),
                worker=str(task.get("last_worker") or ""),
                runtime_s=runtime,
                metrics=last_metric_values(task),
            )
        )
    return rows


# How long following runs (--wait, logs --follow) rides out a server that does not answer
# (a restart of clearml-server takes a minute or two) before it gives up; the runs go on.
DEFAULT_OUTAGE_S = 300.0

T = TypeVar("T")


class Outage:
    """Rides out a ClearML server that stops answering while runs are followed.

    The runs do not need this process: they go on on their agents. So a poll that finds the
    server down (ServerUnavailable: its retries ran out) is said once and tried again at the
    next poll, quietly (no line per retry), until the server answers or `limit` seconds have
    passed; then ServerUnavailable says the runs go on and how to follow them.
    """

    def __init__(
        self,
        client: Client,
        ids: Sequence[str],
        limit: float = DEFAULT_OUTAGE_S,
        say: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.ids = list(ids)
        self.limit = limit
        self.say = say or (lambda _text: None)
        self.clock = clock
        self.since: float | None = None
        self._on_retry = client.on_retry

    def poll(self, read: Callable[[], T]) -> T | None:
        """`read()`, or None while the server is down. Raises ServerUnavailable after `limit`."""
        try:
            value = read()
        except ServerUnavailable as exc:
            now = self.clock()
            if self.since is None:
                self.since = now
                self.client.on_retry = None  # one line for the outage, not one per retry
                self.say(
                    f"the ClearML server does not answer ({exc.message}); the runs go on on "
                    f"their agents. Trying again for up to {self.limit:g} s..."
                )
            elif now - self.since > self.limit:
                self.client.on_retry = self._on_retry
                raise ServerUnavailable(
                    f"the ClearML server has not answered for {now - self.since:.0f} s; "
                    "stopped waiting. The runs go on on their agents",
                    "follow them once the server is back: ak-remote status " + " ".join(self.ids),
                ) from None
            return None
        if self.since is not None:
            self.say(f"the ClearML server answers again (after {self.clock() - self.since:.0f} s)")
            self.since = None
            self.client.on_retry = self._on_retry
        return value


def wait(
    client: Client,
    ids: Sequence[str],
    interval: float = 5.0,
    on_change: Callable[[list[RunStatus]], None] | None = None,
    timeout: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    outage: Outage | None = None,
) -> list[RunStatus]:
    """Poll until every run is final (one tasks.get_all per poll); returns their statuses.

    Calls `on_change` whenever a status changes; rides out a server outage with `outage`
    (default: DEFAULT_OUTAGE_S, silently). Raises WaitTimeout on timeout, ServerUnavailable
    when the server stays down longer than the outage allows.
    """
    started = time.monotonic()
    outage = outage or Outage(client, ids)
    queues: dict[str, str] | None = None
    last: dict[str, str] = {}
    while True:
        if queues is None:
            found = outage.poll(client.get_queues)
            queues = {str(q["id"]): str(q.get("name")) for q in found} if found else None
        answered = outage.poll(lambda: client.get_tasks(ids=list(ids), only_fields=STATUS_FIELDS))
        if answered is None:
            if timeout is not None and time.monotonic() - started > timeout:
                raise WaitTimeout(
                    f"runs still not finished after {int(timeout)} s",
                    "they keep running; follow them with `ak-remote status`",
                )
            sleep(interval)
            continue
        tasks = answered
        order = {task_id: n for n, task_id in enumerate(ids)}
        tasks.sort(key=lambda t: order.get(str(t["id"]), 0))
        rows = run_statuses(client, tasks, queues or {})
        current = {row.id: row.status for row in rows}
        if current != last and on_change is not None:
            on_change(rows)
        last = current
        if rows and all(row.final for row in rows):
            return rows
        if timeout is not None and time.monotonic() - started > timeout:
            raise WaitTimeout(
                f"runs still not finished after {int(timeout)} s",
                "they keep running; follow them with `ak-remote status`",
            )
        sleep(interval)


def read_log(
    client: Client,
    task_id: str,
    emit: Callable[[str], None],
    follow: bool = False,
    interval: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    outage: Outage | None = None,
) -> str:
    """Print a run's console log (and with follow, keep printing until it ends, riding out a
    server outage with `outage`); returns its status."""
    task_id = check_task_ids([task_id])[0]
    status = str(client.get_task(task_id).get("status") or "")
    outage = outage or Outage(client, [task_id])
    last_ts: int | None = None
    seen_at_last: set[str] = set()
    while True:
        while True:
            # The server pages by "after this timestamp"; ask from one ms earlier and drop what
            # was seen, so lines sharing the boundary millisecond are not lost.
            since = None if last_ts is None else last_ts - 1

            def page(since: int | None = since) -> list[Doc]:
                return client.task_log(task_id, from_timestamp=since)

            # Only a follower rides out an outage; a one-off read reports it.
            read = outage.poll(page) if follow else page()
            if read is None:  # the server is down: try again at the next poll
                break
            events = read
            fresh = []
            for event in events:
                ts = int(event.get("timestamp") or 0)
                msg = str(event.get("msg") or "")
                key = f"{ts}:{event.get('worker', '')}:{msg}"
                if last_ts is not None and (
                    ts < last_ts or (ts == last_ts and key in seen_at_last)
                ):
                    continue
                if last_ts is None or ts > last_ts:
                    last_ts, seen_at_last = ts, set()
                seen_at_last.add(key)
                fresh.append(msg)
            for msg in fresh:
                emit(msg.rstrip("\n"))
            if len(events) < 500 or not fresh:
                break
        if not follow or (status in FINAL_STATUSES and outage.since is None):
            return status
        sleep(interval)
        task = outage.poll(lambda: client.get_task(task_id))
        status = str(task.get("status") or "") if task is not None else status


@dataclass
class AbortResult:
    stopped: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    already_final: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


def abort(client: Client, ids: Sequence[str], delete: bool = False) -> AbortResult:
    """Stop queued and running runs (dequeuing queued ones first); with delete, remove them.

    Runs already finished are left alone (or deleted, with delete).
    """
    wanted = check_task_ids(ids)
    tasks = select_tasks(client, ids=wanted, fields=["id", "status"])
    result = AbortResult()
    if delete:
        for task in tasks:
            if task.get("status") == QUEUED:
                client.dequeue(str(task["id"]))
        refused = client.delete_many(wanted, force=True)
        result.refused = {i: "the server refused to delete it" for i in refused}
        result.deleted = [i for i in wanted if i not in refused]
        return result
    active = []
    for task in tasks:
        status = str(task.get("status"))
        if status in FINAL_STATUSES:
            result.already_final.append(str(task["id"]))
            continue
        if status == QUEUED:
            client.dequeue(str(task["id"]))
        active.append(str(task["id"]))
    if active:
        result.refused = client.stop_many(active)  # each marked (contract.ABORTED_KEY)
        result.stopped = [i for i in active if i not in result.refused]
    return result
