"""`ak-remote run`: run a job on this machine."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ak_remote import contract, ui
from ak_remote.commands.common import json_option, set_option
from ak_remote.commands.search import search_rule_options
from ak_remote.launcher import local_run
from ak_remote.params import parse_assignments
from ak_remote.search.spec import SearchRules


@click.command()
@click.argument("job_name", metavar="JOB")
@set_option("assignments")
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
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="RUN_DIR",
    help="Continue the search saved in RUN_DIR (a stopped or killed run); its search "
    "parameters are kept.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the run --run-dir holds (a finished run's models included); only what a run "
    "wrote is removed, and a folder holding no run is refused.",
)
@click.option(
    "--parallel",
    type=int,
    default=None,
    metavar="N",
    help="Spread the search over N worker processes here (one GPU each when there are GPUs); "
    "the best candidate is then trained once more and exported.",
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Show TensorFlow's, Keras' and ClearML's warnings [default: RUN/logs/libraries.log].",
)
@json_option("Print the run's summary as JSON.")
@search_rule_options
def run(
    job_name: str,
    assignments: tuple[str, ...],
    run_dir: Path | None,
    offline: bool,
    project: str | None,
    task_name: str | None,
    resume_dir: Path | None,
    overwrite: bool,
    parallel: int | None,
    verbose: bool,
    as_json: bool,
    rules: SearchRules,
) -> None:
    """Run JOB on this machine, tracked in ClearML.

    With no ClearML server configured (no CLEARML_API_HOST, no clearml.conf) the run uses
    ClearML offline mode, and `ak-remote import-offline` can upload it to a server later.

    \b
    Examples:
      ak-remote run structured-classifier --set max_trials=2 --set epochs=5
      ak-remote run structured-classifier --resume runs/structured-classifier/20260101-120000
      ak-remote run image-classifier --set max_trials=16 --parallel 8   # 8 GPUs, 8 workers
    """
    overrides = parse_assignments(assignments)
    if parallel is None and rules.given():
        raise click.UsageError(f"{', '.join(rules.given())} need --parallel N")
    if verbose:  # read by the job's runtime (ak_remote.runtime.console), a child process
        os.environ["AK_REMOTE_VERBOSE"] = "1"
    if resume_dir is not None:
        from ak_remote.catalog import get_job
        from ak_remote.runtime.search_state import check_resume_dir, resume_overrides

        if run_dir is not None and run_dir.resolve() != resume_dir.resolve():
            raise click.UsageError("--resume continues in its own folder: drop --run-dir")
        run_dir = check_resume_dir(str(resume_dir))
        overrides = resume_overrides(run_dir, get_job(job_name), overrides)
    if overwrite and resume_dir is not None:
        raise click.UsageError("--overwrite replaces a run and --resume continues it: pick one")
    job, values = local_run.check_request(job_name, overrides)
    offline = offline or not contract.server_configured()
    target = run_dir or local_run.new_run_dir(job)
    from ak_remote.runtime.rundir import check_run_dir  # pure Python, no TensorFlow

    check_run_dir(target, resume_dir is not None, overwrite)
    extra: list[str] = []
    if resume_dir is not None and (target / contract.SEARCH_CONTROLLER_FILE).is_file():
        from ak_remote.search.launch import resume_local_spec

        # A parallel search continues as one, with its own spec (--parallel may change).
        spec_file = resume_local_spec(target, parallel, int(str(values["max_trials"])))
        extra = ["--search-spec", str(spec_file)]
    elif parallel is not None:
        from ak_remote.search.spec import CONTROLLER, LOCAL_BACKEND, SearchSpec, check_parallel

        if resume_dir is not None:
            raise click.UsageError(
                f"{target} holds a single search, which resumes as one: drop --parallel"
            )
        check_parallel(parallel, int(str(values["max_trials"])))
        spec = rules.apply(SearchSpec(role=CONTROLLER, backend=LOCAL_BACKEND, parallel=parallel))
        if spec.warm_start:
            check_local_warm_start(spec.warm_start, str(values["tuner"]), offline)
            if not contract.is_task_id(spec.warm_start):
                spec.warm_start = str(Path(spec.warm_start).resolve())
        target.mkdir(parents=True, exist_ok=True)
        spec_file = target / "search_spec.json"
        spec_file.write_text(spec.to_json() + "\n")
        extra = ["--search-spec", str(spec_file)]
    mode = "offline (no ClearML server configured)" if offline else "tracked on the ClearML server"
    verb = "Resuming" if resume_dir is not None else "Running"
    ui.info(f"{verb} {job.name} in {target}, {mode}")
    result = local_run.run_job(
        job,
        overrides,
        target,
        offline,
        project,
        task_name,
        resume=resume_dir is not None,
        overwrite=overwrite,
        extra_args=extra,
    )
    summary = result.summary
    if as_json:
        ui.as_json(summary.to_dict())
    else:
        ui.data(str(result.run_dir))
        for name, value in sorted(summary.metrics.items()):
            ui.info(f"  {name}: {value:.4g}" if isinstance(value, float) else f"  {name}: {value}")
    # A parallel search's logs are in its trials' and final fit's folders: the whole run folder.
    board = result.run_dir if extra else result.run_dir / "tensorboard"
    steps = [f"tensorboard --logdir {board}"]
    if summary.offline_session:
        steps.append(f"ak-remote import-offline {summary.offline_session}")
    elif summary.task_id:
        steps.append(f"ak-remote status {summary.task_id}")
    ui.next_steps(steps)


def check_local_warm_start(source: str, tuner: str, offline: bool) -> None:
    """`run --parallel --warm-start`: a local search's run folder, or a search's task id when a
    server is configured; its data and space are checked once the job has its data."""
    from ak_remote.contract import is_task_id
    from ak_remote.search.runner import STATE_FILE

    if tuner == "hyperband":
        raise click.UsageError(
            "--warm-start works with tuner=random, bayesian or greedy (Hyperband's brackets "
            "start from new random candidates)"
        )
    if is_task_id(source):
        if offline:
            raise click.UsageError(f"--warm-start {source}: a search id needs a ClearML server")
        return
    if not (Path(source) / STATE_FILE).is_file():
        raise click.UsageError(
            f"--warm-start {source}: not a parallel search's run folder (no {STATE_FILE})"
        )
