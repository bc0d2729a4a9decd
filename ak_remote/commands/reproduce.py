"""`ak-remote reproduce`: run a finished run again with everything pinned; show the deltas."""

from __future__ import annotations

import click

from ak_remote import ui
from ak_remote.commands.common import (
    App,
    dry_run_option,
    follow_runs,
    json_option,
    pass_app,
    wait_option,
)


@click.command()
@click.argument("task_id", metavar="ID")
@click.option(
    "-q",
    "--queue",
    help="Queue to run the reproduction on [default: the original's queue, else config].",
)
@wait_option("Wait for it and print metric deltas (exit 5 if it failed).")
@dry_run_option("what would be pinned")
@json_option("Print the result as JSON.")
@pass_app
def reproduce(
    app: App, task_id: str, queue: str | None, wait: bool, dry_run: bool, as_json: bool
) -> None:
    """Clone a finished run pinning code, image, packages, seed and data; run it again.

    Warns about anything that could not be pinned. With --wait, prints the difference of each
    test metric from the original when it finishes.
    """
    from ak_remote.launcher.reproduce import compare_outcome, execute_reproduce, plan_reproduce

    config = app.config
    client = app.client()
    plan = plan_reproduce(client, task_id, queue, config.queue)
    for line in plan.pinned:
        ui.info(f"  pinned: {line}")
    for line in plan.warnings:
        ui.warn(line)
    if dry_run:
        if as_json:
            ui.as_json(plan.describe())
        return
    new_id = execute_reproduce(client, plan)
    if not wait:
        if as_json:
            ui.as_json({"original": task_id, "reproduction": new_id, "warnings": plan.warnings})
        else:
            ui.data(new_id)
        ui.info(f"  {client.task_url({'id': new_id, 'project': plan.original.get('project')})}")
        ui.next_steps([f"ak-remote status {new_id}", f"ak-remote compare {task_id} {new_id}"])
        return
    ui.info(f"Reproduction {new_id} queued on {plan.queue_name}")
    follow_runs(client, [new_id], config.poll_interval)
    deltas, notes = compare_outcome(client, plan, new_id)
    if as_json:
        ui.as_json(
            {
                "original": task_id,
                "reproduction": new_id,
                "deltas": [
                    {
                        "metric": d.name,
                        "original": d.original,
                        "reproduced": d.reproduced,
                        "delta": d.delta,
                    }
                    for d in deltas
                ],
                "notes": notes,
                "warnings": plan.warnings,
            }
        )
    else:
        ui.data(new_id)
        ui.data(
            ui.table(
                ["metric", "original", "reproduced", "delta"],
                [
                    [
                        d.name,
                        "" if d.original is None else f"{d.original:.6g}",
                        "" if d.reproduced is None else f"{d.reproduced:.6g}",
                        "" if d.delta is None else f"{d.delta:+.3g}",
                    ]
                    for d in deltas
                ],
            )
        )
    for note in notes:
        ui.info(f"  {note}")
