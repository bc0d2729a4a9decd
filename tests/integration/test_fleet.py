"""`doctor` and `agents` with a real clearml-agent listening on the emulator."""

from __future__ import annotations

import json

from tests.emulator.agent import running_agent
from tests.emulator.server import Emulator
from tests.helpers import invoke, outcome


def test_doctor_is_healthy_with_a_real_agent_listening(clearml_emulator: Emulator) -> None:
    clearml_emulator.create_queue("gpu")
    with running_agent(clearml_emulator, "gpu"):
        code, out, _ = outcome(invoke("doctor", "-q", "gpu"))
        assert code == 0, out
        assert "FAIL" not in out
        code, out, _ = outcome(invoke("agents", "--json"))
        assert code == 0
        rows = json.loads(out)
        assert len(rows) == 1
        assert rows[0]["queues"] == ["gpu"]
