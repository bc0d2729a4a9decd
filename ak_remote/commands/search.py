"""The click side of parallel searches: `launch --parallel`, and a search's trial table."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from ak_remote import ui
from ak_remote.commands.common import App, follow_runs

if TYPE_CHECKING:
    from ak_remote.clearml_api import Client
    from ak_remote.launcher.launch import LaunchRequest
    from ak_remote.search.launch import SearchOptions


def search_rule_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The search-rule flags of `launch` and `run` (with --parallel), handed to the command as
    one `rules` argument (ak_remote.search.spec.SearchRules)."""

    @functools.wraps(command)
    def with_rules(*args: Any, **kwargs: Any) -> Any:
        from ak_remote.search.spec import SearchRules

        rules = SearchRules(
            early_stop=kwargs.pop("early_stop"),
            stop_grace=kwargs.pop("stop_grace"),
            stop_min_trials=kwargs.pop("stop_min_trials"),
            max_time=kwargs.pop("max_time"),
            max_gpu_hours=kwargs.pop("max_gpu_hours"),
            target=kwargs.pop("target"),
            warm_start=kwargs.pop("warm_start"),
        )
        return command(*args, rules=rules, **kwargs)

    options = [
        click.option(
            "--early-stop",
            type=click.Choice(["median", "off"]),
            default=None,
            help="With --parallel: stop a trial whose best objective so far is worse than the "
            "median of finished trials at the same epoch [default: median].",
        ),
        click.option(
            "--stop-grace",
            type=click.IntRange(0, 100000),
            default=None,
            metavar="EPOCHS",
            help="With --parallel: epochs a trial trains before the median rule judges it "
            "[default: 2].",
        ),
        click.option(
            "--stop-min-trials",
            type=click.IntRange(1, 100000),
            default=None,
            metavar="N",
            help="With --parallel: finished trials that reached an epoch before the median rule "
            "judges anyone there [default: 5].",
        ),
        click.option(
            "--max-time",
            default=None,
            metavar="DURATION",
            help="With --parallel: wall-time budget of the trials (90m, 2h, seconds); then the "
            "trials in flight stop and the final fit runs on the best so far.",
        ),
        click.option(
            "--max-gpu-hours",
            type=float,
            default=None,
            metavar="HOURS",
            help="With --parallel: budget of agent-hours spent on trials (one GPU per agent).",
        ),
        click.option(
            "--target",
            type=float,
            default=None,
            metavar="VALUE",
            help="With --parallel: end the search once a trial's objective is this good.",
        ),
        click.option(
            "--warm-start",
            default=None,
            metavar="SEARCH",
            help="With --parallel: give the oracle an earlier search's results (same job, data "
            "and space); its candidates are not trained again.",
        ),
    ]
    for option in reversed(options):
        with_rules = option(with_rules)
    return with_rules


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


def show_search(client: Client, task_id: str, as_json: bool, gpu_prices: str = "") -> bool:
    """Print a search's trial table when `task_id` is a search; False when it is not one."""
    from ak_remote.launcher.runs import format_duration
    from ak_remote.search.read import find_search, key_values, parse_prices, varying_keys

    search = find_search(client, task_id, parse_prices(gpu_prices))
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
    budget = search.budget
    if budget is None or not budget.agents:
        return True
    ui.data(
        ui.table(
            ["agent", "trials", "busy", "queued", "set-up"],
            [
                [
                    a.worker,
                    a.trials,
                    format_duration(a.busy_s),
                    format_duration(a.queued_s),
                    format_duration(a.setup_s),
                ]
                for a in budget.agents
            ],
        )
    )
    used = [f"{budget.gpu_hours:.3f} GPU-hours"]
    if budget.max_gpu_hours is not None:
        used[0] += f" of {budget.max_gpu_hours:g}"
    if budget.elapsed_s is not None:
        wall = format_duration(budget.elapsed_s)
        limit = f" of {format_duration(budget.max_time_s)}" if budget.max_time_s else ""
        used.append(f"{wall}{limit} wall time")
    if budget.cost is not None:
        used.append(f"cost {budget.cost:.2f} at {budget.price:g} per GPU-hour on {budget.queue}")
    if budget.target is not None:
        used.append(f"target {budget.target:g}")
    ui.info("Budget used: " + ", ".join(used))
    return True
