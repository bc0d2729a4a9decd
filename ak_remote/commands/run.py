"""`ak-remote run`: run a job on this machine."""

from __future__ import annotations

from pathlib import Path

import click

from ak_remote import local_run, ui
from ak_remote.params import parse_assignments


@click.command()
@click.argument("job_name", metavar="JOB")
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a job parameter (repeatable). `ak-remote jobs JOB` lists them.",
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the run writes its logs, models and summary [default: runs/JOB/TIMESTAMP].",
)
@click.option(
    "--offline", is_flag=True, help="Use ClearML offline mode even if a server is configured."
)
@click.option("--project", help="ClearML project of the run [default: ak-remote].")
@click.option("--name", "task_name", help="ClearML task name [default: 'JOB on DATASET'].")
@click.option("--json", "as_json", is_flag=True, help="Print the run's summary as JSON.")
def run(
    job_name: str,
    assignments: tuple[str, ...],
    run_dir: Path | None,
    offline: bool,
    project: str | None,
    task_name: str | None,
    as_json: bool,
) -> None:
    """Run JOB on this machine, tracked in ClearML.

    With no ClearML server configured (no CLEARML_API_HOST, no clearml.conf) the run uses
    ClearML offline mode, and `ak-remote import-offline` can upload it to a server later.

    \b
    Example:
      ak-remote run structured-classifier --set max_trials=2 --set epochs=5
    """
    overrides = parse_assignments(assignments)
    job, _ = local_run.prepare(job_name, overrides)
    offline = offline or not local_run.server_configured()
    target = run_dir or local_run.new_run_dir(job)
    mode = "offline (no ClearML server configured)" if offline else "tracked on the ClearML server"
    ui.info(f"Running {job.name} in {target}, {mode}")
    result = local_run.run_job(job, overrides, target, offline, project, task_name)
    summary = result.summary
    if as_json:
        ui.as_json(summary)
    else:
        ui.data(str(result.run_dir))
        metrics = summary.get("metrics") or {}
        for name, value in sorted(metrics.items()):
            ui.info(f"  {name}: {value:.4g}" if isinstance(value, float) else f"  {name}: {value}")
    steps = [f"tensorboard --logdir {result.run_dir / 'tensorboard'}"]
    if summary.get("offline_session"):
        steps.append(f"ak-remote import-offline {summary['offline_session']}")
    elif summary.get("task_id"):
        steps.append(f"ak-remote status {summary['task_id']}")
    ui.next_steps(steps)
