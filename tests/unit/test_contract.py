"""ak_remote.contract: the versioned run summary, ids, tags."""

from __future__ import annotations

from pathlib import Path

from ak_remote import contract


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
