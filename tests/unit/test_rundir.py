"""Run folders without processes: what `--overwrite` may remove, what every flag refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ak_remote.errors import UsageError
from ak_remote.runtime.rundir import LOCK_FILE, check_run_dir, claim


def make_run(folder: Path) -> None:
    """A finished run's folder as the runtime leaves it (a parallel search's parts included)."""
    for name in ("models", "tensorboard/trial-00/train", "autokeras/search", "logs", "trials/t0"):
        (folder / name).mkdir(parents=True)
    (folder / "models" / "model.keras").write_bytes(b"model")
    (folder / "final-retry1").mkdir()
    for name in ("summary.json", "data_split.json", "search_state.zip", ".summary.json.tmp"):
        (folder / name).write_text(json.dumps({"job": "structured-classifier"}))
    (folder / LOCK_FILE).write_text("{}")


def test_a_user_folder_is_refused_with_every_flag(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    for name in (f"note{i}.txt" for i in range(7)):
        (folder / name).write_text("x")
    (folder / "models").mkdir()  # a name a run uses, in a folder no run made
    for resume, overwrite in ((False, False), (False, True), (True, False)):
        with pytest.raises(UsageError) as raised:
            check_run_dir(folder, resume=resume, overwrite=overwrite)
        assert "is not an ak-remote run folder" in raised.value.message
        assert "models, note0.txt, note1.txt, note2.txt, note3.txt and 3 more" in str(raised.value)
        assert "--overwrite" not in str(raised.value)
    with pytest.raises(UsageError):
        claim(folder, overwrite=True)
    assert len(list(folder.iterdir())) == 8  # nothing created, nothing removed


def test_overwrite_removes_only_what_a_run_wrote(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    make_run(folder)
    (folder / "notes.txt").write_text("mine")
    (folder / "extra").mkdir()
    with pytest.raises(UsageError, match="already holds a run"):
        check_run_dir(folder, resume=False, overwrite=False)
    lock = claim(folder, overwrite=True)
    try:
        assert sorted(p.name for p in folder.iterdir()) == [
            ".ak-remote.lock",
            ".ak-remote.reserve",
            "extra",
            "notes.txt",
        ]
        assert lock.kept == ("extra", "notes.txt")
        assert lock.kept_note() == "kept 2 entries that are not ak-remote's: extra, notes.txt"
    finally:
        lock.release()


def test_a_claimed_folder_with_only_a_users_file_is_not_called_a_run(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_FILE).write_text("{}")  # a run claimed it and died before writing anything
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(UsageError) as raised:
        check_run_dir(folder, resume=False, overwrite=False)
    assert "holds files that are not an ak-remote run's: notes.txt" in raised.value.message
    assert "--overwrite" not in str(raised.value)
    check_run_dir(folder, resume=False, overwrite=True)  # a run folder: it may be replaced


def test_empty_missing_or_setup_only_folders_are_free(tmp_path: Path) -> None:
    check_run_dir(tmp_path / "missing", resume=False, overwrite=False)
    (tmp_path / "empty").mkdir()
    check_run_dir(tmp_path / "empty", resume=False, overwrite=False)
    setup = tmp_path / "setup"
    setup.mkdir()
    (setup / "search_spec.json").write_text("{}")  # what `run --parallel` writes first
    check_run_dir(setup, resume=False, overwrite=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is not a folder"):
        check_run_dir(tmp_path / "file", resume=False, overwrite=False)
