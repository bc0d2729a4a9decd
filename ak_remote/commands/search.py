"""The click side of parallel searches: `launch --parallel`, and a search's trial table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ak_remote import ui
from ak_remote.commands.common import App, follow_runs

if TYPE_CHECKING:
    from ak_remote.clearml_api import Client
    from ak_remote.launcher.launch import LaunchRequest
    from ak_remote.search.launch import SearchOptions


def launch_search(
    app: App,
    request: LaunchRequest,
    options: SearchOptions,
    dry_run: bool,
    wait: bool,
    as_json: bool,
) -> None:
    """`launch --parallel`: check, then create the search task (or run the controller here)."""
    from ak_remote.search import launch as search_launch

    client = app.client()
    search = search_launch.check_search(client, request, options)
    where = "in this terminal" if options.local else f"on queue {search.controller_queue}"
    for warning in search.warnings:
        ui.warn(warning)
    if dry_run:
        if as_json:
            ui.as_json(search_launch.describe(search))
        else:
            ui.info(
                f"Dry run: nothing is created. One search of {search.max_trials} trial(s), up to "
                f"{search.spec.parallel} at once on {search.plan.queue_name}, controller {where}."
            )
        return
    if options.local:
        summary = search_launch.run_local_controller(client, search, ui.info)
        search_id = summary.task_id or ""
        ui.data(search_id)
        ui.next_steps([f"ak-remote status {search_id}", f"ak-remote pull {search_id} --check"])
        return
    result = search_launch.enqueue_search(client, search, ui.info)
    search_id = result.task_ids[0]
    if as_json:
        ui.as_json({**result.as_dict(), "search_id": search_id, "parallel": search.spec.parallel})
    else:
        ui.data(search_id)
    ui.info(
        f"Search {search_id}: {search.max_trials} trial(s), up to {search.spec.parallel} at once "
        f"on {search.plan.queue_name}; controller {where}. {result.urls[0]}"
    )
    if not wait:
        ui.next_steps(
            [
                f"ak-remote status {search_id}",
                f"ak-remote abort {search_id}",
                f"ak-remote resume {search_id}   # after a stop: finished trials are kept",
                f"ak-remote pull {search_id} --check   # the final model, once completed",
            ]
        )
        return
    follow_runs(client, [search_id], app.config.poll_interval)
    ui.next_steps([f"ak-remote status {search_id}", f"ak-remote pull {search_id} --check"])


def show_search(client: Client, task_id: str, as_json: bool) -> bool:
    """Print a search's trial table when `task_id` is a search; False when it is not one."""
    from ak_remote.launcher.runs import format_duration
    from ak_remote.search.read import find_search, key_values, varying_keys

    search = find_search(client, task_id)
    if search is None:
        return False
    if as_json:
        ui.as_json(search.as_dict())
        return True
    ui.info(f"Search {search.id} ({search.name}): {search.status}")
    varying = varying_keys(search.rows)
    ui.data(
        ui.table(
            ["trial", "id", "status", "worker", "key hyperparameters", "objective", "duration"],
            [
                [
                    row["trial"] + (f" (retry {row['attempt']})" if row["attempt"] else ""),
                    row["id"],
                    row["status"],
                    row["worker"],
                    key_values(row["values"], varying),
                    "" if row["objective"] is None else f"{row['objective']:.4g}",
                    format_duration(row["duration_s"]),
                ]
                for row in search.rows
            ],
        )
    )
    return True
