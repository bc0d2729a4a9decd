"""Integration: `--wait` rides out a ClearML server restart (issue 20, item 9).

The CLI runs in its own process and talks to the emulator through a TCP proxy on loopback; the
proxy closes its port (connection refused, as a restarting server is) and opens it again. A
wait that outlives the outage says it once and goes on; one that does not (a short
`wait_outage`) says the run goes on and how to follow it, exit 4.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from ak_remote.cli import cli
from tests.emulator.fixtures import wait_for
from tests.emulator.server import Emulator
from tests.lost_proxy import Proxy

pytestmark = pytest.mark.slow


def _start_wait(emulator: Emulator, proxy: Proxy, tmp_path: Path, outage: str) -> Any:
    """`ak-remote launch ... --wait` through the proxy, in its own process; (process, stderr)."""
    CliRunner().invoke(cli, ["templates", "sync"], catch_exceptions=False)
    emulator.create_queue("cpu")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "AK_REMOTE_"))}
    env.update(emulator.env())
    env["CLEARML_API_HOST"] = f"http://127.0.0.1:{proxy.port}"
    env.update({"AK_REMOTE_POLL_INTERVAL": "0.5", "AK_REMOTE_WAIT_OUTAGE": outage})
    env["AK_REMOTE_HTTP_BACKOFF"] = "0.2"
    stderr = tmp_path / "stderr.txt"
    argv = ["launch", "structured-classifier", "-q", "cpu", "--wait"]
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "ak_remote", *argv],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    wait_for(
        lambda: "Waiting for 1 run(s)" in stderr.read_text(),
        timeout=120,
        what=f"the launch to wait\n{stderr.read_text() if stderr.exists() else ''}",
    )
    return process, stderr


def _task_id(emulator: Emulator) -> str:
    return next(t["id"] for t in emulator.state.tasks.values() if t.get("status") == "queued")


def test_wait_rides_out_a_server_restart(
    clearml_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    proxy = Proxy(int(urlsplit(clearml_emulator.api_url).port or 0))
    proxy.up()
    process, stderr = _start_wait(clearml_emulator, proxy, tmp_path, "600")
    try:
        task_id = _task_id(clearml_emulator)
        proxy.down()
        wait_for(
            lambda: "the ClearML server does not answer" in stderr.read_text(),
            timeout=120,
            what="the outage to be noticed",
        )
        # The run goes on meanwhile: it starts and completes while the server looks down to
        # the CLI, which must still be waiting (the retries of one request ran out long ago).
        clearml_emulator.call("tasks.started", task=task_id, force=True)
        clearml_emulator.call("tasks.completed", task=task_id, force=True)
        assert process.poll() is None, stderr.read_text()
        proxy.up()
        out, _ = process.communicate(timeout=120)
    finally:
        proxy.down()
        if process.poll() is None:
            process.kill()
    text = stderr.read_text()
    assert process.returncode == 0, text
    assert out.decode().split() == [task_id]
    lines = text.splitlines()
    said = [line for line in lines if "the ClearML server does not answer" in line]
    assert len(said) == 1, text  # said once, not once per retry
    assert "the runs go on on their agents" in said[0]
    assert any(line.startswith("the ClearML server answers again") for line in lines), text
    assert not [
        line for line in lines if "retrying in" in line and lines.index(line) > lines.index(said[0])
    ]
    assert f"{task_id} completed" in text


def test_wait_gives_up_after_the_documented_outage_saying_the_run_goes_on(
    clearml_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    proxy = Proxy(int(urlsplit(clearml_emulator.api_url).port or 0))
    proxy.up()
    process, stderr = _start_wait(clearml_emulator, proxy, tmp_path, "3")
    try:
        task_id = _task_id(clearml_emulator)
        proxy.down()
        process.wait(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
    text = stderr.read_text()
    assert process.returncode == 4, text
    errors = [line for line in text.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, text
    assert "stopped waiting. The runs go on on their agents" in errors[0]
    assert f"follow them once the server is back: ak-remote status {task_id}" in errors[0]
    assert clearml_emulator.get_task(task_id)["status"] == "queued"  # nothing was touched


def test_logs_follow_rides_out_a_server_restart(
    clearml_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    emulator = clearml_emulator
    task_id = emulator.create_task("followed")
    emulator.call("tasks.started", task=task_id, force=True)
    proxy = Proxy(int(urlsplit(emulator.api_url).port or 0))
    proxy.up()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "AK_REMOTE_"))}
    env.update(emulator.env())
    env["CLEARML_API_HOST"] = f"http://127.0.0.1:{proxy.port}"
    env.update({"AK_REMOTE_POLL_INTERVAL": "0.5", "AK_REMOTE_HTTP_BACKOFF": "0.2"})
    stderr = tmp_path / "stderr.txt"
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "ak_remote", "logs", task_id, "--follow"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    try:
        wait_for(lambda: emulator.count("events.get_task_log") > 0, timeout=120, what="a read")
        proxy.down()
        wait_for(
            lambda: "the ClearML server does not answer" in stderr.read_text(),
            timeout=120,
            what="the outage to be noticed",
        )
        emulator.call("tasks.completed", task=task_id, force=True)
        assert process.poll() is None, stderr.read_text()
        proxy.up()
        process.communicate(timeout=120)
    finally:
        proxy.down()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr.read_text()
    assert "the ClearML server answers again" in stderr.read_text()
