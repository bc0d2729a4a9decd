"""`ak-remote resume`: continue a stopped or failed run's search where it left off."""

from __future__ import annotations

import click

from ak_remote import ui
from ak_remote.clearml_api import client_from_config
from ak_remote.config import load_config


@click.command()
@click.argument("task_id", metavar="ID")
@click.option(
    "-q",
    "--queue",
    help="Queue to enqueue on [default: the queue it last ran on, else AK_REMOTE_QUEUE / config].",
)
@click.option("--wait", is_flag=True, help="Follow the run until it ends; exit 5 if it fails.")
@click.option("--json", "as_json", is_flag=True, help="Print what was resumed as JSON.")
def resume(task_id: str, queue: str | None, wait: bool, as_json: bool) -> None:
    """Enqueue the stopped or failed run ID again; its search continues where it left off.

    The job restores the search state the run saved after its last finished trial: finished
    trials are not trained again and the total stays max_trials. Completed, queued and running
    runs are refused.

    \b
    Example:
      ak-remote resume 0123456789abcdef0123456789abcdef -q gpu --wait
    """
    from ak_remote.resume import resume as resume_run

    config = load_config()
    client = client_from_config(on_retry=ui.info)
    result = resume_run(client, task_id, queue, config.queue)
    if as_json:
        ui.as_json(result.as_dict())
    else:
        ui.data(result.task_id)
    saved = (
        "its saved search state is restored"
        if result.has_state
        else "no search state was saved (no trial had finished): its search starts over"
    )
    ui.info(f"Resumed {result.name} ({result.previous_status}) on queue {result.queue}: {saved}")
    ui.info(f"  {result.url}")
    if not wait:
        ui.next_steps(
            [
                f"ak-remote status {result.task_id}",
                f"ak-remote logs {result.task_id} --follow",
                f"ak-remote abort {result.task_id}",
            ]
        )
        return
    from ak_remote.commands.launch import follow_runs

    follow_runs([result.task_id], config.poll_interval)
    ui.next_steps([f"ak-remote pull {result.task_id} --check"])
