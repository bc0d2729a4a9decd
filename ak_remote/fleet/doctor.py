"""`ak-remote doctor`: credentials, server, queues, workers and worker image, checked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ak_remote.clearml_api import Client
from ak_remote.errors import ServerError


@dataclass
class Check:
    """One line of `ak-remote doctor`: what was checked, whether it holds, and the fix."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def diagnose(
    client_factory: Any,
    server_configured: bool,
    queues: Sequence[str],
    image: str | None,
    default_image: str = "",
    template_project: str | None = None,
) -> list[Check]:
    """Check configuration, server, credentials, queues, their workers and the worker image
    (and, with `template_project`, that the images of templates recording a git repository
    have git, where this host holds them).

    Never raises for a failed check: each problem becomes a Check with one actionable fix.
    """
    checks: list[Check] = []
    if not server_configured:
        checks.append(
            Check(
                "configuration",
                False,
                "no ClearML server configured (no CLEARML_API_HOST, no clearml.conf)",
                "run `clearml-init`, or set CLEARML_API_HOST and the CLEARML_API_* keys",
            )
        )
        return checks
    checks.append(Check("configuration", True, "a ClearML server is configured"))
    client: Client = client_factory()
    try:
        present = {str(q.get("name")): q for q in client.get_queues()}
        workers = client.get_workers()
    except ServerError as exc:
        # The client's own hint says to run doctor: we are doctor, so say what to check.
        fix = (
            "check that the server is up and that CLEARML_API_HOST (or api.api_server in "
            "clearml.conf) points at it"
        )
        checks.append(Check("server", False, exc.message, fix))
        return checks
    info = client.server_info()
    version = f" (server {info['server_version']}, API {info['api_version']})" if info else ""
    checks.append(Check("server", True, f"reachable, credentials accepted{version}"))
    if not queues:
        checks.extend(_any_queue_served(present, workers))
    for name in queues:
        queue = present.get(name)
        if queue is None:
            checks.append(
                Check(
                    f"queue {name}",
                    False,
                    "does not exist",
                    f"`ak-remote queues apply` (declared in infra/queues.toml) or "
                    f"`ak-remote launch ... --queue {name} --create-queue`",
                )
            )
            continue
        checks.append(
            Check(f"queue {name}", True, f"exists, {len(queue.get('entries') or [])} queued")
        )
        queue_id = str(queue.get("id"))
        listening = [
            w
            for w in workers
            if queue_id
            in {str(q.get("id") if isinstance(q, dict) else q) for q in w.get("queues") or []}
        ]
        if listening:
            checks.append(Check(f"workers on {name}", True, f"{len(listening)} listening"))
        else:
            checks.append(
                Check(
                    f"workers on {name}",
                    False,
                    "no agent listens to this queue: launched runs will wait",
                    f"start one: `ak-remote agent up --queue {name} --gpus 0` (infra/README.md)",
                )
            )
    _image_checks(checks, image, default_image)
    if template_project:
        checks.extend(_template_git_checks(client, template_project))
    return checks


def _template_git_checks(client: Client, project: str) -> list[Check]:
    """A template that records a git repository is cloned by clearml-agent inside its image:
    an image without git fails every such run. Only images this host holds can be checked."""
    from ak_remote.fleet.images import check_worker_image
    from ak_remote.launcher.templates import list_templates

    try:
        templates = list_templates(client, project)
    except ServerError:
        return []
    images = sorted(
        {
            str((t.get("container") or {}).get("image") or "")
            for t in templates
            if (t.get("script") or {}).get("repository")
        }
        - {""}
    )
    checks = []
    for image in images:
        no_git = check_worker_image(image).no_git
        if no_git is not None:
            checks.append(
                Check(
                    "template image",
                    False,
                    f"{no_git}, and templates in {project} record one",
                    "rebuild the image with `make image` (its bases have git), then "
                    "`ak-remote templates sync --image <the ID it prints>`",
                )
            )
    return checks


def _any_queue_served(present: dict[str, Any], workers: list[Any]) -> list[Check]:
    """No queue named: the setup is healthy when some queue has an agent (a CPU-only fleet
    serving `cpu` is as good as a GPU one serving `gpu`)."""
    served = sorted(
        name
        for name, queue in present.items()
        if any(str(queue.get("id")) in _queue_ids(w) for w in workers)
    )
    if served:
        return [Check("queues", True, f"agents serve {', '.join(served)}")]
    if not present:
        return [
            Check(
                "queues",
                False,
                "the server has no queue",
                "`ak-remote queues apply` (declared in infra/queues.toml)",
            )
        ]
    return [
        Check(
            "queues",
            False,
            f"no agent serves any queue ({', '.join(sorted(present))})",
            "start one: `ak-remote agent up --queue QUEUE --gpus 0` (or --cpu-only)",
        )
    ]


def _queue_ids(worker: Any) -> set[str]:
    return {str(q.get("id") if isinstance(q, dict) else q) for q in worker.get("queues") or []}


def _image_checks(checks: list[Check], image: str | None, default_image: str) -> list[Check]:
    if image and image != default_image:
        checks.append(Check("worker image", True, image))
    elif image:
        checks.append(
            Check(
                "worker image",
                True,
                f"{image} (the default tag `make image` builds; push it where agents can pull it "
                "and set AK_REMOTE_IMAGE to that reference)",
            )
        )
    else:
        checks.append(
            Check(
                "worker image",
                False,
                "no worker image set: templates would run on the agent's own Python",
                "set AK_REMOTE_IMAGE (or `image` in the config) to the image `make image` built",
            )
        )
    return checks
