"""Unit tier (the in-process emulator, no agents). Issue 20, items 5 and 7: a search whose
controller would share its trials' queue with a single agent is refused before anything is
created (the controller would hold the agent its trials wait for); with more agents it is a
warning saying how many trials can run; a queue nobody serves names `agent up`."""

from __future__ import annotations

import pytest

from tests.emulator.server import Emulator
from tests.helpers import error_lines, invoke

LAUNCH = ["launch", "structured-classifier", "-q", "gpu", "--set", "max_trials=4"]


@pytest.fixture
def server(clearml_emulator: Emulator) -> Emulator:
    result = invoke("templates", "sync", "--image", "ak-remote-worker:test-cpu")
    assert result.exit_code == 0, result.output
    clearml_emulator.create_queue("services")
    return clearml_emulator


def agents_on(emulator: Emulator, queue_id: str, count: int) -> None:
    for n in range(count):
        emulator.call_api("workers.register", worker=f"host:gpu{n}", queues=[queue_id])


@pytest.mark.parametrize("agents", [0, 1])
def test_one_agent_shared_with_the_controller_is_refused(server: Emulator, agents: int) -> None:
    agents_on(server, server.create_queue("gpu"), agents)
    before = len(server.state.tasks)
    result = invoke(*LAUNCH, "--parallel", "2", "--controller-queue", "gpu")
    assert result.exit_code == 2, result.output
    (line,) = error_lines(result.stderr)
    assert f"which {agents} agent(s) serve" in line
    assert "--controller-queue services" in line
    assert "--controller local" in line
    assert len(server.state.tasks) == before  # nothing created


def test_two_agents_shared_with_the_controller_are_a_warning(server: Emulator) -> None:
    agents_on(server, server.create_queue("gpu"), 2)
    result = invoke(*LAUNCH, "--parallel", "2", "--controller-queue", "gpu", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "the controller takes one of the 2 agents of 'gpu': at most 1 trial(s)" in result.stderr


def test_unserved_queues_name_the_command_that_serves_them(server: Emulator) -> None:
    server.create_queue("gpu")
    result = invoke(*LAUNCH, "--parallel", "2", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "(ak-remote agent up -q services --cpu-only)" in result.stderr
    assert "(ak-remote agent up -q gpu)" in result.stderr
    assert "ak-remote agent --queue" not in result.stderr
