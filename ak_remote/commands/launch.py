"""`ak-remote launch`: clone a template with overrides and enqueue it, or a sweep of them."""

from __future__ import annotations

import click

from ak_remote import ui
from ak_remote.commands.common import (
    App,
    dry_run_option,
    follow_runs,
    json_option,
    pass_app,
    set_option,
    wait_option,
)
from ak_remote.commands.search import search_rule_options
from ak_remote.config import pick
from ak_remote.launcher.launch import (
    SWEEP_ID_AT_LAUNCH,
    LaunchPlan,
    LaunchRequest,
    execute_launch,
    plan_launch,
)
from ak_remote.search.spec import SearchRules


@click.command()
@click.argument("template", metavar="TEMPLATE")
@click.option("-q", "--queue", help="Queue to enqueue on [default: AK_REMOTE_QUEUE / config].")
@set_option()
@click.option(
    "--sweep",
    multiple=True,
    metavar="KEY=V1,V2",
    help="Sweep a parameter (repeatable): one run per combination, tagged with one sweep id.",
)
@click.option("--docker", "image", metavar="IMAGE", help="Run in this image instead.")
@click.option("--name", help="Run name [default: the job and its overrides].")
@click.option("--tags", multiple=True, help="Tags for the runs (repeatable or comma-separated).")
@click.option("--project", help="ClearML project of the runs [default: ak-remote].")
@click.option("--template-project", help="Where job templates live [default: ak-remote/templates].")
@click.option("--create-queue", is_flag=True, help="Create the queue if it does not exist.")
@dry_run_option()
@wait_option("Follow the runs until they end; exit 5 if any failed.")
@click.option(
    "--parallel",
    type=int,
    default=None,
    metavar="N",
    help="One search with up to N trials in flight on the queue (a controller picks each next "
    "candidate with the job's oracle), then the best one's final fit.",
)
@click.option(
    "--controller-queue",
    metavar="QUEUE",
    help="With --parallel: the CPU queue the controller runs on "
    "[default: AK_REMOTE_CONTROLLER_QUEUE / services].",
)
@click.option(
    "--controller",
    "controller_where",
    type=click.Choice(["queue", "local"]),
    default=None,
    help="With --parallel: run the controller on its queue, or in this terminal.",
)
@click.option(
    "--max-retries",
    type=click.IntRange(0, 100),
    default=None,
    help="With --parallel: retries of a failed or lost trial [default: 2].",
)
@click.option(
    "--lost-after",
    type=click.FloatRange(1, 86400),
    default=None,
    metavar="SECONDS",
    help="With --parallel: a running trial without any update this long is lost and retried "
    "[default: 120].",
)
@json_option("Print the runs (or the plan) as JSON.")
@pass_app
@search_rule_options
def launch(
    app: App,
    template: str,
    queue: str | None,
    sets: tuple[str, ...],
    sweep: tuple[str, ...],
    image: str | None,
    name: str | None,
    tags: tuple[str, ...],
    project: str | None,
    template_project: str | None,
    create_queue: bool,
    dry_run: bool,
    wait: bool,
    parallel: int | None,
    controller_queue: str | None,
    controller_where: str | None,
    max_retries: int | None,
    lost_after: float | None,
    as_json: bool,
    rules: SearchRules,
) -> None:
    """Clone TEMPLATE (a job name or a task id) with overrides and enqueue it on a queue.

    Everything is checked before anything is created; a sweep launches entirely or not at all.
    Task ids go to stdout, links and next steps to stderr.

    \b
    Examples:
      ak-remote launch image-classifier -q gpu --set max_trials=20
      ak-remote launch structured-classifier -q cpu --sweep epochs=10,20 --sweep tuner=greedy,random
      ak-remote launch image-classifier -q gpu --set max_trials=64 --parallel 8
      ak-remote launch image-classifier -q gpu --set tuner=hyperband --set epochs=27 \\
          --set max_trials=200 --parallel 8 --max-gpu-hours 6 --target 0.99
    """
    config = app.config
    request = LaunchRequest(
        template=template,
        queue=pick(queue, config.queue),
        sets=sets,
        sweep=sweep,
        docker=image,
        name=name,
        tags=tags,
        project=pick(project, config.project) or config.project,
        template_project=pick(template_project, config.template_project) or config.template_project,
        create_queue=create_queue,
    )
    search_flags = (controller_queue, controller_where, max_retries, lost_after)
    if parallel is not None or rules.given() or any(f is not None for f in search_flags):
        from ak_remote.commands.search import launch_search
        from ak_remote.search.launch import SearchOptions

        options = SearchOptions(
            parallel, controller_queue, controller_where, max_retries, lost_after, rules
        )
        launch_search(app, request, options, dry_run, wait, as_json)
        return
    client = app.client()
    plan = plan_launch(client, request)
    _say_placeholders(plan)
    if dry_run:
        _show_plan(plan, as_json)
        return
    result = execute_launch(client, plan, progress=ui.info)
    if as_json:
        ui.as_json(result.as_dict())
    else:
        for task_id in result.task_ids:
            ui.data(task_id)
    for run, url in zip(plan.runs, result.urls, strict=False):
        ui.info(f"  {run.name}: {url}")
    ids = " ".join(result.task_ids)
    selector = f"--sweep {plan.sweep_id}" if plan.sweep_id else ids
    if len(result.task_ids) > 1:
        ui.info(f"Compare in the Web UI: {client.compare_url(result.task_ids)}")
    if not wait:
        ui.next_steps(
            [
                f"ak-remote status {selector}",
                f"ak-remote logs {result.task_ids[0]} --follow",
                f"ak-remote compare {selector}",
                f"ak-remote abort {ids}",
            ]
        )
        return
    follow_runs(client, result.task_ids, config.poll_interval)
    ui.next_steps([f"ak-remote compare {selector}", f"ak-remote pull {result.task_ids[0]} --check"])


def _say_placeholders(plan: LaunchPlan) -> None:
    """Name the variables the agent must have: the runs fail on their data without them."""
    from ak_remote.datasets.secrets import placeholder_names

    datasets = [run.values.get("dataset", "") for run in plan.runs]
    names = list(dict.fromkeys(n for dataset in datasets for n in placeholder_names(dataset)))
    if names:
        listed = ", ".join(f"${{{n}}}" for n in names)
        ui.info(
            f"The agent expands {listed} from its environment when the run fetches its dataset; "
            'Docker-mode agents pass them in with agent.extra_docker_arguments: ["-e", "NAME"].'
        )


def _show_plan(plan: LaunchPlan, as_json: bool) -> None:
    if as_json:
        ui.as_json(plan.describe())
        return
    queue = plan.queue_name + ("" if plan.queue_id else " (will be created)")
    project = plan.project_name + ("" if plan.project_id else " (will be created)")
    ui.info(f"Dry run: nothing is created. Template {plan.template.name} ({plan.template.id})")
    ui.info(f"  queue {queue}, project {project}, image {plan.image or '(template default)'}")
    if plan.sweep_id:
        # The id is drawn when the runs are created: printing this plan's would promise an id
        # the real launch does not get.
        ui.info(f"  a sweep of {len(plan.runs)} runs (its id is given when it is launched)")
    headers = ["run", "name", "overrides", "tags"]
    rows = [
        [
            run.index + 1,
            run.name,
            " ".join(f"{k}={v}" for k, v in run.overrides.items()) or "(template defaults)",
            ",".join(run.tags).replace(plan.sweep_id or "\0", SWEEP_ID_AT_LAUNCH),
        ]
        for run in plan.runs
    ]
    ui.data(ui.table(headers, rows))
