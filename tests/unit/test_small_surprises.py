"""Issue 13 item 6: the small surprises, each against the emulator as a user meets it."""

from __future__ import annotations

import json
import re

import pytest

from ak_remote.clearml_api import client_from_config
from ak_remote.launcher import templates
from ak_remote.launcher.launch import SWEEP_ID_AT_LAUNCH, LaunchRequest, launch
from tests.emulator.server import Emulator
from tests.helpers import FINISHED_SUMMARY, JOB, finished_run, free_port, invoke


def test_doctor_passes_a_healthy_cpu_only_setup(clearml_emulator: Emulator) -> None:
    queue_id = clearml_emulator.create_queue("cpu")
    clearml_emulator.call_api("workers.register", worker="host:cpu:0", queues=[queue_id])
    result = invoke("doctor")
    assert result.exit_code == 0, result.output
    assert "ok  queues: agents serve cpu" in result.stdout
    # Nothing serves any queue: that is a problem, named once, with a fix.
    clearml_emulator.call_api("workers.unregister", worker="host:cpu:0")
    result = invoke("doctor")
    assert result.exit_code == 4
    assert "no agent serves any queue (cpu)" in result.stdout


def test_doctor_on_an_unreachable_server_says_what_to_check(
    clearml_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("CLEARML_API_HOST", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AK_REMOTE_HTTP_BACKOFF", "0.01")
    result = invoke("doctor")
    assert result.exit_code == 4
    fix = next(line for line in result.stdout.splitlines() if "fix:" in line)
    assert "ak-remote doctor" not in fix
    assert "CLEARML_API_HOST" in fix


def test_an_address_that_is_not_a_url_is_one_line_without_retries(
    clearml_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLEARML_API_HOST", "localhost:8008")
    result = invoke("status", "--project", "x")
    assert result.exit_code == 4
    assert "retrying" not in result.output
    assert result.stderr.strip().splitlines() == [
        "Error: the ClearML server address 'localhost:8008' is not a URL (set CLEARML_API_HOST "
        "(or api.api_server in clearml.conf) to http(s)://HOST:PORT)"
    ]


def test_reproduce_defaults_to_the_original_queue(clearml_emulator: Emulator) -> None:
    gpu = clearml_emulator.create_queue("gpu-a100")
    task_id = finished_run(clearml_emulator, FINISHED_SUMMARY)
    clearml_emulator.call_api("tasks.edit", task=task_id, execution={"queue": gpu}, force=True)
    result = invoke("reproduce", task_id, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["queue"] == "gpu-a100"


def test_no_queue_hint_names_a_command_that_lists_queues(clearml_emulator: Emulator) -> None:
    task_id = finished_run(clearml_emulator, FINISHED_SUMMARY)  # no queue recorded, none configured
    result = invoke("reproduce", task_id, "--dry-run")
    assert result.exit_code == 2
    assert "ak-remote queues list" in result.stderr
    listing = invoke("queues", "list")
    assert listing.exit_code == 0
    assert "Usage:" not in listing.output


def test_wait_explains_the_servers_status_message(
    clearml_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ak_remote.commands.common import follow_runs

    monkeypatch.setenv("AK_REMOTE_POLL_INTERVAL", "0.05")
    client = client_from_config()
    templates.sync(client, "ak-remote/templates", "img:1", "")
    clearml_emulator.create_queue("gpu")
    result = launch(client, LaunchRequest(JOB, "gpu", sweep=["epochs=1,2"]))
    first, second = result.task_ids
    for task_id in (first, second):
        clearml_emulator.call(
            "queues.get_next_task", queue=clearml_emulator.state.queue_by_name("gpu")["id"]
        )
        clearml_emulator.call("tasks.started", task=task_id)
    clearml_emulator.call("tasks.completed", task=first, status_message="completed")
    clearml_emulator.call(
        "tasks.stopped", task=second, status_message="Forced stop (non-responsive)"
    )
    lines: list[str] = []
    monkeypatch.setattr("ak_remote.ui.info", lines.append)
    with pytest.raises(Exception, match="did not complete"):
        follow_runs(client, result.task_ids, 0.01)
    assert f"  {first} completed" in lines
    assert f"  {second} stopped (the server stopped it: no report from it for two hours)" in lines


def test_dry_run_never_shows_a_sweep_id_the_launch_will_not_have(
    clearml_emulator: Emulator,
) -> None:
    templates.sync(client_from_config(), "ak-remote/templates", "img:1", "")
    clearml_emulator.create_queue("gpu")
    dry = invoke("launch", JOB, "-q", "gpu", "--sweep", "epochs=1,2", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.stdout)
    assert plan["sweep_id"] == SWEEP_ID_AT_LAUNCH
    assert not re.search(r"sw-[0-9a-f]{8}", dry.stdout + dry.stderr)
    text = invoke("launch", JOB, "-q", "gpu", "--sweep", "epochs=1,2", "--dry-run")
    assert not re.search(r"sw-[0-9a-f]{8}", text.output)


def test_compare_accepts_format_md(clearml_emulator: Emulator) -> None:
    client = client_from_config()
    templates.sync(client, "ak-remote/templates", "img:1", "")
    clearml_emulator.create_queue("gpu")
    result = launch(client, LaunchRequest(JOB, "gpu", sweep=["epochs=1,2"]))
    md = invoke("compare", *result.task_ids, "--format", "md")
    assert md.exit_code == 0, md.output
    assert md.stdout == invoke("compare", *result.task_ids, "--format", "markdown").stdout
