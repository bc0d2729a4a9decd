"""The fixture's opt-in real-server handle, exercised against an emulator standing in for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.emulator import fixtures
from tests.emulator.fixtures import REAL_SERVER_SWITCH, RealServer
from tests.emulator.server import Emulator


def test_fixture_points_the_environment_at_the_emulator(clearml_emulator: Emulator) -> None:
    import os

    assert os.environ["CLEARML_API_HOST"] == clearml_emulator.api_url
    assert os.environ["CLEARML_FILES_HOST"] == clearml_emulator.files_url
    assert os.environ["CLEARML_CONFIG_FILE"] == str(clearml_emulator.config_file)
    text = clearml_emulator.config_file.read_text()
    assert clearml_emulator.api_url in text
    assert clearml_emulator.access_key in text
    assert clearml_emulator.env()["CLEARML_API_SECRET_KEY"] == clearml_emulator.secret_key


def test_real_server_handle_speaks_http_and_skips_emulator_only_parts(
    clearml_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outer = {REAL_SERVER_SWITCH: "1"}
    outer.update({k: v for k, v in clearml_emulator.env().items() if k != "CLEARML_CONFIG_FILE"})
    monkeypatch.setattr(fixtures, "_OUTER_ENV", outer)
    assert fixtures.real_server_requested()
    real = RealServer(tmp_path / "real")
    assert real.config_file.exists()
    queue_id = real.create_queue("gpu")
    assert real.create_queue("gpu") == queue_id  # reused, not duplicated
    task_id = clearml_emulator.create_task("t")
    assert real.get_task(task_id)["name"] == "t"
    with pytest.raises(RuntimeError, match="400/101"):
        real.get_task("0" * 32)
    for touch in (
        lambda: real.state,
        lambda: real.requests,
        lambda: real.count(),
        lambda: real.fail_next("tasks.create"),
    ):
        with pytest.raises(pytest.skip.Exception):
            touch()


def test_real_server_switch_needs_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fixtures, "_OUTER_ENV", {REAL_SERVER_SWITCH: "1"})
    with pytest.raises(pytest.fail.Exception, match="CLEARML_API_HOST"):
        RealServer(tmp_path)
