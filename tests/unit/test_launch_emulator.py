"""`launch` against the emulator with the real SDK session: exact tasks, sweeps, all or nothing.

Every test asserts on the server's state, not on what the client believes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ak_remote import contract
from ak_remote.catalog import get_job
from ak_remote.clearml_api import Client, client_from_config
from ak_remote.cli import cli
from ak_remote.contract import BATCH_TAG_PREFIX
from ak_remote.errors import ServerError, UsageError
from ak_remote.launcher.launch import (
    LaunchRequest,
    execute_launch,
    launch,
    plan_launch,
)
from tests.emulator.server import Emulator
from tests.helpers import JOB, free_port, invoke, launched, queue_entries, value_or_refusal

WRITES = {
    "tasks.create",
    "tasks.clone",
    "tasks.edit",
    "tasks.enqueue",
    "tasks.enqueue_many",
    "tasks.delete",
    "tasks.delete_many",
    "tasks.dequeue",
    "tasks.dequeue_many",
    "tasks.stop_many",
    "queues.create",
    "projects.create",
}


def writes(emulator: Emulator) -> list[str]:
    return [r.endpoint for r in emulator.requests if r.endpoint in WRITES]


def template_doc(emulator: Emulator, job: str = JOB) -> dict[str, Any]:
    with emulator.state.lock:
        return next(
            t
            for t in emulator.state.tasks.values()
            if f"{contract.JOB_TAG_PREFIX}{job}" in t["system_tags"]
            and contract.TEMPLATE_TAG in t["system_tags"]
        )


# -- validation creates nothing --------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "epochz=3"], "valid parameters: dataset, target"),
        (["--set", "epochs=three"], "not a valid int"),
        (["--set", "epochs=0"], "below 1"),
        (["--sweep", "tuner=greedy,nope"], "not one of greedy"),
        (["--set", "epochs=2", "--sweep", "epochs=3,4"], "both in --set and --sweep"),
        (["--tags", "-x"], "filter operator"),
        (["--docker", "--privileged"], "invalid image"),
        (["--name", "a\x07b"], "control characters"),
        (["-q", "nope"], "existing queues: gpu"),
    ],
)
def test_invalid_launches_create_nothing(
    gpu_server: Emulator, argv: list[str], message: str
) -> None:
    before = len(gpu_server.state.tasks)
    queue = [] if "-q" in argv else ["-q", "gpu"]
    result = invoke("launch", JOB, *queue, *argv)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert len(gpu_server.state.tasks) == before
    assert writes(gpu_server) == []


def test_unknown_template_says_to_sync(clearml_emulator: Emulator) -> None:
    clearml_emulator.create_queue("gpu")
    result = invoke("launch", JOB, "-q", "gpu")
    assert result.exit_code == 2
    assert "ak-remote templates sync" in result.stderr
    assert launched(clearml_emulator) == []


def test_dry_run_prints_the_plan_and_creates_nothing(gpu_server: Emulator) -> None:
    result = CliRunner().invoke(
        cli, ["launch", JOB, "-q", "gpu", "--sweep", "epochs=1,2", "--dry-run", "--json"]
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert [r["overrides"] for r in plan["runs"]] == [{"epochs": "1"}, {"epochs": "2"}]
    clone = plan["runs"][0]["clone_request"]
    assert clone["task"] == template_doc(gpu_server)["id"]
    assert clone["new_task_hyperparams"]["General"]["epochs"]["value"] == "1"
    assert writes(gpu_server) == []
    assert launched(gpu_server) == []


# -- exact tasks -----------------------------------------------------------------------------


def test_launch_with_overrides_creates_exactly_the_expected_task(gpu_server: Emulator) -> None:
    template = template_doc(gpu_server)
    result = CliRunner().invoke(
        cli,
        [
            "launch",
            JOB,
            "-q",
            "gpu",
            "--set",
            "epochs=7",
            "--set",
            "tuner=random",
            "--docker",
            "reg/other:2",
            "--name",
            "wine, quick",
            "--tags",
            "exp1,wine",
            "--project",
            "team/wine",
        ],
    )
    assert result.exit_code == 0, result.output
    task_id = result.stdout.strip()
    assert len(task_id) == 32
    assert "\n" not in task_id
    assert task_id in result.stderr  # the Web UI link
    assert "ak-remote status" in result.stderr

    (task,) = launched(gpu_server)
    assert task["id"] == task_id
    assert task["name"] == "wine, quick"
    assert task["status"] == "queued"
    assert queue_entries(gpu_server) == [task_id]
    assert task["tags"] == ["ak-remote", "exp1", "wine"]
    assert f"{contract.JOB_TAG_PREFIX}{JOB}" in task["system_tags"]
    assert gpu_server.state.projects[task["project"]]["name"] == "team/wine"
    assert task["container"] == {"image": "reg/other:2", "arguments": "--ipc=host"}
    assert task["script"] == template["script"]
    general = task["hyperparams"]["General"]
    want = {k: dict(v) for k, v in template["hyperparams"]["General"].items()}
    want["epochs"]["value"] = "7"
    want["tuner"]["value"] = "random"
    assert general == want  # every other parameter, type and description kept
    # one clone, one enqueue_many: the whole launch in two writes
    assert writes(gpu_server) == ["projects.create", "tasks.clone", "tasks.enqueue_many"]


def test_six_run_sweep_is_six_queued_tasks_with_one_sweep_id(gpu_server: Emulator) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "launch",
            JOB,
            "-q",
            "gpu",
            "--sweep",
            "epochs=1,2,3",
            "--sweep",
            "tuner=greedy,random",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    ids = [r["id"] for r in data["runs"]]
    tasks = {t["id"]: t for t in launched(gpu_server)}
    assert sorted(tasks) == sorted(ids)
    assert len(ids) == 6
    assert queue_entries(gpu_server) == ids
    sweep_tags = {tag for t in tasks.values() for tag in t["tags"] if tag.startswith("sweep:")}
    assert sweep_tags == {f"sweep:{data['sweep_id']}"}
    points = {
        (
            t["hyperparams"]["General"]["epochs"]["value"],
            t["hyperparams"]["General"]["tuner"]["value"],
        )
        for t in tasks.values()
    }
    assert points == {(e, u) for e in "123" for u in ("greedy", "random")}
    assert all(t["status"] == "queued" for t in tasks.values())
    assert gpu_server.count("tasks.enqueue_many") == 1
    assert gpu_server.count("tasks.clone") == 6


# -- all or nothing --------------------------------------------------------------------------


def _fail_after(emulator: Emulator, n: int, endpoint: str, **fault: Any) -> Any:
    """A progress callback that injects a fault once `n` runs were created."""

    def progress(text: str) -> None:
        if text.startswith(f"created {n}/"):
            emulator.fail_next(endpoint, **fault)

    return progress


def _request(**kwargs: Any) -> LaunchRequest:
    base: dict[str, Any] = {
        "template": JOB,
        "queue": "gpu",
        "sweep": ["epochs=1,2,3", "tuner=greedy,random"],
    }
    return LaunchRequest(**{**base, **kwargs})


def test_a_failure_at_the_fourth_clone_leaves_no_orphans(gpu_server: Emulator) -> None:
    client = client_from_config()
    progress = _fail_after(gpu_server, 3, "tasks.clone", times=50, mode="500")
    with pytest.raises(ServerError) as err:
        launch(client, _request(), progress)
    assert "after 3 of 6 runs were created" in str(err.value)
    assert "removed them all, nothing was launched" in str(err.value)
    assert launched(gpu_server) == []
    assert queue_entries(gpu_server) == []
    assert gpu_server.count("tasks.delete_many") == 1


def test_a_refused_enqueue_leaves_no_orphans(gpu_server: Emulator) -> None:
    gpu_server.fail_next("tasks.enqueue_many", times=50, mode="503")
    with pytest.raises(ServerError, match="nothing was launched"):
        launch(client_from_config(), _request())
    assert launched(gpu_server) == []
    assert queue_entries(gpu_server) == []


def test_ctrl_c_mid_launch_leaves_no_orphans(gpu_server: Emulator) -> None:
    def progress(text: str) -> None:
        if text.startswith("created 4/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        launch(client_from_config(), _request(), progress)
    assert launched(gpu_server) == []
    assert queue_entries(gpu_server) == []


@pytest.mark.parametrize(
    ("endpoint", "mode"),
    [
        ("tasks.clone", "500"),
        ("tasks.clone", "503"),
        ("tasks.clone", "timeout"),
        ("tasks.clone", "drop_response"),
        ("tasks.enqueue_many", "500"),
        ("tasks.enqueue_many", "timeout"),
        ("tasks.enqueue_many", "drop_response"),
    ],
)
def test_transient_faults_are_survived_without_duplicates(
    gpu_server: Emulator, endpoint: str, mode: str
) -> None:
    progress = _fail_after(gpu_server, 2, endpoint, times=1, mode=mode, hold_s=0.2)
    if endpoint == "tasks.enqueue_many":
        gpu_server.fail_next(endpoint, times=1, mode=mode, hold_s=0.2)
        progress = None
    result = launch(client_from_config(), _request(), progress)
    tasks = launched(gpu_server)
    assert sorted(t["id"] for t in tasks) == sorted(result.task_ids)
    assert len(tasks) == 6  # no duplicate even when the lost call took effect
    assert all(t["status"] == "queued" for t in tasks)
    assert sorted(queue_entries(gpu_server)) == sorted(result.task_ids)
    tokens = [tag for t in tasks for tag in t["system_tags"] if tag.startswith("ak-remote-launch:")]
    assert len(set(tokens)) == 6


def test_server_gone_mid_sweep_names_exactly_the_runs_that_exist(gpu_server: Emulator) -> None:
    def progress(text: str) -> None:
        if text.startswith("created 3/"):
            for endpoint in ("tasks.clone", "tasks.get_all", "tasks.delete_many"):
                gpu_server.fail_next(endpoint, times=100, mode="503")

    with pytest.raises(ServerError) as err:
        launch(client_from_config(), _request(), progress)
    left = launched(gpu_server)
    assert len(left) == 3
    assert queue_entries(gpu_server) == []
    message = str(err.value)
    for task in left:
        assert task["id"] in message
    assert "ak-remote abort --delete" in message
    assert f"{BATCH_TAG_PREFIX}" in message  # how to find an unconfirmed one

    # once the server answers again, the hint's command removes them
    gpu_server._faults.clear()
    ids = [t["id"] for t in left]
    result = invoke("abort", "--delete", *ids)
    assert result.exit_code == 0, result.output
    assert launched(gpu_server) == []


def test_plan_then_execute_is_the_library_api(gpu_server: Emulator) -> None:
    client = Client()
    plan = plan_launch(client, _request(sweep=[], sets=["max_trials=2"]))
    assert writes(gpu_server) == []
    result = execute_launch(client, plan)
    (task,) = launched(gpu_server)
    assert result.task_ids == [task["id"]]
    assert task["hyperparams"]["General"]["max_trials"]["value"] == "2"


def test_create_queue_only_when_asked(gpu_server: Emulator) -> None:
    with pytest.raises(UsageError, match="--create-queue"):
        launch(client_from_config(), _request(queue="new-q", sweep=[]))
    result = launch(client_from_config(), _request(queue="new-q", sweep=[], create_queue=True))
    assert queue_entries(gpu_server, "new-q") == result.task_ids


# -- hostile overrides (property-based, against the real server round trip of a plan) ---------


PARAMS = get_job(JOB).params


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=st.sampled_from([*PARAMS.names(), "nope", "General/epochs", "../x"]),
    value=st.one_of(
        st.text(max_size=40),
        st.integers(-(10**12), 10**12).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(str),
        st.sampled_from(["$(rm -rf /)", "`id`", "a;b", "x" * 5000, "𝟘", "\x00"]),
    ),
)
def test_any_override_is_refused_cleanly_or_stored_canonically(
    gpu_server: Emulator, key: str, value: str
) -> None:
    client = client_from_config()
    before = len(gpu_server.state.tasks)
    plan = value_or_refusal(
        lambda: plan_launch(client, _request(sweep=[], sets=[f"{key}={value}"]))
    )
    if isinstance(plan, UsageError):
        assert plan.hint
        assert len(str(plan)) < 6000
        assert len(gpu_server.state.tasks) == before
        return
    (run,) = plan.runs
    name = PARAMS.get(key).name
    stored = run.clone_fields["new_task_hyperparams"]["General"][name]["value"]
    assert PARAMS.get(name).parse(stored) == PARAMS.get(name).parse(value.strip())
    assert len(gpu_server.state.tasks) == before


# -- server trouble: one line, exit 4, what to do --------------------------------------------


def test_unreachable_server_says_what_to_check(
    gpu_server: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("CLEARML_API_HOST", f"http://127.0.0.1:{port}")
    result = invoke("launch", JOB, "-q", "gpu")
    assert result.exit_code == 4
    assert f"cannot reach the ClearML server at http://127.0.0.1:{port}" in result.stderr
    assert "CLEARML_API_HOST" in result.stderr
    assert "ak-remote doctor" in result.stderr
    assert "Traceback" not in result.output
    assert gpu_server.secret_key not in result.output


def test_rejected_credentials_say_so_without_echoing_them(
    gpu_server: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLEARML_API_SECRET_KEY", "wrong-secret-value")
    result = invoke("status", "--project", "ak-remote")
    assert result.exit_code == 4
    assert "rejected the credentials" in result.stderr
    assert "clearml-init" in result.stderr
    assert "wrong-secret-value" not in result.output


# -- other templates -------------------------------------------------------------------------


def test_any_task_id_can_be_the_template_with_its_stored_types(gpu_server: Emulator) -> None:
    general = {
        "lr": {"section": "General", "name": "lr", "value": "0.1", "type": "float"},
        "note": {"section": "General", "name": "note", "value": "x"},
    }
    source = gpu_server.create_task("my own draft", hyperparams={"General": general})
    bad = invoke("launch", source, "-q", "gpu", "--set", "lr=fast")
    assert bad.exit_code == 2
    assert "not a valid float" in bad.stderr
    unknown = invoke("launch", source, "-q", "gpu", "--set", "epochs=1")
    assert unknown.exit_code == 2
    assert "valid parameters: lr, note" in unknown.stderr
    result = invoke("launch", source, "-q", "gpu", "--sweep", "lr=0.01,0.001")
    assert result.exit_code == 0, result.output
    clones = [t for t in launched(gpu_server) if t["id"] != source]
    values = sorted(t["hyperparams"]["General"]["lr"]["value"] for t in clones)
    assert values == ["0.001", "0.01"]
    assert all(t["hyperparams"]["General"]["note"]["value"] == "x" for t in clones)
    assert all(t["parent"] == source for t in clones)


def test_a_huge_sweep_is_refused_before_asking_the_server(gpu_server: Emulator) -> None:
    values = ",".join(str(i) for i in range(1, 30))
    result = CliRunner().invoke(
        cli,
        ["launch", JOB, "-q", "gpu", "--sweep", f"seed={values}", "--sweep", f"epochs={values}"],
    )
    assert result.exit_code == 2
    assert "841 runs" in result.stderr
    assert gpu_server.requests == []  # refused before a single request


def test_the_cli_says_when_it_retries(gpu_server: Emulator) -> None:
    gpu_server.fail_next("tasks.clone", times=1, mode="drop_response")
    result = invoke("launch", JOB, "-q", "gpu")
    assert result.exit_code == 0, result.output
    assert "tasks.clone failed (connection closed without a response); retrying" in result.stderr
    assert len(launched(gpu_server)) == 1
    assert result.stdout.strip() == launched(gpu_server)[0]["id"]
