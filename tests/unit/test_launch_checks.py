"""Issue 13 items 3, 4 and 13: launch refuses what an agent cannot run before creating anything.

Against the emulator: the server's state is compared before and after each refused launch.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ak_remote.errors import UsageError
from ak_remote.fleet.agents import build_agent_commands, load_queue_file
from tests.emulator.server import Emulator
from tests.helpers import JOB, invoke, refused


def test_unknown_dataset_names_and_bad_ids_are_refused(synced_server: Emulator) -> None:
    assert "unknown dataset 'nosuchdataset'" in refused(
        synced_server, "-q", "cpu", "--set", "dataset=nosuchdataset"
    )
    assert "not a ClearML dataset id" in refused(
        synced_server, "-q", "cpu", "--set", "dataset=clearml://not-an-id"
    )
    missing = "0123456789abcdef0123456789abcdef"
    assert f"no ClearML dataset {missing}" in refused(
        synced_server, "-q", "cpu", "--set", f"dataset=clearml://{missing}"
    )
    # One bad value in a sweep refuses the whole sweep.
    refused(synced_server, "-q", "cpu", "--sweep", "dataset=wine,nosuchdataset")


def test_local_paths_are_refused_because_agents_cannot_see_them(
    synced_server: Emulator, tmp_path: Path
) -> None:
    local = tmp_path / "table.csv"
    local.write_text("a,b,target\n1,2,x\n3,4,y\n")
    for value in ("/nonexistent/file.csv", str(local), f"file://{local}"):
        line = refused(synced_server, "-q", "cpu", "--set", f"dataset={value}")
        assert "an agent cannot see this machine's files" in line


def test_credentials_in_a_dataset_url_are_masked_in_errors(synced_server: Emulator) -> None:
    line = refused(
        synced_server, "-q", "cpu", "--set", "dataset=ftp://alice:s3cret@host.example/data.csv"
    )
    assert "s3cret" not in line
    assert "alice" not in line
    assert "***@" in line


def test_one_queue_name_rule_for_every_command(synced_server: Emulator, tmp_path: Path) -> None:
    bad = "q;rm -rf /"
    line = refused(synced_server, "-q", bad, "--create-queue")
    assert "invalid queue name" in line
    with pytest.raises(UsageError):
        build_agent_commands([bad], gpus="0")
    queue_file = tmp_path / "queues.toml"
    queue_file.write_text(f'[[queue]]\nname = "{bad}"\n')
    with pytest.raises(UsageError):
        load_queue_file(queue_file)
    result = invoke("resume", "0123456789abcdef0123456789abcdef", "-q", bad)
    assert result.exit_code == 2
    assert "invalid queue name" in result.output
    # A name the rule accepts is created by launch and accepted by `agent up`.
    ok = "cpu-2.small_x"
    result = invoke("launch", JOB, "-q", ok, "--create-queue")
    assert result.exit_code == 0, result.output
    assert build_agent_commands([ok], gpus="0")
