"""Image references: which are pinned (tests/system/test_docker_agent.py builds the image)."""

from __future__ import annotations

from ak_remote.fleet.images import is_image_id, is_pinned
from tests.helpers import IMAGE_ID


def test_pinned_references() -> None:
    assert is_image_id(IMAGE_ID)
    assert is_pinned(IMAGE_ID)
    assert is_pinned("registry.example/team/ak-remote-worker@sha256:" + "ab" * 32)
    for moving in ("ak-remote-worker:0.1.0-cpu", "ak-remote-worker", "sha256:abc", ""):
        assert not is_pinned(moving), moving
    assert not is_image_id("ak-remote-worker@" + IMAGE_ID)
