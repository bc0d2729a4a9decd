"""A strict local ClearML API server + fileserver emulator for tests (see README.md)."""

from tests.emulator.server import Emulator, RecordedRequest

__all__ = ["Emulator", "RecordedRequest"]
