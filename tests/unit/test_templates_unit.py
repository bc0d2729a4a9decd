"""Template contents and change detection, against real temporary git checkouts."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest

from ak_remote.catalog import PROJECT_ROOT, get_job
from ak_remote.contract import TEMPLATE_TAG
from ak_remote.launcher.templates import (
    changed_fields,
    job_of,
    pinned_requirements,
    script_section,
    template_fields,
)

JOB = get_job("structured-classifier")


def checkout(tmp_path: Path, remote: str | None) -> Path:
    """A copy of the job script and the worker lock in a fresh git repository."""
    root = tmp_path / "checkout"
    (root / "jobs").mkdir(parents=True)
    (root / "requirements").mkdir()
    shutil.copy(PROJECT_ROOT / "requirements" / "worker.lock", root / "requirements")
    (root / JOB.script).write_text("print('job')\n")
    git = ["git", "-C", str(root), "-c", "user.email=t@e.st", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    if remote:
        subprocess.run([*git, "remote", "add", "origin", remote], check=True)
    return root


def test_without_a_remote_the_script_travels_in_the_task(tmp_path: Path) -> None:
    root = checkout(tmp_path, remote=None)
    script = script_section(JOB, root)
    assert script["repository"] == ""
    assert script["version_num"] == ""
    assert script["entry_point"] == "structured_classifier.py"
    assert script["diff"] == "print('job')\n"
    assert "autokeras==3.0.0" in script["requirements"]["pip"].splitlines()


def test_with_a_remote_the_commit_and_diff_are_pinned_and_credentials_dropped(
    tmp_path: Path,
) -> None:
    root = checkout(tmp_path, remote="https://user:s3cret@git.example.com/team/ak.git")
    (root / JOB.script).write_text("print('changed')\n")
    script = script_section(JOB, root)
    head = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert script["repository"] == "https://git.example.com/team/ak.git"
    assert "s3cret" not in str(script)
    assert script["version_num"] == head
    assert script["entry_point"] == JOB.script
    assert "+print('changed')" in script["diff"]


def test_pinned_requirements_drop_comments() -> None:
    pins = pinned_requirements().splitlines()
    assert pins
    assert all("==" in line and "#" not in line for line in pins)


def test_template_fields_hold_typed_defaults_image_and_tags(tmp_path: Path) -> None:
    fields = template_fields(JOB, "reg/img:1", "--ipc=host", checkout(tmp_path, None))
    general = fields["hyperparams"]["General"]
    assert set(general) == set(JOB.params.names())
    assert general["epochs"] == {
        "section": "General",
        "name": "epochs",
        "value": "10",
        "type": "int",
        "description": JOB.params.get("epochs").help,
    }
    assert fields["container"] == {"image": "reg/img:1", "arguments": "--ipc=host"}
    assert TEMPLATE_TAG in fields["system_tags"]
    assert job_of(fields) is JOB


def test_change_detection(tmp_path: Path) -> None:
    want = template_fields(JOB, "reg/img:1", "", checkout(tmp_path, None))
    server_copy = copy.deepcopy(want)
    server_copy["script"]["binary"] = "python3"  # the server adds fields of its own
    server_copy["system_tags"].append("hidden")
    server_copy["id"] = "x"
    assert changed_fields(want, server_copy) == []

    edited = copy.deepcopy(server_copy)
    edited["hyperparams"]["General"]["epochs"]["value"] = "99"
    assert changed_fields(want, edited) == ["hyperparams"]

    extra = copy.deepcopy(server_copy)
    extra["hyperparams"]["General"]["stale"] = {"value": "1"}
    assert changed_fields(want, extra) == ["hyperparams"]

    moved = copy.deepcopy(server_copy)
    moved["container"]["image"] = "other:2"
    assert changed_fields(want, moved) == ["container"]


@pytest.mark.parametrize("field", ["tags", "comment", "script"])
def test_each_field_change_is_seen(tmp_path: Path, field: str) -> None:
    want = template_fields(JOB, "img", "", checkout(tmp_path, None))
    have = copy.deepcopy(want)
    have[field] = {"tags": ["other"], "comment": "old", "script": {"diff": "old"}}[field]
    assert changed_fields(want, have) == [field]


@pytest.mark.parametrize(
    ("image", "lock", "tensorflow"),
    [
        ("reg/ak-remote-worker:0.1.0-gpu", "requirements/worker-gpu.lock", "tensorflow==2.21.0"),
        ("ak-remote-worker:gpu", "requirements/worker-gpu.lock", "tensorflow==2.21.0"),
        ("ak-remote-worker:0.1.0-cpu", "requirements/worker.lock", "tensorflow-cpu==2.21.0"),
        ("gpu-registry.example/ak:1-cpu", "requirements/worker.lock", "tensorflow-cpu==2.21.0"),
    ],
)
def test_the_recorded_lock_matches_the_image(image: str, lock: str, tensorflow: str) -> None:
    from ak_remote.launcher.templates import lock_for_image

    assert lock_for_image(image) == lock
    pins = template_fields(JOB, image, "")["script"]["requirements"]["pip"].splitlines()
    assert tensorflow in pins


def test_code_warnings(tmp_path: Path) -> None:
    from ak_remote.launcher.templates import code_warnings

    assert code_warnings(checkout(tmp_path / "a", remote=None)) == []
    root = checkout(tmp_path / "b", remote="https://git.example.com/x.git")
    warnings = code_warnings(root)
    assert len(warnings) == 1
    assert "on no remote branch" in warnings[0]
    (root / JOB.script).write_text("print('edited')\n")
    assert any("uncommitted changes" in w for w in code_warnings(root))


@pytest.mark.parametrize(
    ("remote", "shared"),
    [
        ("https://git.example.com/team/ak.git", True),
        ("ssh://git@git.example.com/team/ak.git", True),
        ("git@git.example.com:team/ak.git", True),
        ("/srv/git/ak-remote", False),  # a clone of a local folder (as CI makes)
        ("../ak-remote", False),
        ("file:///srv/git/ak-remote", False),
    ],
)
def test_only_a_remote_other_hosts_can_clone_is_recorded(
    tmp_path: Path, remote: str, shared: bool
) -> None:
    from ak_remote.launcher.templates import code_warnings, shared_remote

    root = checkout(tmp_path, remote=remote)
    assert (shared_remote(root) is not None) is shared
    script = script_section(JOB, root)
    if shared:
        assert script["repository"]
        assert script["entry_point"] == JOB.script
    else:
        assert script["repository"] == ""
        assert script["diff"] == "print('job')\n"
        assert code_warnings(root) == []
