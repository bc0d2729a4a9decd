"""`queues apply`, `agent up --print`, `agents` and `doctor` against the emulator (no agent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.emulator.server import Emulator
from tests.helpers import invoke, outcome

SKIP = "CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL=1"
DECLARED = ["gpu", "gpu-large", "cpu", "services"]


def queue_names(emulator: Emulator) -> list[str]:
    return sorted(q["name"] for q in emulator.state.queues.values())


def test_queues_apply_creates_the_missing_ones_and_is_idempotent(
    clearml_emulator: Emulator,
) -> None:
    gpu_id = clearml_emulator.create_queue("gpu")
    code, out, err = outcome(invoke("queues", "apply", "--json"))
    assert code == 0, err
    assert json.loads(out) == {
        "created": ["gpu-large", "cpu", "services"],
        "existing": ["gpu"],
        "dry_run": False,
    }
    assert queue_names(clearml_emulator) == sorted(DECLARED)
    assert clearml_emulator.state.queues[gpu_id]["name"] == "gpu"  # untouched, same id
    assert set(
        clearml_emulator.state.queues[
            next(i for i, q in clearml_emulator.state.queues.items() if q["name"] == "cpu")
        ]["tags"]
    ) == {"ak-remote", "cpu"}

    clearml_emulator.reset_log()
    code, out, _ = outcome(invoke("queues", "apply", "--json"))
    assert code == 0
    assert json.loads(out)["created"] == []
    assert clearml_emulator.count("queues.create") == 0
    assert queue_names(clearml_emulator) == sorted(DECLARED)


def test_queues_apply_dry_run_creates_nothing(clearml_emulator: Emulator) -> None:
    code, out, _ = outcome(invoke("queues", "apply", "--dry-run"))
    assert code == 0
    assert "would create gpu" in out
    assert clearml_emulator.state.queues == {} or queue_names(clearml_emulator) == []
    assert clearml_emulator.count("queues.create") == 0


def test_queues_apply_rejects_a_bad_file_before_any_request(
    clearml_emulator: Emulator, tmp_path: Path
) -> None:
    bad = tmp_path / "queues.toml"
    bad.write_text('[[queue]]\nname = "gpu; rm -rf /"\n')
    clearml_emulator.reset_log()
    code, _, err = outcome(invoke("queues", "apply", str(bad)))
    assert code == 2
    assert "invalid or missing queue name" in err
    assert clearml_emulator.count() == 0


def test_queues_list(clearml_emulator: Emulator) -> None:
    clearml_emulator.create_queue("gpu")
    code, out, _ = outcome(invoke("queues", "list", "--json"))
    assert code == 0
    assert [q["name"] for q in json.loads(out)] == ["gpu"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["-q", "gpu", "--gpus", "0,1", "--per-gpu", "--image", "reg/w:1-gpu"],
            [
                "clearml-agent daemon --queue gpu --gpus 0 --foreground --docker reg/w:1-gpu",
                "clearml-agent daemon --queue gpu --gpus 1 --foreground --docker reg/w:1-gpu",
            ],
        ),
        (
            ["-q", "gpu-large", "-q", "gpu", "--gpus", "0-3"],
            [f"{SKIP} clearml-agent daemon --queue gpu-large gpu --gpus 0,1,2,3 --foreground"],
        ),
        (
            ["-q", "cpu", "--cpu-only", "--detached"],
            [f"{SKIP} clearml-agent daemon --queue cpu --cpu-only --detached"],
        ),
    ],
)
def test_agent_up_print(argv: list[str], expected: list[str]) -> None:
    code, out, err = outcome(invoke("agent", "up", *argv, "--print"))
    assert code == 0, err
    assert out.splitlines() == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-q", "gpu", "--gpus", "0,x"], "is not a GPU index"),
        (["-q", "gpu", "--per-gpu"], "--per-gpu needs --gpus"),
        (["-q", "gpu", "--gpus", "0", "--cpu-only"], "contradict"),
        (["-q", "gpu;reboot"], "invalid queue name"),
    ],
)
def test_agent_up_rejects_bad_flags(argv: list[str], message: str) -> None:
    code, _, err = outcome(invoke("agent", "up", *argv, "--print"))
    assert code == 2
    assert message in err


def test_doctor_without_configuration_says_how_to_configure() -> None:
    code, out, _ = outcome(invoke("doctor"))
    assert code == 4
    assert "FAIL configuration" in out
    assert "clearml-init" in out


def test_doctor_reports_each_broken_part(clearml_emulator: Emulator) -> None:
    code, out, _ = outcome(invoke("doctor", "-q", "gpu", "--json"))
    assert code == 4
    checks = {c["name"]: c for c in json.loads(out)}
    assert checks["server"]["ok"] is True
    assert checks["queue gpu"]["ok"] is False
    assert "queues apply" in checks["queue gpu"]["fix"]

    clearml_emulator.create_queue("gpu")
    code, out, _ = outcome(invoke("doctor", "-q", "gpu", "--json"))
    checks = {c["name"]: c for c in json.loads(out)}
    assert checks["queue gpu"]["ok"] is True
    assert checks["workers on gpu"]["ok"] is False
    assert "ak-remote agent up --queue gpu" in checks["workers on gpu"]["fix"]


def test_doctor_reports_bad_credentials(
    clearml_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLEARML_API_SECRET_KEY", "not-the-secret")
    monkeypatch.setenv("AK_REMOTE_HTTP_ATTEMPTS", "1")
    code, out, _ = outcome(invoke("doctor", "-q", "gpu", "--json"))
    assert code == 4
    checks = {c["name"]: c for c in json.loads(out)}
    assert checks["server"]["ok"] is False
    assert "not-the-secret" not in out


def test_doctor_reports_an_unreachable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARML_API_HOST", "http://127.0.0.1:9")
    monkeypatch.setenv("CLEARML_API_ACCESS_KEY", "k")
    monkeypatch.setenv("CLEARML_API_SECRET_KEY", "s")
    monkeypatch.setenv("AK_REMOTE_HTTP_ATTEMPTS", "1")
    monkeypatch.setenv("AK_REMOTE_HTTP_TIMEOUT", "2")
    code, out, _ = outcome(invoke("doctor", "--json"))
    assert code == 4
    checks = {c["name"]: c for c in json.loads(out)}
    assert checks["server"]["ok"] is False
    assert "doctor" in checks["server"]["fix"] or "CLEARML_API_HOST" in checks["server"]["fix"]
