"""`ak-remote templates sync|list`: the draft tasks agents clone, one per job."""

from __future__ import annotations

import click

from ak_remote import ui
from ak_remote.commands.common import App, json_option, pass_app, templates_project_option
from ak_remote.config import pick
from ak_remote.contract import PARAM_SECTION
from ak_remote.launcher import templates as templates_lib


@click.group()
def templates() -> None:
    """Create, update and list the template tasks `launch` clones (one per job)."""


@templates.command()
@templates_project_option()
@click.option("--image", help="Worker Docker image agents run the jobs in [default: from config].")
@click.option(
    "--docker-args", help="Docker arguments recorded with the image [default: from config]."
)
@json_option("Print what was created/updated as JSON.")
@pass_app
def sync(
    app: App, project: str | None, image: str | None, docker_args: str | None, as_json: bool
) -> None:
    """Create or update one template per job; changes nothing when all are up to date.

    A template records the entry point (git repository and commit when the checkout has a
    remote, otherwise the script itself), the worker image and its arguments, the pinned
    requirements (requirements/worker.lock) and the job's typed default parameters.
    """
    config = app.config
    project_name = pick(project, config.template_project) or config.template_project
    client = app.client()
    chosen = pick(image, config.image) or config.image
    from ak_remote.fleet.images import registry_digest

    # A tag this host pushed or pulled is recorded by its registry digest: agents then run
    # exactly that image, and runs and reproductions name it (see docker/README.md).
    digest = registry_digest(chosen)
    if digest is not None:
        ui.info(f"image {chosen} recorded by digest {digest}")
    result = templates_lib.sync(
        client,
        project_name,
        image=digest or chosen,
        docker_args=docker_args if docker_args is not None else config.docker_args,
        progress=ui.info,
    )
    if as_json:
        ui.as_json(result.as_dict())
    else:
        rows = (
            [(job, task_id, "created") for job, task_id in result.created.items()]
            + [(job, tid, f"updated: {', '.join(f)}") for job, (tid, f) in result.updated.items()]
            + [(job, task_id, "unchanged") for job, task_id in result.unchanged.items()]
        )
        ui.data(ui.table(["job", "template", "change"], rows))
    for warning in result.warnings:
        ui.warn(warning)
    for job, extra in result.duplicates.items():
        ui.warn(f"{job} has {len(extra)} extra template(s): {', '.join(extra)}; delete them")
    if not result.created and not result.updated:
        ui.info(f"All {len(result.unchanged)} templates in {project_name} are up to date.")
    ui.next_steps(["ak-remote launch structured-classifier -q QUEUE --set max_trials=5"])


@templates.command("list")
@templates_project_option()
@json_option("Print the templates as JSON.")
@pass_app
def list_(app: App, project: str | None, as_json: bool) -> None:
    """List the templates: job, task id, image and parameter defaults."""
    config = app.config
    project_name = pick(project, config.template_project) or config.template_project
    found = templates_lib.list_templates(app.client(), project_name)
    rows = []
    for task in found:
        job = templates_lib.job_of(task)
        general = (task.get("hyperparams") or {}).get(PARAM_SECTION) or {}
        rows.append(
            {
                "job": job.name if job else task.get("name"),
                "id": task.get("id"),
                "image": (task.get("container") or {}).get("image") or "",
                "parameters": len(general),
                "updated": task.get("last_update") or task.get("created") or "",
            }
        )
    if as_json:
        ui.as_json(rows)
        return
    if not rows:
        ui.info(f"No templates in {project_name}.")
        ui.next_steps([f"ak-remote templates sync --project {project_name}"])
        return
    ui.data(ui.table(list(rows[0]), [list(r.values()) for r in rows]))
