"""`ak-remote jobs`: what can be run, and with which parameters."""

from __future__ import annotations

import click

from ak_remote import ui
from ak_remote.catalog import JOBS, get_job
from ak_remote.commands.common import json_option
from ak_remote.params import format_value


@click.command()
@click.argument("job_name", metavar="[JOB]", required=False)
@json_option()
def jobs(job_name: str | None, as_json: bool) -> None:
    """List the jobs, or the parameters of JOB with their types and defaults."""
    if job_name is None:
        if as_json:
            ui.as_json(
                {
                    name: {
                        "script": j.script,
                        "autokeras": j.autokeras_class,
                        "description": j.description,
                    }
                    for name, j in JOBS.items()
                }
            )
        else:
            ui.data(
                ui.table(
                    ["job", "autokeras", "description"],
                    [[j.name, j.autokeras_class, j.description] for j in JOBS.values()],
                )
            )
        return
    job = get_job(job_name)
    from ak_remote.datasets.references import bundled_for

    if as_json:
        ui.as_json(
            {
                "job": job.name,
                "script": job.script,
                "bundled_datasets": bundled_for(job.family, job.kind),
                "params": {
                    s.name: {
                        "type": s.type,
                        "default": format_value(s.default),
                        "help": s.help,
                        "choices": list(s.choices),
                        "min": s.min,
                        "max": s.max,
                    }
                    for s in job.params.specs
                },
            }
        )
        return
    ui.data(
        ui.table(
            ["parameter", "type", "default", "description"],
            [[s.name, s.type, format_value(s.default), s.help] for s in job.params.specs],
        )
    )
    ui.info(f"\nbundled datasets: {', '.join(bundled_for(job.family, job.kind))}")
    ui.next_steps([f"ak-remote run {job.name} --set max_trials=2 --set epochs=5"])
