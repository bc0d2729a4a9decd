"""The emulator as a test double for "the server restarted": with a state directory, an
emulator stopped in the middle of a real run and started again on the same ports and folder is
the same server, and the run (a real clearml-agent, the real SDK inside it) carries on."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from tests.emulator.agent import running_agent, wait_for_status
from tests.emulator.fixtures import wait_for
from tests.emulator.server import Emulator
from tests.helpers import invoke, ok

pytestmark = pytest.mark.slow


def _free_ports(count: int = 3) -> int:
    """A base port with `count` consecutive free ports (API, web, files)."""
    for _ in range(200):
        base = random.randrange(20000, 60000)
        sockets = []
        try:
            for n in range(count):
                sock = socket.socket()
                sock.bind(("127.0.0.1", base + n))
                sockets.append(sock)
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise AssertionError("no free port range")


def test_a_run_carries_on_across_a_server_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _free_ports()
    state = tmp_path / "state"
    first = Emulator(config_dir=tmp_path / "first", port=port, state_dir=state).start()
    second: Emulator | None = None
    stopped = False
    try:
        for key, value in first.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.chdir(tmp_path)
        ok(invoke("templates", "sync", "--image", "ak-remote-worker:test-cpu"))
        first.create_queue("gpu")
        with running_agent(first, "gpu", log_dir=tmp_path / "agents") as agent:
            launched = ok(
                invoke(
                    "launch", "structured-classifier", "-q", "gpu",
                    "--set", "max_trials=1", "--set", "epochs=2",
                    "--set", "max_samples=120", "--set", "histogram_freq=0",
                )
            )  # fmt: skip
            run = launched.stdout.split()[0]
            # Mid-run: the job is training and has reported to the server.
            wait_for(
                lambda: (
                    first.get_task(run)["status"] == "in_progress"
                    and bool(first.state.task_events(run, "log"))
                ),
                600,
                0.2,
                "the run to start reporting",
            )
            before = first.get_task(run)
            first.stop()
            stopped = True
            assert first.internal_errors == []
            second = Emulator(config_dir=tmp_path / "second", port=port, state_dir=state).start()
            assert second.get_task(run)["status"] == "in_progress"
            assert second.get_task(run)["started"] == before["started"]
            done = wait_for_status(second, run, timeout=600, agent=agent)
            assert done["status"] == "completed", f"{done.get('status_message')}\n{agent.log()}"
        # What came before the restart and what came after, all on the second server.
        logs = [e["msg"] for e in second.state.task_events(run, "log")]
        assert any("test metrics:" in line for line in logs)
        scalars = second.state.task_events(run, "training_stats_scalar")
        assert {e["metric"] for e in scalars} >= {"epoch_loss", "epoch_accuracy"}
        (output,) = done["models"]["output"]
        model = second.state.models[output["model"]]
        path = model["uri"].split(second.files_url, 1)[1]
        from urllib.parse import unquote

        assert unquote(path) in second.state.files
        status = ok(invoke("status", run)).stdout
        assert "completed" in status
    finally:
        if second is not None:
            second.stop()
            assert second.internal_errors == []
        if not stopped:
            first.stop()
