"""Shared test fixtures: every test runs with its own HOME and no ClearML settings from outside."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Emulator fixtures (tests/emulator/fixtures.py) are imported here so every test module sees them.
from tests.emulator.fixtures import clearml_emulator  # noqa: F401

_CLEARML_ENV_PREFIXES = ("CLEARML_", "TRAINS_", "AK_REMOTE_", "KERASTUNER_")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Give each test a fresh HOME and strip ClearML/ak-remote settings inherited from the shell."""
    home = tmp_path / "home"
    home.mkdir()
    for name in list(os.environ):
        if name.startswith(_CLEARML_ENV_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    return home
