"""`templates sync` and `templates list` against the emulator: idempotent, updating, exact."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ak_remote import contract
from ak_remote.catalog import JOBS, PROJECT_ROOT, get_job
from ak_remote.clearml_api import client_from_config
from ak_remote.launcher import templates
from ak_remote.params import ParamSet
from tests.emulator.server import Emulator
from tests.helpers import invoke

WRITES = ("tasks.create", "tasks.edit", "projects.create", "tasks.clone", "tasks.delete")


def template_tasks(emulator: Emulator) -> list[dict[str, Any]]:
    with emulator.state.lock:
        return [
            t for t in emulator.state.tasks.values() if contract.TEMPLATE_TAG in t["system_tags"]
        ]


def writes(emulator: Emulator) -> list[str]:
    return [r.endpoint for r in emulator.requests if r.endpoint in WRITES]


def sync(*args: str) -> dict[str, Any]:
    result = invoke("templates", "sync", "--json", *args)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def test_sync_creates_one_exact_template_per_job(clearml_emulator: Emulator) -> None:
    created = sync("--image", "reg/ak-remote-worker:0.1.0-gpu")["created"]
    assert sorted(created) == sorted(JOBS)
    tasks = {templates.job_of(t).name: t for t in template_tasks(clearml_emulator)}  # type: ignore[union-attr]
    assert sorted(tasks) == sorted(JOBS)
    project = clearml_emulator.state.project_by_name("ak-remote/templates")
    assert project is not None
    job = get_job("image-classifier")
    task = tasks[job.name]
    assert task["id"] == created[job.name]
    assert task["status"] == "created"
    assert task["type"] == "training"
    assert task["project"] == project["id"]
    assert task["container"] == {
        "image": "reg/ak-remote-worker:0.1.0-gpu",
        "arguments": "--ipc=host",
    }
    script = task["script"]
    # This checkout has no git remote: the script itself travels in the task.
    assert script["diff"] == (PROJECT_ROOT / job.script).read_text()
    assert script["entry_point"] == "image_classifier.py"
    assert script["working_dir"] == "."
    assert "autokeras==3.0.0" in script["requirements"]["pip"].splitlines()
    general = task["hyperparams"]["General"]
    assert set(general) == set(job.params.names())
    for spec in job.params.specs:
        entry = general[spec.name]
        assert entry["type"] == spec.type
        assert entry["description"] == spec.help
    assert general["max_trials"]["value"] == "3"


def test_second_sync_changes_nothing_and_writes_nothing(clearml_emulator: Emulator) -> None:
    first = sync()
    clearml_emulator.reset_log()
    second = sync()
    assert second["created"] == {}
    assert second["updated"] == {}
    assert second["unchanged"] == first["created"]
    assert writes(clearml_emulator) == []
    assert len(template_tasks(clearml_emulator)) == len(JOBS)


def test_a_changed_default_updates_the_template_in_place(clearml_emulator: Emulator) -> None:
    client = client_from_config()
    job = get_job("structured-classifier")
    first = templates.sync(client, "ak-remote/templates", "img:1", "", jobs=[job])
    template_id = first.created[job.name]
    specs = tuple(
        dataclasses.replace(s, default=20) if s.name == "epochs" else s for s in job.params.specs
    )
    changed = dataclasses.replace(job, params=ParamSet(specs))
    clearml_emulator.reset_log()
    result = templates.sync(client, "ak-remote/templates", "img:1", "", jobs=[changed])
    assert result.updated == {job.name: (template_id, ["hyperparams"])}
    assert writes(clearml_emulator) == ["tasks.edit"]
    (task,) = template_tasks(clearml_emulator)
    assert task["id"] == template_id
    assert task["hyperparams"]["General"]["epochs"]["value"] == "20"
    assert task["hyperparams"]["General"]["seed"]["value"] == "42"


def test_a_new_image_updates_only_the_container(clearml_emulator: Emulator) -> None:
    sync("--image", "img:1")
    clearml_emulator.reset_log()
    updated = sync("--image", "img:2")["updated"]
    assert {v["fields"][0] for v in updated.values()} == {"container"}
    assert len(updated) == len(JOBS)
    assert {t["container"]["image"] for t in template_tasks(clearml_emulator)} == {"img:2"}
    assert set(writes(clearml_emulator)) == {"tasks.edit"}


def test_list_shows_the_templates(clearml_emulator: Emulator) -> None:
    empty = invoke("templates", "list")
    assert empty.exit_code == 0
    assert "templates sync" in empty.stderr
    sync("--image", "img:9")
    result = invoke("templates", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert sorted(r["job"] for r in rows) == sorted(JOBS)
    assert {r["image"] for r in rows} == {"img:9"}
    table = invoke("templates", "list")
    assert "structured-classifier" in table.stdout
    assert "img:9" in table.stdout


def test_bad_image_is_refused_before_any_write(clearml_emulator: Emulator) -> None:
    result = invoke("templates", "sync", "--image", "two words")
    assert result.exit_code == 2
    assert writes(clearml_emulator) == []
    assert template_tasks(clearml_emulator) == []
