"""ak_remote.contract: the versioned run summary, ids, tags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ak_remote import contract
from ak_remote.errors import DataError, ExitCode


def test_new_summary_is_readable_and_versioned(tmp_path: Path) -> None:
    summary = contract.new_summary("image-classifier")
    assert summary["schema_version"] == contract.SUMMARY_VERSION
    assert summary["status"] == contract.RUN_RUNNING
    path = tmp_path / contract.SUMMARY_FILE
    path.write_text(json.dumps(summary))
    assert contract.read_summary(path)["job"] == "image-classifier"


def test_a_newer_summary_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / contract.SUMMARY_FILE
    path.write_text(json.dumps({"schema_version": contract.SUMMARY_VERSION + 1, "status": "x"}))
    with pytest.raises(DataError) as info:
        contract.read_summary(path)
    assert "newer ak-remote" in info.value.message
    assert info.value.hint is not None
    assert "upgrade" in info.value.hint
    assert info.value.exit_code == ExitCode.DATA


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[1, 2]", "not a run summary"),
        ('{"status": "exploded"}', "unknown status"),
        ('{"schema_version": "one"}', "invalid schema_version"),
        ('{"params": [1]}', "'params' must be an object"),
        ("{not json", "cannot read"),
    ],
)
def test_bad_summaries_are_data_errors(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / contract.SUMMARY_FILE
    path.write_text(text)
    with pytest.raises(DataError, match=fragment):
        contract.read_summary(path)


def test_missing_summary_says_so(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        contract.read_summary(tmp_path / contract.SUMMARY_FILE)


def test_ids_and_job_tags() -> None:
    assert contract.is_task_id("0123456789abcdef0123456789abcdef")
    assert not contract.is_task_id("0123456789ABCDEF0123456789abcdef")
    assert not contract.is_task_id("0123")
    tag = contract.job_tag("text-classifier")
    assert contract.job_of(["x", tag]) == "text-classifier"
    assert contract.job_of(["x"]) is None
    assert contract.job_of(None) is None


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "blob"
    payload = bytes(range(256)) * 5000  # several read chunks
    path.write_bytes(payload)
    assert contract.sha256_file(path, chunk=4096) == hashlib.sha256(payload).hexdigest()


def test_server_configured_rules(tmp_path: Path) -> None:
    assert not contract.server_configured({"HOME": str(tmp_path)})
    assert contract.server_configured({"HOME": str(tmp_path), "CLEARML_API_HOST": "http://x"})
    assert not contract.server_configured(
        {"HOME": str(tmp_path), "CLEARML_API_HOST": "http://x", "CLEARML_OFFLINE_MODE": "1"}
    )
    (tmp_path / "clearml.conf").write_text("api {}")
    assert contract.server_configured({"HOME": str(tmp_path)})
