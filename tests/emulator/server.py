"""The HTTP side of the emulator: API server, fileserver and web server on loopback.

Three ``ThreadingHTTPServer`` listeners on free 127.0.0.1 ports, one per ClearML host. The API
listener speaks the wire protocol the SDK, clearml-agent and the Web UI use (see README.md):
versioned and unversioned paths, GET or POST with a JSON body, JSON-lines batches, the
``meta``/``data`` envelope, HTTP Basic for ``auth.login`` and a bearer JWT (header or cookie)
afterwards. The web listener serves the built Web UI with the official webserver's ``/api`` and
``/files`` proxies (``web.py``). This module owns the listeners, the request log, fault
injection and saving the state to ``state_dir``; what a call does is in ``api.py`` and
``services/`` (credentials in ``services/auth.py``, stored files in ``services/files.py``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import socket
import threading
import time
import traceback
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.emulator import errors, web
from tests.emulator.api import BATCH_ENDPOINTS, ClearMLApi, changes_state
from tests.emulator.services import auth, files
from tests.emulator.services.auth import SERVER_API_VERSION
from tests.emulator.state import ServerState

FAULT_MODES = ("500", "503", "timeout", "drop_response")
_PATH_RE = re.compile(r"^/(?:v(?P<version>[^/]+)/)?(?P<endpoint>[A-Za-z_]+\.[A-Za-z_]+)/?$")


@dataclass
class RecordedRequest:
    """One request the emulator received (API call or fileserver access)."""

    endpoint: str  # "tasks.clone", or "fileserver.upload" / "fileserver.download"
    version: str | None  # "2.23" from "/v2.23/tasks.clone"; None when unversioned
    body: Any  # the parsed JSON body (a list for JSON-lines batches); {} when empty
    http_method: str
    status: int | None = None  # HTTP status sent; None when no answer was sent (faults)
    result_subcode: int | None = None
    fault: str | None = None  # the injected fault mode, if any
    path: str = ""
    time: float = field(default_factory=time.time)
    key: str | None = None  # the access key that made the call (see Emulator.add_client)


@dataclass
class _Fault:
    mode: str
    hold_s: float


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, role: str, emulator: Emulator, port: int = 0) -> None:
        self.role = role
        self.emulator = emulator
        # Open client connections: stop() closes them, or a keep-alive client (the SDK's
        # session) would go on talking to a stopped emulator's handler threads.
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def close_connections(self) -> None:
        with self.connections_lock:
            open_ = list(self.connections)
        for connection in open_:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm on, each answer would wait
    # for the client's delayed ACK (up to 40 ms on loopback), which no production server does.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def _dispatch(self) -> None:
        if self.server.emulator.stopping:
            # A stopped server answers nothing: the client sees the connection close and
            # tries again (against the server started in its place).
            self.close_connection = True
            return
        role = self.server.role
        if role == "api":
            self.server.emulator._handle_api(self)
        elif role == "files":
            self.server.emulator._handle_files(self)
        else:
            self.server.emulator._handle_web(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers or []:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def drop(self) -> None:
        """Close the connection without sending any answer."""
        self.close_connection = True


class Emulator:
    """A ClearML API server + fileserver emulator on 127.0.0.1 (see README.md)."""

    is_emulator = True

    def __init__(
        self,
        access_key: str = "EMULATORACCESSKEY",
        secret_key: str = "emulator-secret-key-0123456789",
        config_dir: Path | None = None,
        port: int = 0,
        *,
        state_dir: Path | None = None,
        web_dist: Path | None = None,
        web_looked: list[Path] | None = None,
    ) -> None:
        """`port`: the API's (web port+1, fileserver port+2); 0 picks free ones.

        `state_dir`: keep the state there across restarts (loaded now, saved while serving).
        `web_dist`: a built Web UI to serve on the web port (`web_looked`: where one was looked
        for, shown instead when there is none).
        """
        self.access_key = access_key
        self.secret_key = secret_key
        # More credentials of the same user (add_client): each client's calls are told apart.
        self.client_keys: dict[str, str] = {}
        self.state_dir = state_dir
        self.state = ServerState.load(state_dir) if state_dir else ServerState()
        self.web_dist = web_dist
        self._web_looked = web_looked or []
        self.requests: list[RecordedRequest] = []
        # Unexpected exceptions inside the emulator (its own bugs); the fixture fails on them.
        self.internal_errors: list[str] = []
        self._faults: dict[str, list[_Fault]] = {}
        self._log_lock = threading.Lock()
        # The signing key is kept with the state: tokens stay valid across a restart, as on a
        # server whose secure.auth.token_secret is configured.
        self._token_secret = self.state.secrets.setdefault("token_secret", uuid.uuid4().hex)
        self._changes = 0  # calls that changed the state since it was last saved
        self._stopping = threading.Event()
        roles = ("api", "web", "files")
        self._servers = {
            role: _Server(role, self, port + n if port else 0) for n, role in enumerate(roles)
        }
        self.api_url = self._url("api")
        self.web_url = self._url("web")
        self.files_url = self._url("files")
        self.api = ClearMLApi(self.state, files_url=self.files_url)
        self._threads: list[threading.Thread] = []
        self.config_file = (config_dir or Path.cwd()) / "clearml.conf"
        self._token: str | None = None

    def _url(self, role: str) -> str:
        port = self._servers[role].server_address[1]
        return f"http://127.0.0.1:{port}"

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> Emulator:
        """Serve on background threads and write ``config_file``."""
        for role, server in self._servers.items():
            thread = threading.Thread(
                target=server.serve_forever,
                args=(0.05,),
                name=f"clearml-emulator-{role}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        if self.state_dir is not None:
            self.save_state()
            saver = threading.Thread(target=self._save_loop, name="clearml-emulator-save")
            saver.daemon = True
            saver.start()
            self._threads.append(saver)
        self.write_config(self.config_file)
        return self

    @property
    def stopping(self) -> bool:
        """True once stop() was called: calls still arriving are not answered."""
        return self._stopping.is_set()

    def stop(self) -> None:
        """Stop all listeners and close open connections (and save the state, with a state
        directory: a call being answered finishes first, as it holds the state's lock)."""
        self._stopping.set()
        for server in self._servers.values():
            server.shutdown()
            server.close_connections()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        if self.state_dir is not None:
            self.save_state()

    def save_state(self) -> None:
        """Write the state to ``state_dir`` now."""
        assert self.state_dir is not None, "no state directory"
        with self.state.lock:
            self._changes = 0
            self.state.save(self.state_dir)

    def _save_loop(self) -> None:
        # A real server writes each change to its databases; saving at most twice a second
        # keeps a search's event stream cheap. What an abrupt kill loses is that half second.
        while not self._stopping.wait(0.5):
            if self._changes:
                self.save_state()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_config(self, path: Path) -> Path:
        """Write a clearml.conf pointing at this emulator (SDK and agent read the same file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "api {\n"
            f'  api_server: "{self.api_url}"\n'
            f'  web_server: "{self.web_url}"\n'
            f'  files_server: "{self.files_url}"\n'
            "  credentials {\n"
            f'    access_key: "{self.access_key}"\n'
            f'    secret_key: "{self.secret_key}"\n'
            "  }\n"
            "}\n"
            # Report events from a thread rather than a subprocess: same calls on the wire, but
            # each SDK run in a test finishes several seconds sooner on a 2-core machine.
            "sdk {\n"
            "  development { report_use_subprocess: false }\n"
            "}\n"
        )
        return path

    def env(self) -> dict[str, str]:
        """Environment variables pointing a subprocess (SDK or agent) at this emulator."""
        return {
            "CLEARML_API_HOST": self.api_url,
            "CLEARML_WEB_HOST": self.web_url,
            "CLEARML_FILES_HOST": self.files_url,
            "CLEARML_API_ACCESS_KEY": self.access_key,
            "CLEARML_API_SECRET_KEY": self.secret_key,
            "CLEARML_CONFIG_FILE": str(self.config_file),
        }

    # ---------------------------------------------------------------- test helpers
    def count(self, endpoint: str | None = None) -> int:
        """Number of recorded requests (of one endpoint, or all)."""
        with self._log_lock:
            if endpoint is None:
                return len(self.requests)
            return sum(1 for r in self.requests if r.endpoint == endpoint)

    def calls(self, endpoint: str) -> list[RecordedRequest]:
        """Recorded requests of one endpoint, oldest first."""
        with self._log_lock:
            return [r for r in self.requests if r.endpoint == endpoint]

    def failed_calls(self) -> list[RecordedRequest]:
        """Recorded requests answered with an error (>= 400) or not answered at all."""
        with self._log_lock:
            return [r for r in self.requests if r.status is None or r.status >= 400]

    def endpoints(self) -> list[str]:
        """Distinct endpoints called so far, in first-call order."""
        with self._log_lock:
            return list(dict.fromkeys(r.endpoint for r in self.requests))

    def reset_log(self) -> None:
        """Forget recorded requests."""
        with self._log_lock:
            self.requests.clear()

    def fail_next(
        self, endpoint: str, times: int = 1, mode: str = "500", hold_s: float = 5.0
    ) -> None:
        """Inject a fault into the next ``times`` calls of ``endpoint``.

        Modes: "500"/"503" answer an error envelope without applying the call; "timeout" holds
        the call ``hold_s`` seconds without applying it, then closes the connection unanswered;
        "drop_response" applies the call, then closes the connection unanswered.
        For the fileserver use endpoint "fileserver.upload" or "fileserver.download".
        """
        if mode not in FAULT_MODES:
            raise ValueError(f"mode must be one of {FAULT_MODES}, not {mode!r}")
        with self._log_lock:
            self._faults.setdefault(endpoint, []).extend(_Fault(mode, hold_s) for _ in range(times))

    def _take_fault(self, endpoint: str) -> _Fault | None:
        with self._log_lock:
            pending = self._faults.get(endpoint)
            return pending.pop(0) if pending else None

    def _record(self, entry: RecordedRequest) -> None:
        with self._log_lock:
            self.requests.append(entry)

    def add_client(self, name: str) -> dict[str, str]:
        """Credentials of the same user for one client, so the request log tells its calls apart
        (`RecordedRequest.key`, `calls_by`); returns the CLEARML_* environment that uses them."""
        access, secret = f"CLIENT{name.upper()}KEY", f"{name}-secret-0123456789"
        self.client_keys[access] = secret
        return {**self.env(), "CLEARML_API_ACCESS_KEY": access, "CLEARML_API_SECRET_KEY": secret}

    def calls_by(self, env: Mapping[str, str]) -> list[RecordedRequest]:
        """The API calls made with the credentials in `env` (from `add_client`)."""
        key = env["CLEARML_API_ACCESS_KEY"]
        with self._log_lock:
            return [r for r in self.requests if r.key == key]

    # seeders ----------------------------------------------------------------
    def create_queue(self, name: str, *, default: bool = False) -> str:
        """Create a queue directly in the state; return its id."""
        with self.state.lock:
            system_tags = ["default"] if default else []
            return str(self.api.queues.new_queue(name, system_tags=system_tags)["id"])

    def create_project(self, name: str) -> str:
        """Create a project directly in the state; return its id."""
        with self.state.lock:
            return str(self.api.projects.new_project(name)["id"])

    def create_task(self, name: str, project: str | None = None, **fields: Any) -> str:
        """Create a task (status created) directly in the state; return its id."""
        with self.state.lock:
            project_id = None
            if project:
                found = self.state.project_by_name(project)
                project_id = (found or self.api.projects.new_project(project))["id"]
            req = {"name": name, "type": "training", "project": project_id, **fields}
            return str(self.api.tasks.ep_tasks__create(req)["id"])

    def call(self, endpoint: str, **body: Any) -> dict[str, Any]:
        """Run one endpoint in-process (validated like a wire call); return its data."""
        with self.state.lock:
            return self.api.dispatch(endpoint, dict(body))

    def add_events(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """Ingest events as events.add_batch does (updates last_metrics); return its data."""
        with self.state.lock:
            return self.api.events.add_events(copy.deepcopy(events))

    def get_task(self, task_id: str) -> dict[str, Any]:
        """A copy of the task document, as tasks.get_by_id returns it."""
        with self.state.lock:
            return copy.deepcopy(self.state.tasks[task_id])

    def call_api(self, endpoint: str, **body: Any) -> dict[str, Any]:
        """Call one endpoint over HTTP like a client (recorded); return its ``data``."""
        from tests.emulator.fixtures import _http_call

        return _http_call(self, endpoint, body)

    def file_url(self, path: str) -> str:
        """The URL the fileserver serves a stored path under."""
        return f"{self.files_url}/{urllib.parse.quote(path.lstrip('/'))}"

    # ---------------------------------------------------------------- API
    def _handle_api(self, request: _Handler, path: str | None = None) -> None:
        """One API call; `path` is the apiserver path when the web port's /api proxy forwards."""
        parsed = urllib.parse.urlsplit(path if path is not None else request.path)
        raw = request.read_body()
        match = _PATH_RE.match(parsed.path)
        entry = RecordedRequest(
            endpoint=match.group("endpoint") if match else parsed.path,
            version=match.group("version") if match else None,
            body={},
            http_method=request.command,
            path=parsed.path,
        )
        # An unversioned path is served by the newest endpoint (ServiceRepo._max_version).
        requested = entry.version or SERVER_API_VERSION
        data: dict[str, Any] = {}
        fault: _Fault | None = None
        cookies: list[tuple[str, str]] = []
        try:
            if match is None:
                raise errors.APIError(400, 0, f"Invalid request path {parsed.path}")
            if entry.version is not None:
                self._check_version(entry.version)
            entry.body = self._parse_body(entry.endpoint, raw, request, parsed.query)
            fault = self._take_fault(entry.endpoint)
            entry.fault = fault.mode if fault else None
            if fault and fault.mode in ("500", "503"):
                raise errors.APIError(int(fault.mode), 0, f"Injected failure ({fault.mode})")
            if fault and fault.mode == "timeout":
                self._record(entry)  # recorded on arrival: the client gives up meanwhile
                time.sleep(fault.hold_s)
                request.drop()
                return
            if not self.api.serves(entry.endpoint):
                raise errors.endpoint_not_found(entry.endpoint, requested)
            call_auth = auth.authorize(
                entry.endpoint,
                request.headers.get("Authorization"),
                cookie=_cookie(request.headers.get("Cookie"), auth.AUTH_COOKIE),
                keys={self.access_key: self.secret_key, **self.client_keys},
                token_secret=self._token_secret,
            )
            entry.key = call_auth.key
            if call_auth.login is not None:
                data = call_auth.login
                # The server sets the token as a cookie too: a browser's calls carry only that.
                cookies.append(auth.auth_cookie_header(data["token"]))
            elif entry.endpoint == "login.supported_modes":
                data = self.api.login_modes(entry.body, authenticated=call_auth.authenticated)
            elif entry.endpoint in ("auth.logout", "login.logout"):
                cookies.append(auth.auth_cookie_header(None))
            else:
                with self.state.lock:
                    data = self.api.dispatch(entry.endpoint, entry.body)
                    if changes_state(entry.endpoint):
                        self._changes += 1
            code, subcode, msg = 200, 0, "OK"
        except errors.APIError as exc:
            code, subcode, msg, data = exc.code, exc.subcode, exc.msg, {}
        except Exception as exc:  # noqa: BLE001 - a bug in the emulator: answer as the server does (500/0)
            code, subcode, msg, data = 500, 0, f"{type(exc).__name__}: {exc}", {}
            self.internal_errors.append(f"{entry.endpoint}: {traceback.format_exc()}")
        if fault and fault.mode == "drop_response":
            self._record(entry)
            request.drop()
            return
        entry.status, entry.result_subcode = code, subcode
        self._record(entry)
        trx = uuid.uuid4().hex
        envelope = {
            "meta": {
                "id": trx,
                "trx": trx,
                "endpoint": {
                    "name": entry.endpoint,
                    "requested_version": requested,
                    "actual_version": requested,
                },
                "result_code": code,
                "result_subcode": subcode,
                "result_msg": msg,
                "error_stack": None,
                "error_data": {},
            },
            "data": data,
        }
        request.send(code, json.dumps(envelope).encode("utf-8"), headers=cookies)

    @staticmethod
    def _check_version(version: str) -> None:
        # The server refuses only malformed versions; a version above its newest is served by
        # the newest endpoint (apiserver.version.check_max_version defaults to false).
        try:
            parts = tuple(int(p) for p in version.split("."))
        except ValueError as exc:
            raise errors.RequestPathHasInvalidVersion(version=version) from exc
        if not 1 <= len(parts) <= 2:
            raise errors.RequestPathHasInvalidVersion(version=version)

    @staticmethod
    def _parse_body(endpoint: str, raw: bytes, request: _Handler, query: str) -> Any:
        text = raw.decode("utf-8").strip() if raw else ""
        try:
            if endpoint in BATCH_ENDPOINTS:
                return [json.loads(line) for line in text.splitlines() if line.strip()]
            if text:
                return json.loads(text)
        except json.JSONDecodeError as exc:
            raise errors.ValidationError(f"malformed JSON body: {exc}") from exc
        # A body-less call may carry its fields in the query string.
        return {k: v[-1] for k, v in urllib.parse.parse_qs(query).items()}

    # ---------------------------------------------------------------- fileserver
    def _handle_files(self, request: _Handler, path: str | None = None) -> None:
        """One fileserver access; `path` is set when the web port's /files proxy forwards."""
        parsed = urllib.parse.urlsplit(path if path is not None else request.path)
        path = urllib.parse.unquote(parsed.path)
        command = request.command
        endpoint = {
            "POST": "fileserver.upload",
            "GET": "fileserver.download",
            "HEAD": "fileserver.download",
            "DELETE": "fileserver.delete",
        }.get(command, "fileserver.other")
        raw = request.read_body()
        entry = RecordedRequest(endpoint=endpoint, version=None, body={}, http_method=command)
        entry.path = path
        fault = self._take_fault(endpoint)
        entry.fault = fault.mode if fault else None
        if fault and fault.mode in ("500", "503"):
            entry.status = int(fault.mode)
            self._record(entry)
            request.send(entry.status, b'{"error": "injected failure"}')
            return
        if fault and fault.mode == "timeout":
            self._record(entry)  # recorded on arrival: the client gives up meanwhile
            time.sleep(fault.hold_s)
            request.drop()
            return
        status, body, ctype = 405, b"method not allowed", "text/plain"
        if command == "POST":
            content_type = request.headers.get("Content-Type", "")
            (status, body, ctype), stored = files.upload(self.state, parsed.path, content_type, raw)
            if stored is not None:
                entry.body = {"files": stored}
        elif command in ("GET", "HEAD"):
            status, body, ctype = files.download(self.state, path)
        elif command == "DELETE":
            status, body, ctype = files.delete(self.state, path)
        if fault and fault.mode == "drop_response":
            self._record(entry)
            request.drop()
            return
        entry.status = status
        self._record(entry)
        request.send(status, body, ctype)

    # ---------------------------------------------------------------- web
    def _handle_web(self, request: _Handler) -> None:
        """The web port, as the official webserver's nginx serves it (see ``web.py``)."""
        parsed = urllib.parse.urlsplit(request.path)
        for prefix, handle in (("/api/", self._handle_api), ("/files/", self._handle_files)):
            if parsed.path.startswith(prefix):
                # nginx: `rewrite /api/(.*) /$1 break; proxy_pass <apiserver>;`
                rest = request.path[len(prefix) - 1 :]
                handle(request, rest)
                return
        request.read_body()
        if parsed.path == "/configuration.json":
            answer = 200, web.configuration(self.files_url), "application/json"
        elif self.web_dist is None:
            answer = web.no_app_page(self._web_looked)
        else:
            answer = web.static(self.web_dist, parsed.path)
        request.send(*answer)


def _cookie(header: str | None, name: str) -> str | None:
    """The value of one cookie in a ``Cookie`` request header."""
    for part in (header or "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value
    return None
