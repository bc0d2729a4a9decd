"""compare against the emulator: selection by sweep, scalars from events, the plot, the link."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from click.testing import CliRunner

from ak_remote.cli import cli
from ak_remote.remote import templates
from ak_remote.remote.clearml_api import client_from_config
from ak_remote.remote.launch import LaunchRequest, launch
from tests.emulator.server import Emulator


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
    assert f"compare-experiments;ids={result.task_ids[0]},{result.task_ids[1]}" in out.stderr

    missing = CliRunner().invoke(
        cli, ["compare", *result.task_ids, "--plot", str(plot), "--metric", "epoch_f1"]
    )
    assert missing.exit_code == 2
    assert "epoch_loss/trial-00/train" in missing.stderr  # lists what exists

    wrong = CliRunner().invoke(cli, ["compare", *result.task_ids, "--plot", "curves.svg"])
    assert wrong.exit_code == 2 and "PNG" in wrong.stderr
