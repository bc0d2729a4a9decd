"""The real clearml-agent (daemon and execute) against the emulator, without Docker."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.emulator.agent import run_execute, running_agent, wait_for_status
from tests.emulator.fixtures import RealServer, run_python, script_result, unique_name, wait_for
from tests.emulator.server import Emulator

Handle = Emulator | RealServer

GOOD_JOB = """
from clearml import Task
task = Task.init()
print("hello from the good job")
task.get_logger().report_scalar("accuracy", "val", 0.875, iteration=3)
task.upload_artifact("summary", artifact_object={"best": 0.875})
"""

BAD_JOB = """
from clearml import Task
task = Task.init()
print("about to fail")
raise SystemExit("the job failed on purpose")
"""

CREATE_SCRIPT = """
import json, sys
from pathlib import Path
from clearml import Task

ids = []
for name in sys.argv[2:]:
    task = Task.create(project_name="emulator/agent", task_name=name, script=f"{name}.py")
    if sys.argv[1] != "-":
        Task.enqueue(task, queue_name=sys.argv[1])
    ids.append(task.id)
print("RESULT " + json.dumps(ids))
"""


def _create_tasks(handle: Handle, work: Path, queue: str, **jobs: str) -> list[str]:
    work.mkdir(parents=True, exist_ok=True)
    for name, code in jobs.items():
        (work / f"{name}.py").write_text(code)
    proc = run_python(handle, CREATE_SCRIPT, work, args=[queue, *jobs])
    return list(script_result(proc))


def test_daemon_runs_queued_tasks_in_order_to_completed_and_failed(
    clearml_emulator: Handle, tmp_path: Path
) -> None:
    queue = unique_name(clearml_emulator, "cpu")
    clearml_emulator.create_queue(queue)
    good, bad = _create_tasks(
        clearml_emulator, tmp_path / "jobs", queue, good=GOOD_JOB, bad=BAD_JOB
    )
    assert clearml_emulator.get_task(good)["status"] == "queued"

    with running_agent(clearml_emulator, queue, "--cpu-only") as agent:
        if isinstance(clearml_emulator, Emulator):
            workers = clearml_emulator.call_api("workers.get_all")["workers"]
            (worker,) = [w for w in workers if w["id"] == agent.worker_id]
            assert [q["name"] for q in worker["queues"]] == [queue]
        done = wait_for_status(clearml_emulator, good, agent=agent)
        failed = wait_for_status(clearml_emulator, bad, agent=agent)

    assert done["status"] == "completed", done.get("status_message")
    assert failed["status"] == "failed"
    assert failed["status_reason"] == "worker execution exit code 1"
    assert failed["status_message"] == f"Changed by clearml-agent {agent.worker_id}"
    assert done["started"] < failed["started"]  # FIFO: the first enqueued ran first
    assert done["last_worker"] == agent.worker_id
    if not isinstance(clearml_emulator, Emulator):
        return
    em = clearml_emulator
    assert agent.worker_id not in em.state.workers  # unregistered on exit
    entry = next(iter(next(iter(done["last_metrics"].values())).values()))
    assert (entry["metric"], entry["variant"], entry["value"]) == ("accuracy", "val", 0.875)
    (artifact,) = [a for a in done["execution"]["artifacts"] if a["key"] == "summary"]
    assert artifact["uri"].startswith(em.files_url)
    good_log = "".join(e.get("msg", "") for e in em.state.task_events(good, "log"))
    assert "hello from the good job" in good_log
    bad_log = "".join(e.get("msg", "") for e in em.state.task_events(bad, "log"))
    assert "the job failed on purpose" in bad_log
    assert em.state.queues[em.state.tasks[good]["execution"]["queue"]]["entries"] == []
    # The only refusals are the ones the real server gives these clients too: the SDK first
    # tries a queue name as an id, the agent asks for an endpoint the open-source server lacks,
    # and it unregisters twice on exit.
    refused = {(r.endpoint, r.status, r.result_subcode) for r in em.failed_calls()}
    assert refused <= {
        ("queues.get_by_id", 400, 701),
        ("workers.get_runtime_properties", 404, 0),
        ("workers.unregister", 400, 1004),
    }


def test_execute_runs_one_task_by_id(clearml_emulator: Handle, tmp_path: Path) -> None:
    (task_id,) = _create_tasks(clearml_emulator, tmp_path / "jobs", "-", good=GOOD_JOB)
    assert clearml_emulator.get_task(task_id)["status"] == "created"
    proc = run_execute(clearml_emulator, task_id, cwd=tmp_path)
    if proc.returncode != 0:
        pytest.fail(f"clearml-agent execute failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    task = clearml_emulator.get_task(task_id)
    assert task["status"] == "completed"
    assert any(a["key"] == "summary" for a in task["execution"]["artifacts"])


SLOW_JOB = """
import time
from clearml import Task
task = Task.init()
for i in range(600):
    print(f"tick {i}", flush=True)
    time.sleep(0.5)
"""


def test_stop_of_a_running_task_is_carried_out_by_the_agent(
    clearml_emulator: Handle, tmp_path: Path
) -> None:
    queue = unique_name(clearml_emulator, "cpu")
    clearml_emulator.create_queue(queue)
    (task_id,) = _create_tasks(clearml_emulator, tmp_path / "jobs", queue, slow=SLOW_JOB)
    with running_agent(clearml_emulator, queue) as agent:
        # Wait until the job's own code runs: stopping earlier races with its Task.init, which
        # moves a stopped task back to in_progress (a transition the server allows).
        def ticking() -> bool:
            log = clearml_emulator.call_api("events.get_task_log", task=task_id, batch_size=50)
            return any("tick" in e.get("msg", "") for e in log["events"])

        wait_for(ticking, timeout=60, what="the job to print")
        wait_for(
            lambda: clearml_emulator.get_task(task_id).get("last_worker"),
            timeout=60,
            what="a worker report naming the task",
        )
        answer = clearml_emulator.call_api("tasks.stop", task=task_id)
        assert answer["fields"]["status_message"] == "stopping"  # the worker is asked
        task = wait_for_status(clearml_emulator, task_id, timeout=60, agent=agent)
    assert task["status"] == "stopped"
    assert task["status_message"] == f"Changed by clearml-agent {agent.worker_id}"


def test_daemon_create_queue(clearml_emulator: Handle, tmp_path: Path) -> None:
    name = unique_name(clearml_emulator, "fresh")
    with running_agent(clearml_emulator, name, "--create-queue") as agent:
        if isinstance(clearml_emulator, Emulator):
            queue = clearml_emulator.state.queue_by_name(name)
            assert queue is not None
            assert clearml_emulator.state.workers[agent.worker_id]["queues"] == [queue["id"]]
