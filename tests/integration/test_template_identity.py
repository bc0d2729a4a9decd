"""Issue 13 item 1: only what `templates sync` made is a template, never a clone of one.

clearml-server copies system tags on clone and the Web UI's Clone keeps them; the emulator does
the same, so this test clones with the real SDK (in a fresh interpreter) and as the Web UI does.
"""

from __future__ import annotations

from typing import Any

from ak_remote import contract
from ak_remote.catalog import JOBS
from ak_remote.clearml_api import client_from_config
from ak_remote.launcher import templates
from tests.emulator.fixtures import run_python, script_result
from tests.emulator.server import Emulator
from tests.helpers import JOB, cli_json, web_ui_clone

SDK_CLONES = """
import json, sys
from clearml import Task
ids = []
for i in range(int(sys.argv[2])):
    clone = Task.clone(source_task=sys.argv[1])
    ids.append(clone.id)
Task.enqueue(ids[0], queue_name="cpu")
print("RESULT " + json.dumps(ids))
"""


def test_clones_of_a_template_never_become_templates(
    clearml_emulator: Emulator, tmp_path: Any
) -> None:
    synced = cli_json("templates", "sync")["created"]
    clearml_emulator.create_queue("cpu")
    original = clearml_emulator.get_task(synced[JOB])
    sdk_ids = script_result(
        run_python(clearml_emulator, SDK_CLONES, tmp_path / "sdk", args=[synced[JOB], "4"])
    )
    # What the server really did: every SDK clone carries the template's tags.
    for task_id in sdk_ids:
        assert contract.TEMPLATE_TAG in clearml_emulator.get_task(task_id)["system_tags"]
    web_ids = [
        web_ui_clone(clearml_emulator, original, f"Clone Of {JOB}"),
        web_ui_clone(clearml_emulator, original, JOB),  # renamed back to the job's name
    ]

    listed = cli_json("templates", "list")
    assert sorted(row["id"] for row in listed) == sorted(synced.values())

    plan = cli_json("launch", JOB, "-q", "cpu", "--dry-run")
    assert plan["template"]["id"] == synced[JOB]

    again = cli_json("templates", "sync")
    assert again["created"] == {}
    assert again["updated"] == {}
    assert again["duplicates"] == {}
    assert again["unchanged"] == synced

    # ak-remote's own clone of the template is a run, not a template.
    launched = cli_json("launch", JOB, "-q", "cpu")
    run = clearml_emulator.get_task(launched["runs"][0]["id"])
    assert contract.template_tags(run["system_tags"]) == []
    assert not contract.is_template(run)
    for task_id in [*sdk_ids, *web_ids]:
        assert not contract.is_template(clearml_emulator.get_task(task_id))
    # Runs made from clones show up in status (they are runs, not templates).
    client = client_from_config()
    assert len(templates.list_templates(client, contract.DEFAULT_TEMPLATE_PROJECT)) == len(JOBS)
