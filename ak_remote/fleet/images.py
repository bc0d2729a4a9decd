"""Worker image references: which ones pin content, and a tag's registry digest where known.

A reference pins the image when it is `name@sha256:<digest>` (a registry digest, pullable
anywhere) or `sha256:<id>` (an image ID, as docker/build.sh prints: runnable on every host that
holds that image, never pulled). Tags can move. Pure library: no click, no TensorFlow.
"""

from __future__ import annotations

import shutil
import subprocess

from ak_remote.contract import is_image_id, is_pinned

__all__ = ["is_image_id", "is_pinned", "registry_digest", "worker_image_problem"]


def registry_digest(reference: str, docker: str = "docker", timeout: float = 10.0) -> str | None:
    """`repo:tag@sha256:...` for a tag this host's Docker pulled or pushed, else None.

    The tag stays for people (and for telling GPU images from CPU ones); Docker runs and pulls
    by the digest alone.

    None as well without a Docker engine, for a tag never pushed (it has no registry digest:
    its image ID pins it only on this host), or for a reference that is already pinned.
    """
    if is_pinned(reference) or shutil.which(docker) is None:
        return None
    try:
        found = subprocess.run(
            [docker, "image", "inspect", "--format", '{{join .RepoDigests "\\n"}}', reference],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if found.returncode != 0:
        return None
    repository = reference.rsplit(":", 1)[0] if ":" in reference.rsplit("/", 1)[-1] else reference
    for line in found.stdout.splitlines():
        name, _, digest = line.strip().partition("@")
        if name == repository and digest:
            return f"{reference}@{digest}"
    return None


def worker_image_problem(image: str, docker: str = "docker", timeout: float = 120.0) -> str | None:
    """Why `image` cannot run ak-remote jobs on this host's Docker, or None.

    Checked only where it can be: with a Docker engine here, for an image here (a tag not here
    may still be pulled by the agent later; an image ID can never be). The check runs the
    interpreter the agent will use (`$LOCAL_PYTHON`, else python3) on `import ak_remote`, with no
    network.
    """
    if shutil.which(docker) is None:
        return None
    try:
        present = subprocess.run(
            [docker, "image", "inspect", image], capture_output=True, timeout=timeout, check=False
        )
        if present.returncode != 0:
            if is_image_id(image):
                return f"image {image} is not on this host (removed, or built elsewhere)"
            return None
        probe = 'exec "${LOCAL_PYTHON:-python3}" -c "import ak_remote"'
        run = [docker, "run", "--rm", "--network", "none", "--entrypoint", "bash"]
        found = subprocess.run(
            [*run, image, "-c", probe],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if found.returncode != 0:
        last = (found.stderr.strip().splitlines() or ["no output"])[-1]
        return f"image {image} cannot run ak-remote jobs: its Python lacks ak_remote ({last})"
    return None
