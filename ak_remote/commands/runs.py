"""`ak-remote status | logs | abort`: follow and stop launched runs."""

from __future__ import annotations

import click

from ak_remote import ui
from ak_remote.commands.common import App, json_option, pass_app
from ak_remote.config import load_config
from ak_remote.errors import RunFailedError


def _metrics_text(metrics: dict[str, float]) -> str:
    return " ".join(f"{name}={value:.4g}" for name, value in metrics.items())


@click.command()
@click.argument("ids", nargs=-1, metavar="[IDS]...")
@click.option("--sweep", "sweep_id", help="All runs of this sweep id.")
@click.option("--project", help="Runs of this project [default without IDS/--sweep: ak-remote].")
@click.option("--limit", default=20, show_default=True, help="At most this many runs of a project.")
@json_option("Print the statuses as JSON.")
@pass_app
def status(
    app: App,
    ids: tuple[str, ...],
    sweep_id: str | None,
    project: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Show runs' status, queue, worker, runtime and latest metrics."""
    from ak_remote.launcher.runs import format_duration, key_metrics, run_statuses, select_tasks

    if not ids and not sweep_id and not project:
        project = load_config().project
    client = app.client()
    if len(ids) == 1 and not sweep_id and not project:
        from ak_remote.commands.search import show_search

        if show_search(client, ids[0], as_json, app.config.gpu_prices or ""):
            return
    tasks = select_tasks(client, ids=ids, sweep=sweep_id, project=project, limit=limit)
    rows = run_statuses(client, tasks)
    if as_json:
        ui.as_json([row.as_dict() for row in rows])
        return
    if not rows:
        ui.info(f"No runs in {project}.")
        return
    ui.data(
        ui.table(
            ["id", "name", "status", "queue", "worker", "runtime", "metrics"],
            [
                [
                    row.id,
                    row.name[:40],
                    row.status,
                    row.queue,
                    row.worker,
                    format_duration(row.runtime_s),
                    _metrics_text(key_metrics(row.metrics)),
                ]
                for row in rows
            ],
        )
    )
    failed = [row for row in rows if row.status == "failed"]
    if failed:
        ui.next_steps([f"ak-remote logs {failed[0].id}"])


@click.command()
@click.argument("task_id", metavar="ID")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the run ends.")
@pass_app
def logs(app: App, task_id: str, follow: bool) -> None:
    """Print a run's console log (with --follow, until it ends; exit 5 if it failed)."""
    from ak_remote.contract import BAD_STATUSES
    from ak_remote.launcher.runs import Outage, read_log

    client = app.client()
    status = read_log(
        client,
        task_id,
        emit=ui.data,
        follow=follow,
        interval=app.config.poll_interval,
        outage=Outage(client, [task_id], app.config.wait_outage, ui.info),
    )
    if follow and status in BAD_STATUSES:
        raise RunFailedError(f"run {task_id} ended {status}", f"ak-remote status {task_id}")


@click.command()
@click.argument("ids", nargs=-1, required=True, metavar="IDS...")
@click.option("--delete", is_flag=True, help="Delete the runs instead of stopping them.")
@pass_app
def abort(app: App, ids: tuple[str, ...], delete: bool) -> None:
    """Stop queued or running runs (dequeue queued ones); --delete removes them."""
    from ak_remote.search.abort import CONTROLLER_STOP_WAIT_S, abort_with_trials

    client = app.client()
    # A search id stops its controller first, waits until it has (so it creates nothing more),
    # then stops its trials in flight.
    done = abort_with_trials(client, ids, delete=delete)
    result = done.result
    for task_id in result.stopped + result.deleted:
        ui.data(task_id)
    if result.stopped:
        ui.info(f"Stopped {len(result.stopped)} run(s).")
    if result.deleted:
        ui.info(f"Deleted {len(result.deleted)} run(s).")
    if result.already_final:
        ui.info(f"Already finished, left alone: {', '.join(result.already_final)}")
    for task_id, reason in result.refused.items():
        ui.warn(f"{task_id}: {reason}")
    for task_id in done.still_running:
        ui.warn(
            f"search {task_id} still shows running {CONTROLLER_STOP_WAIT_S:.0f} s after the stop: "
            "its controller creates nothing more once it sees the request (a controller whose "
            "process died stays shown running; the server's watchdog ends it)"
        )
