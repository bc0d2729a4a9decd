"""Unit tier. Issue 20, item 11: a search snapshot whose bytes were flipped inside a member is
one line and exit 3 (a data error), for a single run's `search_state.zip` and a parallel
search's `search_controller.zip` alike, never exit 1 "Internal error"."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import pytest

from ak_remote.errors import DataError, ExitCode
from ak_remote.runtime.search_state import MANIFEST, STATE_FILE, read_snapshot
from ak_remote.search.runner import STATE_JSON, StateStore
from tests.helpers import JOB, invoke

# Text long enough that deflate compresses it, so the flipped bytes land in a deflate stream.
ORACLE = {
    "ongoing_trials": {},
    "hyperparameters": {
        "space": [{"name": f"units_{i}", "values": [16, 32, 64]} for i in range(40)]
    },
    "start_order": ["0"],
    "end_order": ["0"],
    "run_times": {},
}


def garble(path: Path, member: str) -> Path:
    """Flip eight bytes in the middle of `member`'s compressed data (the CRC stays the old one)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    assert info.compress_type == zipfile.ZIP_DEFLATED
    assert info.compress_size > 64
    # The local header: 30 bytes, then its own name and extra field (lengths at 26 and 28).
    at = info.header_offset
    name_len, extra_len = struct.unpack("<HH", data[at + 26 : at + 30])
    start = at + 30 + name_len + extra_len
    middle = start + info.compress_size // 2
    for at in range(middle, middle + 8):
        data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def snapshot(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"format": 1, "job": "structured-classifier", "params": {"max_trials": "3"}}
    path = folder / STATE_FILE
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST, json.dumps(manifest))
        archive.writestr("oracle.json", json.dumps(ORACLE, indent=1))
        archive.writestr("tuner0.json", "{}")
    read_snapshot(path)  # a good one first: only the flipped bytes make it bad
    return path


def test_a_garbled_member_is_a_data_error(tmp_path: Path) -> None:
    path = garble(snapshot(tmp_path / "run"), "oracle.json")
    with pytest.raises(DataError, match=f"the search state {STATE_FILE} is unusable"):
        read_snapshot(path)


def test_resume_of_a_garbled_snapshot_is_one_line_and_exit_3(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    garble(snapshot(run_dir), "oracle.json")
    result = invoke("run", JOB, "--offline", "--resume", str(run_dir))
    assert result.exit_code == ExitCode.DATA, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]]
    assert lines[0].startswith(f"Error: the search state {STATE_FILE} is unusable")
    assert "Internal error" not in result.output


def test_a_garbled_controller_snapshot_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "search_controller.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(STATE_JSON, json.dumps({"format": 1, "trials": [ORACLE] * 4}, indent=1))
        archive.writestr("oracle/oracle.json", json.dumps(ORACLE, indent=1))
    store = StateStore(tmp_path, tmp_path / "oracle", tracker=None)
    store.restore(path)  # a good one first
    garble(path, STATE_JSON)
    with pytest.raises(
        DataError, match=r"the saved search state search_controller\.zip is unusable"
    ):
        store.restore(path)
