"""The emulator and the Web UI's API version, with processes: the SDK in a fresh interpreter
still calls its own services version, and two emulators (`python -m tests.emulator`) run side
by side with agents of their own. The rest: tests/unit/test_emulator_webui.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.emulator.server import Emulator
from tests.helpers import http_get


def test_the_sdk_still_uses_its_own_services_version(
    clearml_emulator: Emulator, tmp_path: Path
) -> None:
    """The token says 2.31; the SDK picks its newest services (2.23) and calls those paths."""
    from tests.emulator.fixtures import run_python, script_result

    proc = run_python(
        clearml_emulator,
        """
        import json
        from clearml import Task
        from clearml.backend_api.session import Session
        task = Task.create(project_name="p", task_name="t")
        Task.get_task(task_id=task.id)
        print("RESULT", json.dumps([Session.api_version, Session.max_api_version]))
        """,
        tmp_path,
    )
    assert script_result(proc) == ["2.23", "2.31"]
    versions = {r.version for r in clearml_emulator.requests if r.endpoint.startswith("tasks.")}
    assert versions == {"2.23"}


def test_two_emulators_on_one_machine(tmp_path: Path) -> None:
    """Each emulator's agents get worker ids of their own (an agent refuses to start with the id
    of one running on the machine, whichever server it serves), and an agent that dies is no
    longer reported."""
    import psutil

    logs = [tmp_path / f"emu{n}.log" for n in range(2)]
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.emulator",
                "--agents",
                "1",
                "--controller-queue",
                "",
                "--config-out",
                str(tmp_path / f"emu{n}.conf"),
            ],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).parents[1],
        )
        for n, log in enumerate(logs)
    ]
    try:
        apis: list[str] = []
        workers: list[list[str]] = []
        for log in logs:
            deadline = time.monotonic() + 120
            while "config: export" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
            api = log.read_text().split("emulator: API ", 1)[1].split(",", 1)[0]
            apis.append(api)
            found: list[str] = []
            while not found:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
                found = _workers(api)
            workers.append(found)
        assert len(workers[0]) == len(workers[1]) == 1
        assert workers[0] != workers[1]
        # The first emulator's agent dies: the emulator says so and stops listing it.
        agents = [
            c
            for c in psutil.Process(processes[0].pid).children()
            if "clearml-agent" in " ".join(c.cmdline())
        ]
        assert len(agents) == 1
        agents[0].kill()
        deadline = time.monotonic() + 60
        while _workers(apis[0]):
            assert time.monotonic() < deadline, logs[0].read_text()
            time.sleep(0.5)
        assert f"agent {workers[0][0]} exited" in logs[0].read_text()
        assert _workers(apis[1]) == workers[1]
        assert processes[1].poll() is None
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(60)


def _workers(api: str) -> list[str]:
    import base64

    basic = base64.b64encode(b"EMULATORACCESSKEY:emulator-secret-key-0123456789").decode()
    _, _, body = http_get(f"{api}/auth.login", {"Authorization": f"Basic {basic}"})
    token = json.loads(body)["data"]["token"]
    _, _, body = http_get(
        f"{api}/workers.get_all", {"Authorization": f"Bearer {token}"}, method="POST", body=b"{}"
    )
    return sorted(w["id"] for w in json.loads(body)["data"]["workers"])
