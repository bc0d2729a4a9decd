"""Issue 13 items 3, 4 and 13: launch refuses what an agent cannot run before creating anything.

Against the emulator: the server's state is compared before and after each refused launch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ak_remote.clearml_api import client_from_config
from ak_remote.cli import cli
from ak_remote.errors import UsageError
from ak_remote.fleet.agents import build_agent_commands, load_queue_file
from ak_remote.launcher import templates
from tests.emulator.server import Emulator

JOB = "structured-classifier"


@pytest.fixture
def server(clearml_emulator: Emulator) -> Emulator:
    templates.sync(client_from_config(), "ak-remote/templates", "reg/w:1", "")
    clearml_emulator.create_queue("cpu")
    return clearml_emulator


def snapshot(emulator: Emulator) -> tuple[int, int, int]:
    with emulator.state.lock:
        state = emulator.state
        return len(state.tasks), len(state.queues), len(state.projects)


def refused(emulator: Emulator, *args: str) -> Any:
    before = snapshot(emulator)
    result = CliRunner().invoke(cli, ["launch", JOB, *args])
    assert result.exit_code == 2, result.output
    assert snapshot(emulator) == before
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_unknown_dataset_names_and_bad_ids_are_refused(server: Emulator) -> None:
    assert "unknown dataset 'nosuchdataset'" in refused(
        server, "-q", "cpu", "--set", "dataset=nosuchdataset"
    )
    assert "not a ClearML dataset id" in refused(
        server, "-q", "cpu", "--set", "dataset=clearml://not-an-id"
    )
    missing = "0123456789abcdef0123456789abcdef"
    assert f"no ClearML dataset {missing}" in refused(
        server, "-q", "cpu", "--set", f"dataset=clearml://{missing}"
    )
    # One bad value in a sweep refuses the whole sweep.
    refused(server, "-q", "cpu", "--sweep", "dataset=wine,nosuchdataset")


def test_local_paths_are_refused_because_agents_cannot_see_them(
    server: Emulator, tmp_path: Path
) -> None:
    local = tmp_path / "table.csv"
    local.write_text("a,b,target\n1,2,x\n3,4,y\n")
    for value in ("/nonexistent/file.csv", str(local), f"file://{local}"):
        line = refused(server, "-q", "cpu", "--set", f"dataset={value}")
        assert "an agent cannot see this machine's files" in line


def test_credentials_in_a_dataset_url_are_masked_in_errors(server: Emulator) -> None:
    line = refused(server, "-q", "cpu", "--set", "dataset=ftp://alice:s3cret@host.example/data.csv")
    assert "s3cret" not in line
    assert "alice" not in line
    assert "***@" in line


def test_one_queue_name_rule_for_every_command(server: Emulator, tmp_path: Path) -> None:
    bad = "q;rm -rf /"
    line = refused(server, "-q", bad, "--create-queue")
    assert "invalid queue name" in line
    with pytest.raises(UsageError):
        build_agent_commands([bad], gpus="0")
    queue_file = tmp_path / "queues.toml"
    queue_file.write_text(f'[[queue]]\nname = "{bad}"\n')
    with pytest.raises(UsageError):
        load_queue_file(queue_file)
    result = CliRunner().invoke(cli, ["resume", "0123456789abcdef0123456789abcdef", "-q", bad])
    assert result.exit_code == 2
    assert "invalid queue name" in result.output
    # A name the rule accepts is created by launch and accepted by `agent up`.
    ok = "cpu-2.small_x"
    result = CliRunner().invoke(cli, ["launch", JOB, "-q", ok, "--create-queue"])
    assert result.exit_code == 0, result.output
    assert build_agent_commands([ok], gpus="0")
