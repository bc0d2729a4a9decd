"""reproduce: what gets pinned from a finished run's record, against the emulator.

The end-to-end test reproduces a real run; these cover the cases it cannot reach here: code
from a git repository (commit pinned), an image digest, runs that cannot be reproduced.
"""

from __future__ import annotations

import pytest

from ak_remote.clearml_api import client_from_config
from ak_remote.errors import UsageError
from ak_remote.launcher.reproduce import execute_reproduce, metric_deltas, plan_reproduce
from ak_remote.summary import RunSummary
from tests.emulator.server import Emulator
from tests.helpers import COMMIT, DIGEST, FINISHED_SUMMARY, finished_run, invoke


def test_a_git_run_is_cloned_with_commit_and_image_digest_pinned(
    clearml_emulator: Emulator,
) -> None:
    clearml_emulator.create_queue("gpu")
    source = finished_run(
        clearml_emulator,
        FINISHED_SUMMARY,
        script={
            "repository": "https://git.example.com/team/ak.git",
            "branch": "main",
            "entry_point": "jobs/structured_classifier.py",
            "working_dir": ".",
            "requirements": {"pip": "autokeras==3.0.0\n"},
        },
        container={"image": "reg/ak-remote-worker:0.1.0-gpu", "arguments": "--ipc=host"},
    )
    client = client_from_config()
    plan = plan_reproduce(client, source, "gpu")
    assert plan.warnings == []
    assert f"commit {COMMIT[:12]}" in plan.pinned
    assert f"image {DIGEST}" in plan.pinned
    new_id = execute_reproduce(client, plan)
    task = clearml_emulator.get_task(new_id)
    assert task["status"] == "queued"
    assert task["parent"] == source
    assert task["script"]["version_num"] == COMMIT
    assert task["script"]["repository"] == "https://git.example.com/team/ak.git"
    assert task["container"] == {"image": DIGEST, "arguments": "--ipc=host"}
    assert task["hyperparams"]["General"]["seed"]["value"] == "7"
    assert f"reproduces:{source}" in task["tags"]


def test_what_cannot_be_pinned_is_said(clearml_emulator: Emulator) -> None:
    clearml_emulator.create_queue("gpu")
    bare = {"metrics": {}, "reproducibility": {"git": {"dirty": True}}}
    source = finished_run(
        clearml_emulator,
        bare,
        script={"repository": "https://git.example.com/x.git", "entry_point": "a.py"},
        container={"image": "reg/img:latest"},
    )
    result = invoke("reproduce", source, "-q", "gpu", "--dry-run")
    assert result.exit_code == 0, result.output
    for warning in (
        "no commit recorded",
        "dirty but no diff",
        "no package list",
        "reg/img:latest has no recorded digest",
        "no data fingerprint",
    ):
        assert warning in result.stderr
    assert clearml_emulator.count("tasks.clone") == 0


def test_unfinished_runs_and_unknown_queues_are_refused(clearml_emulator: Emulator) -> None:
    clearml_emulator.create_queue("gpu")
    draft = clearml_emulator.create_task("draft")
    with pytest.raises(UsageError, match="only completed runs"):
        plan_reproduce(client_from_config(), draft, "gpu")
    source = finished_run(clearml_emulator, FINISHED_SUMMARY, script={"diff": "print(1)\n"})
    with pytest.raises(UsageError, match="existing queues: gpu"):
        plan_reproduce(client_from_config(), source, "nope")


def test_metric_deltas() -> None:
    deltas = metric_deltas(
        (RunSummary(metrics={"test_accuracy": 0.9, "test_loss": 0.3}), {}),
        (RunSummary(metrics={"test_accuracy": 0.85}), {}),
    )
    by_name = {d.name: d for d in deltas}
    assert by_name["test_accuracy"].delta == pytest.approx(-0.05)
    assert by_name["test_loss"].reproduced is None
    assert by_name["test_loss"].delta is None
