"""`ak-remote doctor`: credentials, server, queues, workers and worker image, checked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ak_remote.errors import ServerError
from ak_remote.remote.clearml_api import Client


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
) -> list[Check]:
    """Check configuration, server, credentials, queues, their workers and the worker image.

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
        checks.append(Check("server", False, exc.message, exc.hint or "run `ak-remote doctor`"))
        return checks
    info = client.server_info()
    version = f" (server {info['server_version']}, API {info['api_version']})" if info else ""
    checks.append(Check("server", True, f"reachable, credentials accepted{version}"))
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
