"""The real clearml SDK against the emulator: each flow asserts on the server state it leaves.

SDK flows run in fresh interpreters (``run_python``) because the SDK keeps process-global state.
With AK_REMOTE_TEST_CLEARML_SERVER=1 they run against a real server; the assertions that read
the emulator's state directly are skipped there.
"""

from __future__ import annotations

from pathlib import Path

import requests

from tests.emulator.api import md5_key
from tests.emulator.fixtures import RealServer, run_python, script_result, unique_name
from tests.emulator.server import Emulator

Handle = Emulator | RealServer


def _download(url: str) -> bytes:
    response = requests.get(url, timeout=30)  # quotes what the SDK left unquoted (spaces)
    response.raise_for_status()
    return response.content


KERAS_SCRIPT = """
import json, os
from pathlib import Path

import numpy as np
import keras
from clearml import OutputModel, Task

task = Task.init(project_name="emulator/keras", task_name="tiny fit",
                 reuse_last_task_id=False, output_uri=True)
params = task.connect({"epochs": 2, "units": 4, "learning_rate": 0.01})
rng = np.random.default_rng(0)
x = rng.random((40, 4), dtype="float32")
y = (x.sum(axis=1) > 2).astype("int32")
model = keras.Sequential([
    keras.Input((4,)),
    keras.layers.Dense(int(params["units"]), activation="relu"),
    keras.layers.Dense(2, activation="softmax"),
])
model.compile(optimizer=keras.optimizers.Adam(float(params["learning_rate"])),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x, y, epochs=int(params["epochs"]), batch_size=8, validation_split=0.25, verbose=0,
          callbacks=[keras.callbacks.TensorBoard(log_dir="tb")])
Path("payload.bin").write_bytes(bytes(range(256)) * 40)
task.upload_artifact("payload", artifact_object="payload.bin", wait_on_upload=True)
model.save("tiny.keras")
output = OutputModel(task=task, framework="Keras", name="tiny model")
output.update_weights(weights_filename="tiny.keras", auto_delete_file=False)
task.flush(wait_for_uploads=True)
print("RESULT " + json.dumps({"task": task.id, "model": output.id}))
task.close()
"""

READ_BACK_SCRIPT = """
import json, sys
from pathlib import Path
from clearml import Task

task = Task.get_task(task_id=sys.argv[1])
artifact = Path(task.artifacts["payload"].get_local_copy())
scalars = task.get_reported_scalars()
print("RESULT " + json.dumps({
    "status": task.get_status(),
    "params": task.get_parameters(),
    "last": task.get_last_scalar_metrics(),
    "scalars": {m: {v: len(s["x"]) for v, s in vs.items()} for m, vs in scalars.items()},
    "artifact_bytes": artifact.read_bytes().hex(),
    "models": [m.id for m in task.models["output"]],
}))
"""


def test_task_init_keras_tensorboard_artifact_model_close(
    clearml_emulator: Handle, tmp_path: Path
) -> None:
    work = tmp_path / "keras"
    result = script_result(run_python(clearml_emulator, KERAS_SCRIPT, work))
    task_id, model_id = result["task"], result["model"]
    payload = bytes(range(256)) * 40

    back = script_result(
        run_python(clearml_emulator, READ_BACK_SCRIPT, tmp_path / "rb", args=[task_id])
    )
    assert back["status"] == "completed"
    assert back["params"]["General/epochs"] == "2"
    assert back["params"]["General/learning_rate"] == "0.01"
    assert bytes.fromhex(back["artifact_bytes"]) == payload
    assert model_id in back["models"]
    # TensorBoard scalars were captured: one point per epoch for the training loss.
    loss_metrics = [m for m in back["scalars"] if "loss" in m]
    assert loss_metrics, back["scalars"]
    assert all(n == 2 for m in loss_metrics for n in back["scalars"][m].values())
    assert any("loss" in m for m in back["last"])

    if not isinstance(clearml_emulator, Emulator):
        return
    task = clearml_emulator.state.tasks[task_id]
    assert task["status"] == "completed"
    assert task["hyperparams"]["General"]["units"]["value"] == "4"
    assert task["last_iteration"] >= 1
    for metric in loss_metrics:
        assert md5_key(metric) in task["last_metrics"]
        for entry in task["last_metrics"][md5_key(metric)].values():
            assert entry["metric"] == metric
            assert entry["min_value"] <= entry["value"] <= entry["max_value"]
    histogram = clearml_emulator.call_api("events.scalar_metrics_iter_histogram", task=task_id)
    assert set(loss_metrics) <= set(histogram)
    (artifact,) = [a for a in task["execution"]["artifacts"] if a["key"] == "payload"]
    assert artifact["uri"].startswith(clearml_emulator.files_url)
    assert _download(artifact["uri"]) == payload
    model = clearml_emulator.state.models[model_id]
    assert model["task"] == task_id
    assert model["name"] == "tiny model"
    assert model["framework"].lower() == "keras"
    assert model["uri"].startswith(clearml_emulator.files_url)
    assert _download(model["uri"]) == (work / "tiny.keras").read_bytes()
    assert model_id in [m["model"] for m in task["models"]["output"]]
    project = clearml_emulator.state.projects[task["project"]]
    assert project["name"] == "emulator/keras"


LAUNCH_SCRIPT = """
import json, sys
from pathlib import Path
from clearml import Task
from clearml.backend_api.session.client import APIClient

project, queue_name = sys.argv[1], sys.argv[2]
Path("job.py").write_text("print('job')\\n")
template = Task.create(project_name=project, task_name="template", script="job.py",
                       add_task_init_call=True)
template.set_parameters({"Args/max_trials": 3, "Args/epochs": 10})
template.set_base_docker("python:3.11-slim")
client = APIClient()
queue = client.queues.get_all(name=f"^{queue_name}$")[0].id
ids = []
for epochs in (20, 50):
    params = json.loads(json.dumps(template.data.to_dict()["hyperparams"]))
    params["Args"]["epochs"]["value"] = str(epochs)
    res = client.tasks.clone(
        task=template.id,
        new_task_name=f"run epochs={epochs}",
        new_task_tags=["sweep"],
        new_task_hyperparams=params,
        new_task_container={"image": "worker:cpu", "arguments": "", "setup_shell_script": ""},
        execution_overrides={"queue": None},
    )
    ids.append(res.id)
enqueued = client.tasks.enqueue_many(ids=ids, queue=queue)
print("RESULT " + json.dumps({"template": template.id, "runs": ids,
                              "succeeded": [s["id"] for s in enqueued.succeeded]}))
"""

LIST_SCRIPT = """
import json, sys
from clearml import Task

tasks = Task.get_tasks(project_name=sys.argv[1], tags=["sweep"],
                       task_filter={"order_by": ["name"]})
print("RESULT " + json.dumps([
    {"id": t.id, "name": t.name, "status": t.get_status(), "last": t.get_last_scalar_metrics(),
     "epochs": t.get_parameter("Args/epochs")}
    for t in tasks
]))
"""


def test_template_clone_with_overrides_enqueue_and_list_with_metrics(
    clearml_emulator: Handle, tmp_path: Path
) -> None:
    project = unique_name(clearml_emulator, "emulator/launch")
    queue_name = unique_name(clearml_emulator, "gpu")
    clearml_emulator.create_queue(queue_name)
    if isinstance(clearml_emulator, Emulator):
        clearml_emulator.reset_log()
    launch = run_python(
        clearml_emulator, LAUNCH_SCRIPT, tmp_path / "launch", args=[project, queue_name]
    )
    result = script_result(launch)
    runs = result["runs"]
    assert result["succeeded"] == runs

    if isinstance(clearml_emulator, Emulator):
        em = clearml_emulator
        assert em.count("tasks.clone") == 2
        assert em.count("tasks.enqueue_many") == 1
        clone_body = em.calls("tasks.clone")[0].body
        assert clone_body["task"] == result["template"]
        template = em.state.tasks[result["template"]]
        assert template["status"] == "created"
        assert template["hyperparams"]["Args"]["epochs"]["value"] == "10"
        queue = em.state.queue_by_name("gpu")
        assert queue is not None
        assert [e["task"] for e in queue["entries"]] == runs  # FIFO, in enqueue order
        for run, epochs in zip(runs, ("20", "50"), strict=True):
            task = em.state.tasks[run]
            assert task["status"] == "queued"
            assert task["execution"]["queue"] == queue["id"]
            assert task["parent"] == template["id"]
            assert task["project"] == template["project"]
            assert task["tags"] == ["sweep"]
            assert task["container"]["image"] == "worker:cpu"
            assert task["hyperparams"]["Args"]["epochs"]["value"] == epochs
            assert task["hyperparams"]["Args"]["max_trials"]["value"] == "3"
            assert task["script"] == template["script"]
        # a worker reports metrics for the first run
        lines = [
            {
                "type": "training_stats_scalar",
                "task": runs[0],
                "metric": "val_accuracy",
                "variant": "trial 1",
                "value": value,
                "iter": i,
            }
            for i, value in enumerate((0.5, 0.75))
        ]
        assert em.add_events(lines)["added"] == 2

    listed = script_result(
        run_python(clearml_emulator, LIST_SCRIPT, tmp_path / "list", args=[project])
    )
    assert [t["id"] for t in listed] == runs
    assert [t["epochs"] for t in listed] == ["20", "50"]
    assert all(t["status"] == "queued" for t in listed)
    if isinstance(clearml_emulator, Emulator):
        assert listed[0]["last"]["val_accuracy"]["trial 1"]["last"] == 0.75
        assert listed[0]["last"]["val_accuracy"]["trial 1"]["max"] == 0.75
        assert listed[1]["last"] == {}


OFFLINE_SCRIPT = """
import json
from pathlib import Path
from clearml import Task

Task.set_offline(True)
task = Task.init(project_name="emulator/offline", task_name="offline run", reuse_last_task_id=False)
task.connect({"seed": 7})
for i, loss in enumerate((0.9, 0.5, 0.3)):
    task.get_logger().report_scalar("loss", "train", loss, iteration=i)
print("offline hello")
Path("notes.txt").write_text("offline artifact")
task.upload_artifact("notes", artifact_object="notes.txt", wait_on_upload=True)
task.close()
zips = sorted((Path.home() / ".clearml" / "cache" / "offline").glob("*.zip"))
print("RESULT " + json.dumps({"zip": str(zips[-1])}))
"""

IMPORT_SCRIPT = """
import json, sys
from clearml import Task

task_id = Task.import_offline_session(sys.argv[1])
task = Task.get_task(task_id=task_id)
print("RESULT " + json.dumps({"task": task_id, "last": task.get_last_scalar_metrics(),
                              "params": task.get_parameters()}))
"""


def test_import_offline_session(clearml_emulator: Handle, tmp_path: Path) -> None:
    offline = script_result(run_python(clearml_emulator, OFFLINE_SCRIPT, tmp_path / "offline"))
    if isinstance(clearml_emulator, Emulator):
        assert clearml_emulator.count() == 0  # offline mode makes no calls
    imported = script_result(
        run_python(clearml_emulator, IMPORT_SCRIPT, tmp_path / "import", args=[offline["zip"]])
    )
    assert imported["params"]["General/seed"] == "7"
    assert imported["last"]["loss"]["train"]["last"] == 0.3
    assert imported["last"]["loss"]["train"]["min"] == 0.3
    if not isinstance(clearml_emulator, Emulator):
        return
    task = clearml_emulator.state.tasks[imported["task"]]
    assert task["name"] == "offline run"
    assert clearml_emulator.state.projects[task["project"]]["name"] == "emulator/offline"
    scalars = clearml_emulator.state.task_events(task["id"], "training_stats_scalar")
    assert [e["value"] for e in sorted(scalars, key=lambda e: e["iter"])] == [0.9, 0.5, 0.3]
    logs = clearml_emulator.state.task_events(task["id"], "log")
    assert any("offline hello" in e.get("msg", "") for e in logs)
    (artifact,) = [a for a in task["execution"]["artifacts"] if a["key"] == "notes"]
    assert _download(artifact["uri"]) == b"offline artifact"


CREATE_ONE = """
import json
from clearml import Task
task = Task.create(project_name="emulator/faults", task_name="one", task_type="training")
print("RESULT " + json.dumps(task.id))
"""


def test_sdk_retries_an_injected_503(clearml_emulator: Handle, tmp_path: Path) -> None:
    clearml_emulator.fail_next("tasks.create", times=1, mode="503")
    task_id = script_result(run_python(clearml_emulator, CREATE_ONE, tmp_path))
    assert [r.fault for r in clearml_emulator.calls("tasks.create")] == ["503", None]
    assert list(clearml_emulator.state.tasks) == [task_id]


def test_dropped_response_makes_the_sdk_resend_a_write(
    clearml_emulator: Handle, tmp_path: Path
) -> None:
    """The SDK's blind retry of a GET-with-body write duplicates it: what ak-remote must avoid."""
    clearml_emulator.fail_next("tasks.create", times=1, mode="drop_response")
    task_id = script_result(run_python(clearml_emulator, CREATE_ONE, tmp_path))
    assert [r.fault for r in clearml_emulator.calls("tasks.create")] == ["drop_response", None]
    names = [t["name"] for t in clearml_emulator.state.tasks.values()]
    assert names == ["one", "one"]
    assert task_id in clearml_emulator.state.tasks
