"""`ak-remote compare`: differing parameters and final metrics of runs, and their curves."""

from __future__ import annotations

from pathlib import Path

import click

from ak_remote import ui
from ak_remote.commands.common import App, pass_app
from ak_remote.launcher.compare import COMPARE_FIELDS, FORMATS, build, plot, render, run_labels


@click.command()
@click.argument("ids", nargs=-1, metavar="[IDS]...")
@click.option("--sweep", "sweep_id", help="All runs of this sweep id.")
@click.option("--project", help="All runs of this project.")
@click.option("--sort", metavar="METRIC", help="Sort by a metric, best first (-/+ forces order).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--all-params", is_flag=True, help="Show every parameter, not only differing ones.")
@click.option("--all-metrics", is_flag=True, help="Every last scalar, not only final metrics.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Draw learning curves into this PNG file.",
)
@click.option(
    "--metric",
    default="epoch_loss",
    show_default=True,
    help="Scalar (title or title/series substring) drawn by --plot.",
)
@pass_app
def compare(
    app: App,
    ids: tuple[str, ...],
    sweep_id: str | None,
    project: str | None,
    sort: str | None,
    fmt: str,
    all_params: bool,
    all_metrics: bool,
    plot_path: Path | None,
    metric: str,
) -> None:
    """Compare runs: the parameters that differ and the final metrics.

    \b
    Examples:
      ak-remote compare --sweep sw-1a2b3c4d --sort test_accuracy
      ak-remote compare ID1 ID2 --format markdown --plot curves.png --metric epoch_val_loss
    """
    from ak_remote.launcher.runs import select_tasks

    if plot_path is not None and plot_path.suffix.lower() != ".png":
        raise click.BadParameter("the plot is written as PNG: give a FILE.png", param_hint="--plot")
    client = app.client()
    from ak_remote.search.read import trials_of_searches

    ids = trials_of_searches(client, ids)  # a search id means its finished trials
    tasks = select_tasks(client, ids=ids, sweep=sweep_id, project=project, fields=COMPARE_FIELDS)
    comparison = build(tasks, sort=sort, all_metrics=all_metrics, all_params=all_params)
    ui.data(render(comparison, fmt))
    if plot_path is not None:
        drawn = plot(client, tasks, metric, plot_path, run_labels(tasks))
        ui.info(f"Plotted {len(drawn)} curve(s) of {metric} to {plot_path}")
    ui.info(f"Web UI comparison: {client.compare_url([str(t['id']) for t in tasks])}")
