"""`ak-remote predict`: answers of a run's serving model for a CSV, texts, or images."""

from __future__ import annotations

from pathlib import Path

import click

from ak_remote import ui
from ak_remote.commands.common import App, pass_app


@click.command()
@click.argument("target", metavar="RUN_DIR|RUN_ID")
@click.option(
    "--input",
    "source",
    required=True,
    metavar="FILE|FOLDER|-",
    help="A CSV (structured), a text file with one text per line or a CSV (text), an image or "
    "a folder of images (image); '-' reads standard input.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.option("--resize", is_flag=True, help="Resize images to the training size first.")
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where a run id's model is pulled to [default: pulled/RUN_ID].",
)
@pass_app
def predict(app: App, target: str, source: str, fmt: str, resize: bool, dest: Path | None) -> None:
    """Predict with a run's serving model: a run folder, a pulled folder, or a run id.

    The serving model takes raw inputs (CSV cells with blanks, sentences, image pixels) and
    needs TensorFlow, not AutoKeras. A run id is pulled first; every model file is checked
    against the sha256 its run recorded (summary.json) before it is loaded.

    \b
    Examples:
      ak-remote predict runs/structured-classifier/20260101-120000 --input new_rows.csv
      echo "great product, works well" | ak-remote predict RUN_ID --input - --format json
    """
    from ak_remote.launcher.predict import predict as run_predict
    from ak_remote.launcher.predict import render, resolve, verify_files

    def fetch(task_id: str) -> Path:
        from ak_remote.launcher.pull import pull

        return pull(app.client(), task_id, dest, load=False, progress=ui.info).dest

    version_dir = resolve(target, fetch)
    unchecked = verify_files(version_dir)  # the sha256s the run recorded, before loading
    if unchecked:
        ui.warn(unchecked)
    ui.data(render(run_predict(version_dir, source, resize=resize), fmt))
