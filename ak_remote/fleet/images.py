"""Worker image references: which ones pin content, and a tag's registry digest where known.

A reference pins the image when it is `name@sha256:<digest>` (a registry digest, pullable
anywhere) or `sha256:<id>` (an image ID, as docker/build.sh prints: runnable on every host that
holds that image, never pulled). Tags can move. Pure library: no click, no TensorFlow.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from ak_remote.contract import is_image_id, is_pinned

__all__ = [
    "ImageCheck",
    "check_worker_image",
    "is_image_id",
    "is_pinned",
    "registry_digest",
    "worker_image_problem",
]


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


@dataclass(frozen=True)
class ImageCheck:
    """What a worker image lacks: `problem` when it cannot run ak-remote jobs at all (refuse it),
    `no_git` when it cannot clone a template's git repository (only script-carrying templates
    run in it). None: fine, or not checkable here."""

    problem: str | None = None
    no_git: str | None = None


# Marks the probe's own line in the container's stderr, apart from Python's.
_NO_GIT = "ak-remote-probe: no git"


def check_worker_image(image: str, docker: str = "docker", timeout: float = 120.0) -> ImageCheck:
    """Whether `image` can run ak-remote jobs, and clone their repositories, on this host's Docker.

    Checked only where it can be: with a Docker engine here, for an image here (a tag not here
    may still be pulled by the agent later; an image ID can never be). One container, no
    network: the interpreter the agent will use (`$LOCAL_PYTHON`, else python3) imports
    ak_remote, and `git --version` runs, as clearml-agent runs git to clone a template's
    repository inside the container.
    """
    if shutil.which(docker) is None:
        return ImageCheck()
    try:
        present = subprocess.run(
            [docker, "image", "inspect", image], capture_output=True, timeout=timeout, check=False
        )
        if present.returncode != 0:
            if is_image_id(image):
                gone = f"image {image} is not on this host (removed, or built elsewhere)"
                return ImageCheck(gone)
            return ImageCheck()
        probe = (
            f'git --version >/dev/null 2>&1 || echo "{_NO_GIT}" >&2; '
            'exec "${LOCAL_PYTHON:-python3}" -c "import ak_remote"'
        )
        run = [docker, "run", "--rm", "--network", "none", "--entrypoint", "bash"]
        found = subprocess.run(
            [*run, image, "-c", probe],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ImageCheck()
    lines = found.stderr.strip().splitlines()
    no_git = None
    if _NO_GIT in lines:
        no_git = (
            f"image {image} has no git: runs of templates that record a git repository "
            "(`templates sync` from a checkout with a remote) cannot be cloned in it"
        )
    problem = None
    if found.returncode != 0:
        last = ([line for line in lines if line != _NO_GIT] or ["no output"])[-1]
        problem = f"image {image} cannot run ak-remote jobs: its Python lacks ak_remote ({last})"
    return ImageCheck(problem, no_git)


def worker_image_problem(image: str, docker: str = "docker", timeout: float = 120.0) -> str | None:
    """Why `image` cannot run ak-remote jobs on this host's Docker, or None (see
    check_worker_image)."""
    return check_worker_image(image, docker, timeout).problem
