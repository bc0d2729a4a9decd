"""End to end: templates sync -> launch --wait -> the real clearml-agent runs the job on tiny data
-> status -> compare -> pull --check -> reproduce --wait -> tensorboard, all through the CLI.

One test, because each step needs the previous one's run and a real AutoKeras job costs tens of
seconds. It also checks what the emulator recorded never contains the credentials.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ak_remote.clearml_api import client_from_config
from ak_remote.launcher.pull import pull as pull_run
from tests.emulator.agent import running_agent
from tests.emulator.server import Emulator
from tests.helpers import TINY, invoke, ok, sets


@pytest.mark.slow
def test_templates_to_pulled_model_and_reproduction(
    agent_emulator: Emulator, tmp_path: Path
) -> None:
    emulator = agent_emulator
    ok(invoke("templates", "sync", "--image", "ak-remote-worker:test-cpu"))
    emulator.create_queue("cpu")

    with running_agent(emulator, "cpu", log_dir=tmp_path / "agent") as agent:
        launched = invoke(
            "launch", "structured-classifier", "-q", "cpu", *sets(*TINY, "max_trials=1"), "--wait"
        )
        assert launched.exit_code == 0, f"{launched.output}\n--- agent\n{agent.log()[-6000:]}"
        task_id = launched.stdout.strip().splitlines()[0]
        assert "completed" in launched.stderr

        status = json.loads(ok(invoke("status", task_id, "--json")).stdout)
        assert status[0]["status"] == "completed"
        assert status[0]["worker"] == agent.worker_id
        assert "Summary/test_accuracy" in status[0]["metrics"]

        compared = json.loads(ok(invoke("compare", task_id, "--format", "json")).stdout)
        metrics = compared["runs"][0]["metrics"]
        assert 0.0 <= metrics["test_accuracy"] <= 1.0
        assert metrics["export_verified"] == 1.0
        plot = tmp_path / "curves.png"
        ok(invoke("compare", task_id, "--plot", str(plot), "--metric", "epoch_loss"))
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        log = ok(invoke("logs", task_id)).stdout
        assert "test metrics" in log

        dest = tmp_path / "pulled"
        pulled = ok(invoke("pull", task_id, "--dest", str(dest), "--check"))
        assert "Check passed" in pulled.stderr
        assert (dest / "model.keras").is_file()
        assert (dest / "savedmodel").is_dir()
        assert (dest / "serving" / "1" / "saved_model.pb").is_file()
        assert "tensorflow/serving" in pulled.stderr  # the command that serves it
        assert "Serving model: " in pulled.stderr  # --check replayed raw inputs through it

        # predict by run id: pulls the serving model, answers raw CSV rows.
        from sklearn.datasets import load_wine

        wine = load_wine()
        rows = tmp_path / "wine_rows.csv"
        rows.write_text(
            ",".join(wine.feature_names)
            + "\n"
            + "".join(",".join(f"{v:g}" for v in row) + "\n" for row in wine.data[:3])
        )
        predicted = ok(
            invoke(
                "predict",
                task_id,
                "--input",
                str(rows),
                "--format",
                "json",
                "--dest",
                str(tmp_path / "for-predict"),
            )
        )
        labels = [r["label"] for r in json.loads(predicted.stdout)]
        assert len(labels) == 3
        assert set(labels) <= {"class_0", "class_1", "class_2"}
        assert (dest / "inference.json").is_file()

        before = len(emulator.state.tasks)
        dry = json.loads(
            ok(invoke("reproduce", task_id, "-q", "cpu", "--dry-run", "--json")).stdout
        )
        assert "seed 42" in dry["pinned"]
        assert "the job script stored in the task" in dry["pinned"]
        assert any("no recorded digest" in w for w in dry["warnings"])
        assert len(emulator.state.tasks) == before

        reproduced = invoke("reproduce", task_id, "-q", "cpu", "--wait", "--json")
        assert reproduced.exit_code == 0, f"{reproduced.output}\n--- agent\n{agent.log()[-6000:]}"
        report = json.loads(reproduced.stdout)
        deltas = {d["metric"]: d for d in report["deltas"]}
        assert deltas["test_accuracy"]["original"] == pytest.approx(metrics["test_accuracy"])
        assert deltas["test_accuracy"]["delta"] is not None
        assert "same data (fingerprints match)" in report["notes"]
        new_task = emulator.get_task(report["reproduction"])
        assert new_task["parent"] == task_id
        assert f"reproduces:{task_id}" in new_task["tags"]

    board = ok(invoke("tensorboard", task_id, "--print-command", "--logdir", str(tmp_path / "tb")))
    assert "--logdir_spec" in board.stdout
    events = list((tmp_path / "tb" / task_id).rglob("events.out.tfevents.*"))
    assert events

    # A fileserver hiccup is retried.
    emulator.fail_next("fileserver.download", times=1, mode="500")
    ok(invoke("pull", task_id, "--dest", str(tmp_path / "hiccup"), "--no-load"))

    # Integrity: a truncated download is fetched once more (and kept when that one is right)...
    with emulator.state.lock:
        path = next(p for p in emulator.state.files if p.endswith("/model.keras") and task_id in p)
        good = emulator.state.files[path]
        emulator.state.files[path] = good[:-100]
    notes: list[str] = []

    def restore_on_mismatch(text: str) -> None:
        notes.append(text)
        if "mismatch (attempt 1)" in text:
            emulator.state.files[path] = good

    result = pull_run(
        client_from_config(),
        task_id,
        tmp_path / "retried",
        load=False,
        progress=restore_on_mismatch,
    )
    assert any("retrying" in n for n in notes)
    assert (tmp_path / "retried" / "model.keras").read_bytes() == good
    assert result.files["model.keras"] == hashlib.sha256(good).hexdigest()

    # ... and rejected when it stays wrong.
    emulator.state.files[path] = good[:-100]
    rejected = invoke("pull", task_id, "--dest", str(tmp_path / "bad"), "--no-load")
    assert rejected.exit_code == 5, rejected.output
    assert "does not match the checksum" in rejected.stderr
    assert not (tmp_path / "bad" / "model.keras").exists()

    # Secrets: nothing the server stored or logged carries the credentials.
    recorded = json.dumps(
        {
            "tasks": emulator.state.tasks,
            "events": emulator.state.events,
            "models": emulator.state.models,
        },
        default=str,
    )
    assert emulator.secret_key not in recorded
    for blob in emulator.state.files.values():
        assert emulator.secret_key.encode() not in blob


@pytest.mark.slow
def test_a_run_that_fails_on_the_agent_makes_launch_wait_exit_5(
    agent_emulator: Emulator, tmp_path: Path
) -> None:
    ok(invoke("templates", "sync"))
    agent_emulator.create_queue("cpu")
    with running_agent(agent_emulator, "cpu", log_dir=tmp_path / "agent"):
        result = invoke(
            "launch",
            "structured-classifier",
            "-q",
            "cpu",
            "--set",
            # Launch refuses local paths (an agent cannot see them): a URL that fails there.
            "dataset=http://127.0.0.1:9/no/such.csv",
            "--wait",
        )
        assert result.exit_code == 5, result.output
        task_id = result.stdout.split()[0]
        assert f"{task_id} (failed)" in result.stderr
        assert f"ak-remote logs {task_id}" in result.stderr
        # Checked while the agent still runs: stopping an agent right after a failure can turn
        # the failed task into "stopped" (clearml-agent's shutdown marks its last task).
        status = json.loads(ok(invoke("status", task_id, "--json")).stdout)[0]
        assert status["status"] == "failed"
    log = ok(invoke("logs", task_id)).stdout
    assert "127.0.0.1:9/no/such.csv" in log
    refused = invoke("pull", task_id)
    assert refused.exit_code == 5
    assert "no verified model" in refused.stderr
