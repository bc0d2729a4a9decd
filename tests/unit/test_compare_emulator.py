"""compare against the emulator: selection by sweep, scalars from events, the plot, the link."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from click.testing import CliRunner

from ak_remote.clearml_api import client_from_config
from ak_remote.cli import cli
from ak_remote.launcher import templates
from ak_remote.launcher.launch import LaunchRequest, launch
from tests.emulator.server import Emulator
from tests.helpers import invoke


def test_compare_a_sweep_with_curves(clearml_emulator: Emulator, tmp_path: Path) -> None:
    client = client_from_config()
    templates.sync(client, "ak-remote/templates", "img:1", "")
    clearml_emulator.create_queue("gpu")
    result = launch(client, LaunchRequest("structured-classifier", "gpu", sweep=["epochs=2,4"]))
    events = []
    for n, task_id in enumerate(result.task_ids):
        for epoch in range(3):
            for split, offset in (("train", 0.0), ("validation", 0.1)):
                events.append(
                    {
                        "type": "training_stats_scalar",
                        "task": task_id,
                        "metric": "epoch_loss",
                        "variant": f"trial-00/{split}",
                        "value": 1.0 / (epoch + 1 + n) + offset,
                        "iter": epoch,
                    }
                )
        events.append(
            {
                "type": "training_stats_scalar",
                "task": task_id,
                "metric": "Summary",
                "variant": "test_accuracy",
                "value": 0.5 + n / 10,
                "iter": -(2**31),
            }
        )
    clearml_emulator.add_events(events)

    plot = tmp_path / "curves.png"
    out = CliRunner().invoke(
        cli,
        [
            "compare",
            "--sweep",
            str(result.plan.sweep_id),
            "--sort",
            "test_accuracy",
            "--format",
            "csv",
            "--plot",
            str(plot),
        ],
    )
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [r["id"] for r in rows] == list(reversed(result.task_ids))  # best first
    assert [r["epochs"] for r in rows] == ["4", "2"]
    assert float(rows[0]["test_accuracy"]) == 0.6
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert "Plotted 4 curve(s) of epoch_loss" in out.stderr
    # the emulator is a clearml-server 2.0: its web app's route
    assert f"compare-tasks;ids={result.task_ids[0]},{result.task_ids[1]}" in out.stderr

    missing = CliRunner().invoke(
        cli, ["compare", *result.task_ids, "--plot", str(plot), "--metric", "epoch_f1"]
    )
    assert missing.exit_code == 2
    assert "epoch_loss/trial-00/train" in missing.stderr  # lists what exists

    wrong = invoke("compare", *result.task_ids, "--plot", "curves.svg")
    assert wrong.exit_code == 2
    assert "PNG" in wrong.stderr


@pytest.mark.parametrize(
    ("server_version", "route"),
    [
        # clearml-web 2.x: compare-tasks (its compare-experiments redirect drops the ids)
        ("2.0.0", "/projects/*/compare-tasks;ids={ids}/scalars/graph"),
        # clearml-web 1.x has only compare-experiments
        ("1.16.0", "/projects/*/compare-experiments;ids={ids}"),
    ],
)
def test_the_compare_link_uses_the_route_of_the_servers_web_app(
    clearml_emulator: Emulator, monkeypatch: pytest.MonkeyPatch, server_version: str, route: str
) -> None:
    import tests.emulator.services.auth as emulator_auth

    monkeypatch.setattr(emulator_auth, "SERVER_VERSION", server_version)
    client = client_from_config()
    templates.sync(client, "ak-remote/templates", "img:1", "")
    clearml_emulator.create_queue("gpu")
    result = launch(client, LaunchRequest("structured-classifier", "gpu", sweep=["epochs=2,4"]))
    out = invoke("compare", *result.task_ids)
    assert out.exit_code == 0, out.output
    ids = ",".join(result.task_ids)
    link = out.stderr.split("Web UI comparison: ", 1)[1].split()[0]
    # the user's web_server (clearml.conf / CLEARML_WEB_HOST), on that server's route
    assert link == clearml_emulator.web_url + route.format(ids=ids)


def test_a_plot_of_many_runs_tells_them_apart(clearml_emulator: Emulator, tmp_path: Path) -> None:
    """Distinct labels (what differs), distinct colours, legend outside, one-epoch runs visible."""
    from ak_remote.launcher.compare import plot, run_labels

    client = client_from_config()
    templates.sync(client, "ak-remote/templates", "img:1", "")
    clearml_emulator.create_queue("gpu")
    result = launch(
        client,
        LaunchRequest(
            "structured-classifier",
            "gpu",
            sweep=["max_trials=1,2,3", "epochs=1,5", "tuner=greedy,random"],
        ),
    )
    events = []
    for n, task_id in enumerate(result.task_ids):
        epochs = int(result.plan.runs[n].overrides["epochs"])
        for epoch in range(epochs):
            for split, offset in (("train", 0.0), ("validation", 0.05)):
                events.append(
                    {
                        "type": "training_stats_scalar",
                        "task": task_id,
                        "metric": "epoch_loss",
                        "variant": f"final · {split}",
                        "value": 1.0 / (epoch + 1) + n / 50 + offset,
                        "iter": epoch,
                    }
                )
    clearml_emulator.add_events(events)
    tasks = client.get_tasks(ids=result.task_ids)
    labels = run_labels(tasks)
    assert len(set(labels.values())) == len(tasks) == 12
    assert all("max_trials=" in text and "epochs=" in text for text in labels.values())
    path = tmp_path / "many.png"
    drawn = plot(client, tasks, "epoch_loss", path, labels)
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert len({line.label for line in drawn}) == len(drawn) == 24
    colors = {line.task_id: line.color for line in drawn}
    assert len(set(colors.values())) == 12  # one colour per run, no repeats
    assert all(line.marker == "o" for line in drawn if line.points == 1)
    assert drawn[0].label.startswith("★ ")
    assert drawn[0].last == min(d.last for d in drawn)
