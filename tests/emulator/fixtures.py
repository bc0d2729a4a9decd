"""Pytest fixtures: a fresh emulator per test, or (opt-in) a real ClearML server.

Set ``AK_REMOTE_TEST_CLEARML_SERVER=1`` together with ``CLEARML_API_HOST``, ``CLEARML_WEB_HOST``,
``CLEARML_FILES_HOST``, ``CLEARML_API_ACCESS_KEY`` and ``CLEARML_API_SECRET_KEY`` to run the same
tests against a real server. Tests that need emulator-only features (``state``, ``requests``,
``fail_next``...) are then skipped when they touch them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.emulator.server import Emulator, RecordedRequest

__all__ = [
    "REAL_SERVER_SWITCH",
    "Emulator",
    "RealServer",
    "RecordedRequest",
    "clearml_emulator",
    "run_python",
    "script_result",
    "unique_name",
    "wait_for",
]

REAL_SERVER_SWITCH = "AK_REMOTE_TEST_CLEARML_SERVER"
_REAL_SERVER_VARS = (
    "CLEARML_API_HOST",
    "CLEARML_WEB_HOST",
    "CLEARML_FILES_HOST",
    "CLEARML_API_ACCESS_KEY",
    "CLEARML_API_SECRET_KEY",
)
# Read once at import: tests/conftest.py strips CLEARML_* from each test's environment.
_OUTER_ENV = {k: v for k, v in os.environ.items() if k in (*_REAL_SERVER_VARS, REAL_SERVER_SWITCH)}


def real_server_requested() -> bool:
    """True when the opt-in switch asks for a real ClearML server instead of the emulator."""
    return _OUTER_ENV.get(REAL_SERVER_SWITCH, "").lower() in ("1", "true", "yes")


class RealServer:
    """The same handle as :class:`Emulator` for a real server; emulator-only parts skip."""

    is_emulator = False

    def __init__(self, config_dir: Path) -> None:
        missing = [k for k in _REAL_SERVER_VARS if not _OUTER_ENV.get(k)]
        if missing:
            pytest.fail(f"{REAL_SERVER_SWITCH} is set but {', '.join(missing)} are not")
        self.api_url = _OUTER_ENV["CLEARML_API_HOST"].rstrip("/")
        self.web_url = _OUTER_ENV["CLEARML_WEB_HOST"].rstrip("/")
        self.files_url = _OUTER_ENV["CLEARML_FILES_HOST"].rstrip("/")
        self.access_key = _OUTER_ENV["CLEARML_API_ACCESS_KEY"]
        self.secret_key = _OUTER_ENV["CLEARML_API_SECRET_KEY"]
        self.config_file = config_dir / "clearml.conf"
        self._token: str | None = None
        Emulator.write_config(self, self.config_file)  # type: ignore[arg-type]

    def env(self) -> dict[str, str]:
        """Environment variables pointing a subprocess at the real server."""
        return Emulator.env(self)  # type: ignore[arg-type]

    def call_api(self, endpoint: str, **body: Any) -> dict[str, Any]:
        """Call one endpoint over HTTP; return its ``data`` (raises RuntimeError on errors)."""
        return _http_call(self, endpoint, body)

    def get_task(self, task_id: str) -> dict[str, Any]:
        """The task document as ``tasks.get_by_id`` returns it."""
        return dict(self.call_api("tasks.get_by_id", task=task_id)["task"])

    def _emulator_only(self, what: str) -> NoReturn:
        pytest.skip(f"{what} is emulator-only; {REAL_SERVER_SWITCH} runs against a real server")

    @property
    def state(self) -> NoReturn:
        self._emulator_only("state")

    @property
    def requests(self) -> NoReturn:
        self._emulator_only("requests")

    def count(self, endpoint: str | None = None) -> NoReturn:
        self._emulator_only("count()")

    def reset_log(self) -> NoReturn:
        self._emulator_only("reset_log()")

    def fail_next(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._emulator_only("fail_next()")

    def create_queue(self, name: str, *, default: bool = False) -> str:
        """Create a queue (or reuse one of that name); return its id."""
        found = self.call_api("queues.get_all", name=f"^{name}$")["queues"]
        if found:
            return str(found[0]["id"])
        tags = ["default"] if default else []
        return str(self.call_api("queues.create", name=name, system_tags=tags)["id"])


def _http_call(
    handle: Emulator | RealServer, endpoint: str, body: dict[str, Any]
) -> dict[str, Any]:
    import base64

    token = getattr(handle, "_token", None)
    if token is None:
        basic = base64.b64encode(f"{handle.access_key}:{handle.secret_key}".encode()).decode()
        login = urllib.request.Request(
            f"{handle.api_url}/auth.login", headers={"Authorization": f"Basic {basic}"}
        )
        with urllib.request.urlopen(login, timeout=30) as response:
            token = json.load(response)["data"]["token"]
        handle._token = token
    request = urllib.request.Request(
        f"{handle.api_url}/{endpoint}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return dict(json.load(response)["data"])
    except urllib.error.HTTPError as exc:
        meta = json.load(exc).get("meta", {})
        raise RuntimeError(
            f"{endpoint}: {meta.get('result_code')}/{meta.get('result_subcode')} "
            f"{meta.get('result_msg')}"
        ) from exc


def unique_name(handle: Emulator | RealServer, base: str) -> str:
    """``base`` on the (fresh) emulator; ``base-<random>`` on a real server that keeps history."""
    if isinstance(handle, RealServer):
        import uuid

        return f"{base}-{uuid.uuid4().hex[:8]}"
    return base


def wait_for(condition: Any, timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    """Poll ``condition()`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def clearml_emulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_home: Path
) -> Iterator[Emulator | RealServer]:
    """A running emulator (or, opt-in, a real server) and an environment pointing at it."""
    config_dir = tmp_path / "clearml-config"
    handle: Emulator | RealServer
    if real_server_requested():
        handle = RealServer(config_dir)
        for key, value in handle.env().items():
            monkeypatch.setenv(key, value)
        yield handle
        return
    emulator = Emulator(config_dir=config_dir).start()
    try:
        for key, value in emulator.env().items():
            monkeypatch.setenv(key, value)
        yield emulator
    finally:
        emulator.stop()
    assert not emulator.internal_errors, f"emulator bugs: {emulator.internal_errors}"


_script_numbers = iter(range(1, 1_000_000))


def run_python(
    handle: Emulator | RealServer,
    code: str,
    cwd: Path,
    *,
    timeout: float = 240.0,
    env: dict[str, str] | None = None,
    check: bool = True,
    args: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter pointed at the server (the SDK keeps global state).

    With ``check`` a non-zero exit fails the test with the script's output.
    """
    cwd.mkdir(parents=True, exist_ok=True)
    script = cwd / f"sdk_script_{next(_script_numbers)}.py"
    script.write_text(textwrap.dedent(code))
    full_env = {**os.environ, **handle.env(), "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"{script.name} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


def script_result(proc: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a script printed on its last line starting with ``RESULT ``."""
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        pytest.fail(f"script printed no RESULT line\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])
