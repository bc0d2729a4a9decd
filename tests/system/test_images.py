"""The registry-digest lookup against the real Docker engine (an imported, never pushed image)."""

from __future__ import annotations

import io
import subprocess
import tarfile

from ak_remote.catalog import PROJECT_ROOT as REPO
from ak_remote.fleet.images import registry_digest
from tests.helpers import IMAGE_ID


def test_registry_digest_is_none_without_docker_or_for_an_unpushed_tag() -> None:
    assert registry_digest("ak-remote-worker:0.1.0-cpu", docker="no-such-docker-here") is None
    assert registry_digest(IMAGE_ID) is None  # already pinned: nothing to look up
    engine = subprocess.run(["bash", str(REPO / "docker" / "engine.sh"), "ensure"], check=False)
    assert engine.returncode == 0
    # A local image that was never pushed has an ID but no registry digest.
    empty = io.BytesIO()
    with tarfile.open(fileobj=empty, mode="w") as archive:
        info = tarfile.TarInfo("marker")
        archive.addfile(info, io.BytesIO(b""))
    tag = "ak-remote-test-unpushed:1"
    subprocess.run(["docker", "import", "-", tag], input=empty.getvalue(), check=True)
    try:
        assert registry_digest(tag) is None
        assert registry_digest("ak-remote-test-no-such-image:1") is None
    finally:
        subprocess.run(["docker", "image", "rm", tag], capture_output=True, check=False)
