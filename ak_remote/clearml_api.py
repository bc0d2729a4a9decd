"""The one narrow place where the launcher talks to the ClearML server.

Every request ak-remote makes on the laptop side goes through `Client`: one method per endpoint,
so the wire traffic is easy to read, count and test. It rides on the SDK's own
`clearml.backend_api.session.Session` (credentials from clearml.conf / CLEARML_* as usual, token
refresh, API version from the login token) but replaces the SDK's retry policy, which retries for
minutes and resends writes blindly, with a bounded one that is safe:

- reads are idempotent and retried on transient failures (5xx, reset connections, timeouts);
- writes are retried only after looking whether the lost attempt took effect (`find`), so a
  clone whose response was dropped is found by its launch token instead of being made twice.

Errors become `ServerError`s with a hint saying what to do. Nothing here imports TensorFlow, and
the SDK itself is imported only when the first request is made.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ak_remote.contract import (
    ABORTED_KEY,
    COMPLETED,
    IN_PROGRESS,
    QUEUED,
    encoded_uri,
    sha256_file,
)
from ak_remote.errors import ServerError, UsageError

T = TypeVar("T")
Doc = dict[str, Any]

# HTTP statuses worth retrying: the request may not have been processed, or may be again later.
TRANSIENT_STATUS = frozenset({500, 502, 503, 504, 509, 429})
# A task in one of these states was taken by enqueue (a lost answer is looked up by them).
TAKEN_BY_QUEUE = frozenset({QUEUED, IN_PROGRESS, COMPLETED})
CONFIG_HINT = "check CLEARML_API_HOST / clearml.conf, run `ak-remote doctor`"
CREDENTIALS_HINT = (
    "run `clearml-init`, or set CLEARML_API_HOST, CLEARML_API_ACCESS_KEY and "
    "CLEARML_API_SECRET_KEY; then `ak-remote doctor`"
)
# Page size for tasks.get_all; big enough that a 50-run sweep is one request.
PAGE_SIZE = 500


class TransientError(Exception):
    """A failure that may go away on retry (network trouble, 5xx)."""


class ApiError(ServerError):
    """The server answered and refused the request (4xx, or a 5xx that did not go away)."""

    def __init__(
        self, endpoint: str, code: int, subcode: int, msg: str, hint: str | None = None
    ) -> None:
        super().__init__(f"ClearML server refused {endpoint}: {msg} ({code}/{subcode})", hint)
        self.endpoint = endpoint
        self.code = code
        self.subcode = subcode
        self.server_message = msg


class ServerUnavailable(ServerError):
    """The server could not be reached or kept failing after retries."""


class Transport(Protocol):
    """Sends one API call; returns (HTTP status, envelope) or raises TransientError."""

    def __call__(self, endpoint: str, body: Mapping[str, Any]) -> tuple[int, Doc]: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently transient failures are retried."""

    attempts: int = 4  # tries in all, the first included
    backoff: float = 0.5  # seconds before the second try; doubles each time
    max_backoff: float = 8.0
    connect_timeout: float = 5.0
    read_timeout: float = 30.0

    def delays(self) -> list[float]:
        return [min(self.max_backoff, self.backoff * 2**i) for i in range(self.attempts - 1)]


class _NoMaintenanceWait:
    """The SDK's config, except that a 503 must not make it wait forever ("maintenance")."""

    def __init__(self, config: Any) -> None:
        self._config = config

    def get(self, key: str, default: Any = None) -> Any:
        if key == "api.http.wait_on_maintenance_forever":
            return False
        return self._config.get(key, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._config, name)


class SessionTransport:
    """Sends calls through a clearml `Session` (SDK credentials, token refresh, API version)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._session: Any = None

    def _connect(self) -> Any:
        if self._session is not None:
            return self._session
        try:
            from clearml.backend_api.session import Session
            from clearml.backend_api.session.defs import MissingConfigError
            from clearml.config import ConfigWrapper
        except ImportError as exc:  # pragma: no cover - clearml is a hard dependency
            raise ServerError(
                f"the clearml package is missing: {exc}", "pip install ak-remote"
            ) from None
        try:
            config: Any = _NoMaintenanceWait(ConfigWrapper._init())
            # No urllib3-level retries: this module decides what is safe to resend.
            session = Session(config=config, http_retries_config={"total": 0}, verbose=False)
        except MissingConfigError:
            raise ServerError("no ClearML credentials are configured", CREDENTIALS_HINT) from None
        except Exception as exc:  # noqa: BLE001 - login failures come as LoginError/ValueError/requests errors
            text = str(exc)
            host = _configured_host()
            if not _is_server_url(host) or re.search(
                r"InvalidSchema|MissingSchema|InvalidURL|No connection adapters", text
            ):
                # A typo in the address: no retry can fix it, so say so once.
                raise ServerError(
                    f"the ClearML server address {host!r} is not a URL",
                    "set CLEARML_API_HOST (or api.api_server in clearml.conf) to "
                    "http(s)://HOST:PORT",
                ) from None
            if re.search(r"error 40[13]", text):
                raise ServerError(
                    f"the ClearML server rejected the credentials: {text}", CREDENTIALS_HINT
                ) from None
            if re.search(r"Connection refused|NewConnectionError|Name or service|timed out", text):
                raise TransientError(f"cannot reach the ClearML server at {host}") from None
            raise TransientError(f"cannot log in to the ClearML server at {host}: {text}") from None
        timeouts = (self._policy.connect_timeout, self._policy.read_timeout)
        session._session_timeout = timeouts
        session._session_initial_timeout = timeouts
        self._session = session
        return session

    @property
    def session(self) -> Any:
        return self._connect()

    def __call__(self, endpoint: str, body: Mapping[str, Any]) -> tuple[int, Doc]:
        import requests

        session = self._connect()
        service, action = endpoint.split(".", 1)
        try:
            res = session.send_request(
                service, action, version=str(session.api_version), json=dict(body)
            )
        except requests.RequestException as exc:
            raise TransientError(describe_network_error(exc)) from None
        try:
            envelope = res.json()
        except ValueError:
            envelope = {"meta": {"result_msg": res.text[:200] or res.reason}}
        if not isinstance(envelope, dict):
            envelope = {"meta": {"result_msg": str(envelope)[:200]}}
        return int(res.status_code), envelope

    def host(self) -> str:
        return str(self._connect().host)


def describe_network_error(exc: Exception) -> str:
    """A short reason for a failed HTTP exchange (the full urllib3 chain helps nobody)."""
    import requests

    text = str(exc)
    if isinstance(exc, requests.Timeout) or "timed out" in text:
        return "timed out"
    if "Connection refused" in text:
        return "connection refused"
    if "RemoteDisconnected" in text or "Connection aborted" in text or "reset" in text:
        return "connection closed without a response"
    return f"{type(exc).__name__}: {text[:200]}"


def _is_server_url(host: str) -> bool:
    """Whether `host` is an http(s) URL with a host part (what the SDK can connect to)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(host)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in host


def _configured_host() -> str:
    """The API host the SDK would use (for messages); never the credentials."""
    try:
        from clearml.backend_api.session import Session

        return str(Session.get_api_server_host())
    except Exception:  # noqa: BLE001 - only for a message
        return "(unknown host)"


def queue_named(queues: Iterable[Doc], name: str, what: str = "queue", fixes: str = "") -> Doc:
    """The queue called exactly `name` among `queues` (a queues.get_all answer).

    Raises UsageError naming the queues that exist, then `fixes` (what else the user can do).
    """
    listed = list(queues)
    found = next((q for q in listed if q.get("name") == name), None)
    if found is None:
        names = ", ".join(sorted(str(q.get("name")) for q in listed)) or "(none)"
        raise UsageError(
            f"{what} {name!r} does not exist",
            f"existing queues: {names}" + (f"; {fixes}" if fixes else ""),
        )
    return found


class Client:
    """ClearML API client for the launcher: one method per endpoint, safe retries."""

    def __init__(
        self,
        transport: Transport | None = None,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.on_retry = on_retry  # told about each retry (the CLI prints it on stderr)
        self._session_transport = None if transport else SessionTransport(self.policy)
        self._transport: Transport = transport or self._session_transport  # type: ignore[assignment]
        self._sleep = sleep
        self.requests_sent = 0

    # -- core ---------------------------------------------------------------------------------

    def _pause(self, delay: float, what: str, error: Exception | None) -> None:
        if self.on_retry is not None:
            self.on_retry(f"ClearML server: {what} failed ({error}); retrying in {delay:g} s")
        self._sleep(delay)

    def _send_once(self, endpoint: str, body: Mapping[str, Any]) -> Doc:
        """One attempt: data on success, ApiError on refusal, TransientError on trouble."""
        self.requests_sent += 1
        status, envelope = self._transport(endpoint, body)
        meta = envelope.get("meta") or {}
        code = int(meta.get("result_code") or status)
        if 200 <= status < 300 and 200 <= code < 300:
            data = envelope.get("data")
            return data if isinstance(data, dict) else {}
        msg = str(meta.get("result_msg") or f"HTTP {status}")
        if status in TRANSIENT_STATUS or code in TRANSIENT_STATUS:
            raise TransientError(f"HTTP {status}: {msg}")
        if status == 401:
            raise ApiError(
                endpoint, code, int(meta.get("result_subcode") or 0), msg, CREDENTIALS_HINT
            )
        raise ApiError(endpoint, code, int(meta.get("result_subcode") or 0), msg)

    def _unavailable(self, endpoint: str, error: Exception, attempts: int) -> ServerUnavailable:
        return ServerUnavailable(
            f"the ClearML server did not answer {endpoint} after {attempts} "
            f"{'try' if attempts == 1 else 'tries'}: {error}",
            CONFIG_HINT,
        )

    def _retrying(
        self,
        what: str,
        attempt: Callable[[], T],
        look: Callable[[], T | None] | None = None,
        retries: bool = True,
        look_last: bool = False,
    ) -> T:
        """The one retry loop: `attempt()` until it does not raise TransientError.

        Pauses per the policy between tries. Before each retry (and after the last failure when
        `look_last`), `look()` may return a result, meaning an earlier try took effect. Raises
        ServerUnavailable when the tries run out.
        """
        delays = self.policy.delays() if retries else []
        last: Exception | None = None
        for number in range(len(delays) + 1):
            if number > 0:
                self._pause(delays[number - 1], what, last)
                found = self._look(look)
                if found is not None:
                    return found
            try:
                return attempt()
            except TransientError as exc:
                last = exc
        assert last is not None
        found = self._look(look) if look_last else None
        if found is not None:
            return found
        raise self._unavailable(what, last, len(delays) + 1)

    @staticmethod
    def _look(look: Callable[[], T | None] | None) -> T | None:
        if look is None:
            return None
        try:
            return look()
        except ServerUnavailable:
            return None  # cannot look now: the next try (or the error) tells

    def call(self, endpoint: str, body: Mapping[str, Any] | None = None) -> Doc:
        """An idempotent call (a read): retried on transient failures.

        Raises ApiError when refused, ServerUnavailable when retries run out.
        """
        request = dict(body or {})
        return self._retrying(endpoint, lambda: self._send_once(endpoint, request))

    def write(
        self,
        endpoint: str,
        body: Mapping[str, Any],
        find: Callable[[], T | None] | None,
        parse: Callable[[Doc], T],
    ) -> T:
        """A non-idempotent call: before each retry, `find()` looks whether it took effect.

        Without `find` the write is tried once. Raises ApiError when refused and
        ServerUnavailable when the server stays unreachable (the write may or may not exist).
        """
        # The last attempt may have taken effect after all: look once more before giving up.
        return self._retrying(
            endpoint,
            lambda: parse(self._send_once(endpoint, body)),
            look=find,
            retries=find is not None,
            look_last=True,
        )

    # -- hosts and links ----------------------------------------------------------------------

    def web_host(self) -> str:
        """The Web UI's base URL (from clearml.conf/CLEARML_WEB_HOST or derived from the API)."""
        from clearml.backend_api.session import Session

        try:
            return str(Session.get_app_server_host()).rstrip("/")
        except ValueError:
            return str(Session.get_api_server_host()).rstrip("/")

    def _web_app_before_2(self) -> bool:
        """Whether the server (so its web app) is 1.x; from the login token, unknown = current."""
        version = str(self.server_info().get("server_version") or "")
        major = version.split(".", 1)[0]
        return major.isdigit() and int(major) < 2

    def task_url(self, task: Mapping[str, Any]) -> str:
        """A task's page: `tasks/` in clearml-web 2.x (its `experiments/` only redirects)."""
        project = (task.get("project") or "*") if isinstance(task.get("project"), str) else "*"
        route = "experiments" if self._web_app_before_2() else "tasks"
        return f"{self.web_host()}/projects/{project}/{route}/{task['id']}/output/execution"

    def compare_url(self, task_ids: Sequence[str]) -> str:
        """The Web UI's comparison of the tasks, in the route the server's web app has.

        clearml-web 2.0 moved it to `compare-tasks`; its `compare-experiments` redirect drops
        `;ids=`, so the old route opens an empty comparison there. Older servers only have the
        old route. The version comes from the login token; unknown means a current server.
        """
        ids = ",".join(task_ids)
        if self._web_app_before_2():
            return f"{self.web_host()}/projects/*/compare-experiments;ids={ids}"
        return f"{self.web_host()}/projects/*/compare-tasks;ids={ids}/scalars/graph"

    # -- projects -----------------------------------------------------------------------------

    def get_projects(self, name: str | None = None) -> list[Doc]:
        """projects.get_all, optionally by exact name."""
        body: Doc = {"only_fields": ["id", "name"]}
        if name is not None:
            body["name"] = f"^{re.escape(name)}$"
        data = self.call("projects.get_all", body)
        projects = list(data.get("projects") or [])
        return [p for p in projects if name is None or p.get("name") == name]

    def find_project(self, name: str) -> str | None:
        """The id of the project called `name`, or None."""
        found = self.get_projects(name)
        return str(found[0]["id"]) if found else None

    def ensure_project(self, name: str, description: str = "") -> str:
        """The id of the project called `name`, created when missing."""
        existing = self.find_project(name)
        if existing:
            return existing
        return self.write(
            "projects.create",
            {"name": name, "description": description or "created by ak-remote"},
            find=lambda: self.find_project(name),
            parse=lambda data: str(data["id"]),
        )

    # -- tasks --------------------------------------------------------------------------------

    def get_tasks(
        self,
        ids: Sequence[str] | None = None,
        project: str | None = None,
        tags: Sequence[str] | None = None,
        system_tags: Sequence[str] | None = None,
        status: Sequence[str] | None = None,
        only_fields: Sequence[str] | None = None,
        order_by: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[Doc]:
        """tasks.get_all with filters, paging through the results (limit: at most that many)."""
        body: Doc = {}
        if ids is not None:
            if not ids:
                return []
            body["id"] = list(ids)
        if project is not None:
            body["project"] = [project]
        if tags:
            body["tags"] = list(tags)
        if system_tags:
            body["system_tags"] = list(system_tags)
        if status:
            body["status"] = list(status)
        if only_fields:
            body["only_fields"] = sorted(set(only_fields) | {"id"})
        if order_by:
            body["order_by"] = list(order_by)
        results: list[Doc] = []
        page = 0
        page_size = min(PAGE_SIZE, limit) if limit else PAGE_SIZE
        while True:
            data = self.call("tasks.get_all", {**body, "page": page, "page_size": page_size})
            batch = list(data.get("tasks") or [])
            results.extend(batch)
            if len(batch) < page_size or (limit and len(results) >= limit):
                break
            page += 1
        return results[:limit] if limit else results

    def get_task(self, task_id: str) -> Doc:
        """tasks.get_by_id. Raises ApiError (with a hint) for an unknown id."""
        try:
            data = self.call("tasks.get_by_id", {"task": task_id})
        except ApiError as exc:
            if exc.code == 400:
                raise ApiError(
                    exc.endpoint,
                    exc.code,
                    exc.subcode,
                    f"no task {task_id!r}",
                    "check the id with `ak-remote status --project PROJECT`",
                ) from None
            raise
        return dict(data.get("task") or {})

    def find_task_by_system_tag(self, tag: str) -> str | None:
        found = self.get_tasks(system_tags=[tag], only_fields=["id", "system_tags"])
        found = [t for t in found if tag in (t.get("system_tags") or [])]
        return str(found[0]["id"]) if found else None

    def create_task(self, body: Mapping[str, Any], find: Callable[[], str | None]) -> str:
        """tasks.create; `find` looks for the task (e.g. by a unique tag) before a retry."""
        return self.write("tasks.create", body, find=find, parse=lambda data: str(data["id"]))

    def edit_task(self, task_id: str, fields: Mapping[str, Any], force: bool = False) -> None:
        """tasks.edit: replaces the given fields (an edit is idempotent, so it is retried)."""
        body: Doc = {"task": task_id, **fields}
        if force:
            body["force"] = True
        self.call("tasks.edit", body)

    def set_runtime_property(self, task: Doc, key: str, value: str | None) -> None:
        """Set (or, with None, remove) one runtime property of `task` (a document read with its
        `runtime`), keeping the others: tasks.edit replaces the whole mapping."""
        runtime = {str(k): v for k, v in (task.get("runtime") or {}).items()}
        if value is None and key not in runtime:
            return
        if value is None:
            runtime.pop(key)
        else:
            runtime[key] = value
        self.edit_task(str(task["id"]), {"runtime": runtime}, force=True)

    def clone_task(self, source_id: str, launch_token: str, overrides: Mapping[str, Any]) -> str:
        """tasks.clone with the overrides (new_task_*, execution_overrides) in one request.

        `launch_token` becomes a system tag of the clone, so that a retry after a lost response
        finds the clone instead of making a second one.
        """
        body: Doc = {"task": source_id, **overrides}
        system_tags = list(body.get("new_task_system_tags") or [])
        if launch_token not in system_tags:
            system_tags.append(launch_token)
        body["new_task_system_tags"] = system_tags
        return self.write(
            "tasks.clone",
            body,
            find=lambda: self.find_task_by_system_tag(launch_token),
            parse=lambda data: str(data["id"]),
        )

    def enqueue_many(self, task_ids: Sequence[str], queue_id: str) -> tuple[list[str], Doc]:
        """tasks.enqueue_many in one request; returns (enqueued ids, {id: error message}).

        Before a retry it looks which tasks are already queued, and resends only the others.
        """
        pending = list(task_ids)
        done: list[str] = []

        def look() -> tuple[list[str], Doc] | None:
            nonlocal pending
            states = self.get_tasks(ids=pending, only_fields=["status", "execution.queue"])
            queued = {str(t["id"]) for t in states if t.get("status") in TAKEN_BY_QUEUE}
            done.extend(i for i in pending if i in queued)
            pending = [i for i in pending if i not in queued]
            return (done, {}) if not pending else None

        def attempt() -> tuple[list[str], Doc]:
            data = self._send_once("tasks.enqueue_many", {"ids": pending, "queue": queue_id})
            failed: Doc = {}
            for item in data.get("failed") or []:
                error = item.get("error") or {}
                failed[str(item.get("id"))] = str(error.get("msg") or error)
            done.extend(str(item["id"]) for item in data.get("succeeded") or [])
            return done, failed

        return self._retrying("tasks.enqueue_many", attempt, look=look)

    def dequeue_many(self, task_ids: Sequence[str]) -> None:
        """tasks.dequeue_many (retried: dequeuing twice is harmless)."""
        if task_ids:
            self.call("tasks.dequeue_many", {"ids": list(task_ids)})

    def delete_many(self, task_ids: Sequence[str], force: bool = True) -> list[str]:
        """tasks.delete_many; returns the ids the server could not delete (retried: idempotent)."""
        if not task_ids:
            return []
        data = self.call("tasks.delete_many", {"ids": list(task_ids), "force": force})
        return [str(item.get("id")) for item in data.get("failed") or []]

    def mark_failed(self, task_id: str, reason: str, message: str) -> None:
        """tasks.failed, forced (whatever the task's status; idempotent, so retried)."""
        self.call(
            "tasks.failed",
            {
                "task": task_id,
                "force": True,
                "status_reason": reason,
                "status_message": message[:1000],
            },
        )

    def register_output_model(self, task: Mapping[str, Any], fields: Mapping[str, Any]) -> str:
        """models.create for `task`, then list the model among the task's outputs as "model".

        A finished task refuses `tasks.add_or_update_model` (the SDK's OutputModel too), hence
        a forced edit of the task's `models`, which is idempotent and so safe to retry. The
        create is not idempotent: it is sent once, never retried blindly.
        """
        task_id = str(task["id"])
        body = {"task": task_id, "project": str(task.get("project")), "ready": True, **fields}
        if isinstance(body.get("uri"), str):
            body["uri"] = encoded_uri(body["uri"])  # a URL curl and browsers take as it is
        model_id = self.write("models.create", body, find=None, parse=lambda d: str(d["id"]))
        current = self.get_task(task_id).get("models") or {}
        outputs = [m for m in current.get("output") or [] if m.get("name") != "model"]
        outputs.append({"name": "model", "model": model_id})
        models = {"input": current.get("input") or [], "output": outputs}
        self.call("tasks.edit", {"task": task_id, "force": True, "models": models})
        return model_id

    def stop_many(self, task_ids: Sequence[str], message: str = "aborted by ak-remote") -> Doc:
        """tasks.stop_many (force: queued or running); returns {id: error} for refusals.

        Each task is marked first (runtime property ABORTED_KEY: `message` and the time): an
        agent that pulled one a moment ago still starts it, and the job, seeing the mark, stops
        at once. A task the server would not stop gets its runtime properties back.
        """
        docs = self.get_tasks(ids=list(task_ids), only_fields=["id", "runtime"])
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for doc in docs:
            self.set_runtime_property(doc, ABORTED_KEY, f"{message} at {stamp}")
        data = self.call(
            "tasks.stop_many",
            {"ids": list(task_ids), "force": True, "status_message": message},
        )
        refused = {
            str(item.get("id")): str((item.get("error") or {}).get("msg") or item.get("error"))
            for item in data.get("failed") or []
        }
        for doc in docs:
            if str(doc["id"]) in refused:
                self.edit_task(str(doc["id"]), {"runtime": doc.get("runtime") or {}}, force=True)
        return refused

    def dequeue(self, task_id: str, new_status: str | None = None) -> None:
        """tasks.dequeue, optionally to `new_status`."""
        body: Doc = {"task": task_id}
        if new_status:
            body["new_status"] = new_status
        self.call("tasks.dequeue", body)

    # -- events -------------------------------------------------------------------------------

    def task_log(
        self, task_id: str, from_timestamp: int | None = None, batch_size: int = 500
    ) -> list[Doc]:
        """events.get_task_log, oldest first, after `from_timestamp` (ms)."""
        body: Doc = {
            "task": task_id,
            "batch_size": batch_size,
            "navigate_earlier": False,
            "order": "asc",
        }
        if from_timestamp is not None:
            body["from_timestamp"] = from_timestamp
        data = self.call("events.get_task_log", body)
        return list(data.get("events") or [])

    def scalar_histogram(
        self, task_id: str, samples: int = 6000, metrics: Sequence[Mapping[str, Any]] = ()
    ) -> Doc:
        """events.scalar_metrics_iter_histogram: {metric: {variant: {x: [...], y: [...]}}}, of
        the `metrics` ({"metric": title, "variants": [...]}) only when given.

        The server takes 1 to 6000 samples (its request model refuses 0): 6000, the most it
        gives, keeps every epoch of any run we make.
        """
        body: Doc = {"task": task_id, "samples": samples, "key": "iter"}
        if metrics:
            body["metrics"] = [dict(m) for m in metrics]
        data = self.call("events.scalar_metrics_iter_histogram", body)
        return dict(data)

    # -- queues and workers -------------------------------------------------------------------

    def get_queues(self) -> list[Doc]:
        """queues.get_all: every queue (id, name, entries, tags)."""
        data = self.call("queues.get_all", {})
        return list(data.get("queues") or [])

    def find_queue(self, name: str) -> Doc | None:
        """The queue called exactly `name`, or None."""
        return next((q for q in self.get_queues() if q.get("name") == name), None)

    def require_queue(self, name: str, what: str = "queue", fixes: str = "") -> Doc:
        """The queue called exactly `name`; UsageError naming the existing ones otherwise."""
        return queue_named(self.get_queues(), name, what, fixes)

    def create_queue(self, name: str, tags: Iterable[str] = ()) -> str:
        """queues.create (looks by name before a retry); returns the queue id."""

        def find() -> str | None:
            queue = self.find_queue(name)
            return str(queue["id"]) if queue else None

        body: Doc = {"name": name}
        if tags:
            body["tags"] = list(tags)
        return self.write("queues.create", body, find=find, parse=lambda d: str(d["id"]))

    def get_workers(self, last_seen: int = 600) -> list[Doc]:
        """workers.get_all: workers seen in the last `last_seen` seconds (queues, task)."""
        data = self.call("workers.get_all", {"last_seen": last_seen})
        return list(data.get("workers") or [])

    def server_info(self) -> Doc:
        """What the login token says about the server: host, API version, server version."""
        if self._session_transport is None:
            return {}
        from clearml.backend_api.session import Session

        session = self._session_transport.session
        return {
            "host": str(session.host),
            "api_version": str(Session.api_version),
            "server_version": str(Session.server_version),
        }

    # -- models and files ---------------------------------------------------------------------

    def get_model(self, model_id: str) -> Doc:
        """models.get_by_id."""
        data = self.call("models.get_by_id", {"model": model_id})
        return dict(data.get("model") or {})

    def download(self, url: str, dest: Path) -> str:
        """Download `url` (fileserver or any http(s) URL) to `dest`; returns its sha256.

        Retried on transient failures. Raises ServerError when it cannot be fetched.
        """
        import requests

        if not url.startswith(("http://", "https://")):
            return self._download_with_storage_manager(url, dest)
        headers: dict[str, str] = {}
        if self._session_transport is not None:
            session = self._session_transport.session
            from clearml.backend_api.session import Session

            files_host = str(Session.get_files_server_host()).rstrip("/")
            if url.startswith(files_host):
                headers = session.add_auth_headers({})
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        what = f"download of {url}"

        def attempt() -> str:
            try:
                digest = hashlib.sha256()
                with requests.get(
                    url,
                    headers=headers,
                    stream=True,
                    timeout=(self.policy.connect_timeout, self.policy.read_timeout),
                ) as res:
                    if res.status_code in TRANSIENT_STATUS:
                        raise TransientError(f"HTTP {res.status_code}")
                    if res.status_code != 200:
                        raise ServerError(
                            f"cannot download {url}: HTTP {res.status_code}",
                            "the file may have been deleted from the fileserver",
                        )
                    with tmp.open("wb") as out:
                        for chunk in res.iter_content(1 << 20):
                            digest.update(chunk)
                            out.write(chunk)
                tmp.replace(dest)
                return digest.hexdigest()
            except requests.RequestException as exc:
                raise TransientError(describe_network_error(exc)) from None

        return self._retrying(what, attempt)

    def _download_with_storage_manager(self, url: str, dest: Path) -> str:
        """s3://, gs://, azure:// and other storage the SDK knows (its own credentials)."""
        import shutil

        from clearml import StorageManager

        try:
            local = StorageManager.get_local_copy(remote_url=url, extract_archive=False)
        except Exception as exc:  # noqa: BLE001 - the SDK raises many types; its message is what matters
            raise ServerError(
                f"cannot download {url}: {exc}", "check the storage credentials"
            ) from None
        if not local:
            raise ServerError(f"cannot download {url}", "check the storage credentials")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, dest)
        return sha256_file(dest)


def last_metric_values(task: Mapping[str, Any]) -> dict[str, float]:
    """A task's `last_metrics` flattened to {"metric/variant": last value}."""
    values: dict[str, float] = {}
    for variants in (task.get("last_metrics") or {}).values():
        if not isinstance(variants, dict):
            continue
        for entry in variants.values():
            if isinstance(entry, dict) and "value" in entry:
                name = f"{entry.get('metric', '?')}/{entry.get('variant', '?')}"
                try:
                    values[name] = float(entry["value"])
                except (TypeError, ValueError):
                    continue
    return values


def client_from_config(on_retry: Callable[[str], None] | None = None) -> Client:
    """A Client with the retry policy from ak-remote's configuration."""
    from ak_remote.config import load_config

    config = load_config()
    return Client(
        policy=RetryPolicy(
            attempts=config.http_attempts,
            backoff=config.http_backoff,
            read_timeout=config.http_timeout,
        ),
        on_retry=on_retry,
    )
