"""Issue 13 item 1: only what `templates sync` made is a template, never a clone of one.

clearml-server copies system tags on clone and the Web UI's Clone keeps them; the emulator does
the same, so this test makes clones as the Web UI does (the SDK's clones:
tests/integration/test_template_identity.py).
"""

from __future__ import annotations

from ak_remote import contract
from tests.emulator.server import Emulator
from tests.helpers import JOB, cli_json, web_ui_clone


def test_a_template_synced_before_own_id_tags_is_adopted_not_duplicated(
    clearml_emulator: Emulator,
) -> None:
    synced = cli_json("templates", "sync")["created"]
    # As an older ak-remote left it: the template tag and the job tag, no own-id tag.
    for task_id in synced.values():
        task = clearml_emulator.get_task(task_id)
        tags = [t for t in task["system_tags"] if not t.startswith(contract.TEMPLATE_ID_TAG_PREFIX)]
        clearml_emulator.call_api("tasks.edit", task=task_id, system_tags=tags, force=True)
    legacy = clearml_emulator.get_task(synced[JOB])
    web_ui_clone(clearml_emulator, legacy, f"Clone Of {JOB}")
    web_ui_clone(clearml_emulator, legacy, JOB)  # a later clone with the same name
    result = cli_json("templates", "sync")
    assert result["created"] == {}
    assert result["duplicates"] == {}
    assert {job: entry["id"] for job, entry in result["updated"].items()} == synced
    assert sorted(row["id"] for row in cli_json("templates", "list")) == sorted(synced.values())
