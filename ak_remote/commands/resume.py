"""`ak-remote resume`: continue a stopped or failed run's search where it left off."""

from __future__ import annotations

import click

from ak_remote import ui
from ak_remote.commands.common import App, follow_runs, json_option, pass_app, wait_option


@click.command()
@click.argument("task_id", metavar="ID")
@click.option(
    "-q",
    "--queue",
    help="Queue to enqueue on [default: the queue it last ran on, else AK_REMOTE_QUEUE / config].",
)
@click.option(
    "--max-trials",
    type=click.IntRange(1, 10000),
    default=None,
    metavar="N",
    help="A search: raise its max_trials to N (running, stopped or completed).",
)
@click.option(
    "--parallel",
    type=int,
    default=None,
    metavar="N",
    help="A search: keep up to N trials in flight from now on.",
)
@wait_option("Follow the run until it ends; exit 5 if it fails.")
@json_option("Print what was resumed as JSON.")
@pass_app
def resume(
    app: App,
    task_id: str,
    queue: str | None,
    max_trials: int | None,
    parallel: int | None,
    wait: bool,
    as_json: bool,
) -> None:
    """Enqueue the stopped or failed run ID again; its search continues where it left off.

    The job restores the search state the run saved after its last finished trial: finished
    trials are not trained again and the total stays max_trials. Completed, queued and running
    runs are refused, except that a parallel search can be grown: with --max-trials or
    --parallel a running search's controller takes the new numbers within seconds, and an
    ended one (completed included) is enqueued again and carries on from its saved state.

    \b
    Examples:
      ak-remote resume 0123456789abcdef0123456789abcdef -q gpu --wait
      ak-remote resume SEARCH_ID --max-trials 40 --parallel 8
    """
    from ak_remote.launcher.resume import resume as resume_run

    config = app.config
    client = app.client()
    if max_trials is not None or parallel is not None:
        from ak_remote.search.launch import grow_search

        grown = grow_search(client, task_id, max_trials, parallel)
        ui.info(
            f"Search {grown.task_id}: max_trials={grown.max_trials}, up to {grown.parallel} "
            f"at once ({'was ' + grown.status})"
        )
        if not grown.resumed:
            if as_json:
                ui.as_json(grown.as_dict())
            else:
                ui.data(grown.task_id)
            ui.info("  its controller takes the new numbers within seconds")
            ui.next_steps([f"ak-remote status {grown.task_id}"])
            return
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
    follow_runs(client, [result.task_id], config.poll_interval)
    ui.next_steps([f"ak-remote pull {result.task_id} --check"])
