"""`ak-remote launch JOB --parallel N`: one search spread over the agents of a queue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from ak_remote import ui
from ak_remote.commands.common import App, follow_runs
from ak_remote.errors import UsageError
from ak_remote.remote.launch import LaunchRequest
from ak_remote.search.spec import SearchSpec

if TYPE_CHECKING:
    from ak_remote.remote.clearml_api import Client


@dataclass(frozen=True)
class SearchOptions:
    """The search flags of `launch`, as typed."""

    parallel: int | None
    controller_queue: str | None
    controller_where: str | None  # "queue", "local" or None (queue)
    max_retries: int | None
    lost_after: float | None


def launch_search(
    app: App,
    request: LaunchRequest,
    options: SearchOptions,
    dry_run: bool,
    wait: bool,
    as_json: bool,
) -> None:
    """Check, then create the search task (or run the controller here). Raises UsageError."""
    from ak_remote.remote.launch import execute_launch
    from ak_remote.remote.search import (
        controller_plan,
        default_controller_queue,
        finish_spec,
        plan_search,
    )
    from ak_remote.search.spec import DEFAULT_LOST_AFTER_S, DEFAULT_MAX_RETRIES

    if options.parallel is None:
        raise click.UsageError(
            "--controller, --controller-queue, --max-retries and --lost-after need --parallel N"
        )
    local = options.controller_where == "local"
    if local and options.controller_queue:
        raise click.UsageError("--controller local runs here: drop --controller-queue")
    client = app.client()
    search = plan_search(
        client,
        request,
        options.parallel,
        None if local else (options.controller_queue or default_controller_queue()),
        DEFAULT_MAX_RETRIES if options.max_retries is None else options.max_retries,
        DEFAULT_LOST_AFTER_S if options.lost_after is None else options.lost_after,
    )
    run = search.plan.runs[0]
    where = "in this terminal" if local else f"on queue {search.controller_queue}"
    if dry_run:
        described = {
            **search.plan.describe(),
            "search": {
                "parallel": options.parallel,
                "max_trials": search.max_trials,
                "trial_queue": search.plan.queue_name,
                "controller": "local" if local else search.controller_queue,
                "max_retries": search.spec.max_retries,
                "lost_after_s": search.spec.lost_after_s,
            },
        }
        if as_json:
            ui.as_json(described)
        else:
            ui.info(
                f"Dry run: nothing is created. One search of {search.max_trials} trial(s), up to "
                f"{options.parallel} at once on {search.plan.queue_name}, controller {where}."
            )
        return
    for warning in search.warnings:
        ui.warn(warning)
    spec = finish_spec(client, search)
    if local:
        _run_local_controller(
            search.plan.template.name, run.overrides, run.name, search.plan.project_name, spec
        )
        return
    result = execute_launch(client, controller_plan(search, spec), progress=ui.info)
    search_id = result.task_ids[0]
    if as_json:
        ui.as_json({**result.as_dict(), "search_id": search_id, "parallel": options.parallel})
    else:
        ui.data(search_id)
    ui.info(
        f"Search {search_id}: {search.max_trials} trial(s), up to {options.parallel} at once on "
        f"{search.plan.queue_name}; controller {where}. {result.urls[0]}"
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


def _run_local_controller(
    job_name: str, overrides: dict[str, str], name: str, project: str, spec: SearchSpec
) -> None:
    """The controller as a job process here, tracked online; trials still go to the queue."""
    from ak_remote.catalog import get_job
    from ak_remote.remote import local_run

    job = get_job(job_name)
    run_dir = local_run.new_run_dir(job)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_file = run_dir / "search_spec.json"
    spec_file.write_text(spec.to_json() + "\n")
    ui.info(f"Running the search controller here (run folder {run_dir}); Ctrl-C stops it")
    result = local_run.run_job(
        job,
        overrides,
        run_dir,
        offline=False,
        project=project,
        task_name=name,
        extra_args=["--search-spec", str(spec_file)],
    )
    search_id = str(result.summary.get("task_id") or "")
    ui.data(search_id)
    ui.next_steps([f"ak-remote status {search_id}", f"ak-remote pull {search_id} --check"])


def show_search(client: Client, task_id: str, as_json: bool) -> bool:
    """Print a search's trial table when `task_id` is a search; False when it is not one."""
    from ak_remote.remote.runs import check_task_ids, format_duration
    from ak_remote.remote.search import is_search, search_children, trial_rows

    (task_id,) = check_task_ids([task_id])
    found = client.get_tasks(ids=[task_id], only_fields=["system_tags", "status", "name"])
    if not found or not is_search(found[0]):
        return False
    search = found[0]
    rows = trial_rows(search_children(client, task_id))
    if as_json:
        ui.as_json({"search": task_id, "status": search.get("status"), "trials": rows})
        return True
    ui.info(f"Search {task_id} ({search.get('name')}): {search.get('status')}")
    from ak_remote.remote.search import key_values, varying_keys

    varying = varying_keys(rows)

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
                for row in rows
            ],
        )
    )
    return True


def with_trials(client: Client, ids: tuple[str, ...]) -> list[str]:
    """The ids, each search followed by its trials still queued or running."""
    from ak_remote.remote.runs import check_task_ids
    from ak_remote.remote.search import in_flight, is_search, search_children

    wanted = check_task_ids(ids)
    result = list(wanted)
    for task in client.get_tasks(ids=wanted, only_fields=["system_tags"]):
        if is_search(task):
            result += [
                i for i in in_flight(search_children(client, str(task["id"]))) if i not in result
            ]
    return result


def trials_of_searches(client: Client, ids: tuple[str, ...]) -> tuple[str, ...]:
    """The ids with each search replaced by its completed trials (in trial order)."""
    from ak_remote.contract import COMPLETED, is_task_id
    from ak_remote.remote.search import is_search, search_children, trial_rows

    wanted = [i.strip().lower() for i in ids if is_task_id(i.strip().lower())]
    if len(wanted) != len(ids) or not wanted:
        return ids  # let the command's own checks explain bad ids
    searches = {
        str(t["id"])
        for t in client.get_tasks(ids=wanted, only_fields=["system_tags"])
        if is_search(t)
    }
    if not searches:
        return ids
    result: list[str] = []
    for task_id in wanted:
        if task_id not in searches:
            result.append(task_id)
            continue
        rows = [r for r in trial_rows(search_children(client, task_id)) if r["trial"] != "final"]
        done = sorted(
            (r for r in rows if r["status"] == COMPLETED),
            key=lambda r: (len(r["trial"]), r["trial"]),
        )
        if not done:
            raise UsageError(
                f"search {task_id} has no finished trial yet", f"ak-remote status {task_id}"
            )
        result += [r["id"] for r in done if r["id"] not in result]
    return tuple(result)
