"""`ak-remote pull`: download a run's model, verify its checksums, reload it, replay predictions."""

from __future__ import annotations

from pathlib import Path

import click

from ak_remote import ui
from ak_remote.commands.common import App, json_option, pass_app


@click.command()
@click.argument("task_id", metavar="ID")
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to put the files [default: pulled/ID].",
)
@click.option(
    "--check",
    is_flag=True,
    help="Also predict the run's recorded held-out samples and compare (needs TensorFlow).",
)
@click.option(
    "--no-load", is_flag=True, help="Only download and verify checksums; do not load the models."
)
@json_option("Print what was pulled as JSON.")
@pass_app
def pull(
    app: App, task_id: str, dest: Path | None, check: bool, no_load: bool, as_json: bool
) -> None:
    """Download a run's exported models and inference metadata, verified against its checksums.

    A download that does not match the sha256 the job recorded is fetched again once, then
    rejected (exit 5). The models are then reloaded (AutoKeras custom objects included); with
    --check they must reproduce the predictions the job recorded on held-out samples.
    """
    from ak_remote.launcher.pull import pull as pull_run

    if check and no_load:
        raise click.UsageError("--check needs the models loaded; drop --no-load")
    result = pull_run(
        app.client(),
        task_id,
        dest,
        load=not no_load,
        check=check,
        progress=ui.info,
    )
    if as_json:
        ui.as_json(result.as_dict())
    else:
        ui.data(str(result.dest))
    if result.loaded:
        ui.info(f"Reloaded: {', '.join(result.loaded)}")
    if result.check:
        diffs = ", ".join(f"{k} {v:.2g}" for k, v in result.check["max_abs_diff"].items())
        ui.info(
            f"Check passed: {result.check['samples']} held-out samples reproduced "
            f"(max |diff| {diffs}; tolerance {result.check['tolerance']:g})"
        )
        if result.check.get("serving"):
            serving = result.check["serving"]
            diffs = ", ".join(f"{k} {v:.2g}" for k, v in serving["max_abs_diff"].items())
            ui.info(
                f"Serving model: {serving['samples']} raw held-out samples answered as the run "
                f"did (max |diff| {diffs})"
            )
    steps = [f"see {result.dest / 'inference.json'} for how to call the model"]
    if (result.dest / "serving").is_dir():
        name = "".join(c if c.isalnum() else "_" for c in result.summary.job or "model")
        steps = [
            f"ak-remote predict {result.dest} --input FILE|FOLDER|-",
            "serve it with TF Serving (REST on port 8501): docker run --rm -p 8501:8501 "
            f"-v {result.dest / 'serving'}:/models/{name} -e MODEL_NAME={name} tensorflow/serving",
            *steps,
        ]
    ui.next_steps(steps)
