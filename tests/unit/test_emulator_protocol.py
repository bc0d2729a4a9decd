"""The emulator's wire protocol, refusals and fault injection, checked over real HTTP."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

import jwt
import pytest

from tests.emulator.api import STATUS_TRANSITIONS, TASK_STATUSES, md5_key
from tests.emulator.errors import APIError
from tests.helpers import Wire


def test_login_returns_jwt_whose_claims_pick_the_api_version(wire: Wire) -> None:
    claims = jwt.decode(wire.token, options={"verify_signature": False})
    # clearml-server 2.0: its newest endpoint version and its own version
    assert claims["api_version"] == "2.31"
    assert claims["feature_set"] == "basic"
    assert claims["server_version"] == "2.0.0"
    assert claims["exp"] > claims["iat"]


def test_envelope_shape_versioned_and_unversioned_get_with_body(wire: Wire) -> None:
    status, envelope = wire.send("GET", "/v2.5/projects.create", {"name": "p", "method": "get"})
    assert status == 200
    meta = envelope["meta"]
    assert set(meta) >= {
        "id",
        "trx",
        "endpoint",
        "result_code",
        "result_subcode",
        "result_msg",
        "error_stack",
    }
    assert meta["endpoint"] == {
        "name": "projects.create",
        "requested_version": "2.5",
        "actual_version": "2.5",
    }
    assert (meta["result_code"], meta["result_subcode"], meta["result_msg"]) == (200, 0, "OK")
    project_id = envelope["data"]["id"]
    unversioned = wire.call("projects.get_by_id", version=None, project=project_id)
    assert unversioned["project"]["name"] == "p"
    assert "method" not in unversioned["project"]
    record = wire.emulator.calls("projects.get_by_id")[-1]
    assert (record.version, record.http_method, record.status) == (None, "GET", 200)
    assert record.body == {"project": project_id, "method": "get"}


def test_method_field_is_ignored_not_stored(wire: Wire) -> None:
    task_id = wire.call("tasks.create", name="t", type="training")["id"]
    assert "method" not in wire.emulator.state.tasks[task_id]


def test_events_add_batch_json_lines_keep_last_metrics(wire: Wire) -> None:
    task_id = wire.call("tasks.create", name="t", type="training")["id"]
    events = [
        {
            "type": "training_stats_scalar",
            "task": task_id,
            "metric": "loss",
            "variant": "train",
            "value": v,
            "iter": i,
        }
        for i, v in enumerate([0.9, 0.4, 0.6])
    ]
    events.append({"type": "log", "task": task_id, "msg": "hello", "level": "info"})
    lines = "\n".join(json.dumps(e) for e in events).encode()
    status, envelope = wire.send(
        "POST", "/events.add_batch", None, raw=lines, content_type="application/json-lines"
    )
    assert status == 200
    assert envelope["data"]["added"] == 4
    entry = wire.emulator.state.tasks[task_id]["last_metrics"][md5_key("loss")][md5_key("train")]
    assert entry["metric"] == "loss"
    assert entry["variant"] == "train"
    assert (entry["value"], entry["min_value"], entry["max_value"]) == (0.6, 0.4, 0.9)
    assert (entry["min_value_iteration"], entry["max_value_iteration"]) == (1, 0)
    assert wire.emulator.state.tasks[task_id]["last_iteration"] == 2
    hist = wire.call("events.scalar_metrics_iter_histogram", task=task_id)
    assert hist["loss"]["train"]["x"] == [0, 1, 2]
    assert hist["loss"]["train"]["y"] == [0.9, 0.4, 0.6]
    more = [
        # The same task, iteration, metric and variant: the server's event id, so the later
        # event replaces the earlier one (Elasticsearch "index" with that id).
        {**events[0], "value": 0.5, "iter": 2},
        {**events[0], "metric": "Summary", "value": 3.0, "iter": -(2**31)},  # single value
    ]
    wire.emulator.add_events(more)
    hist = wire.call("events.scalar_metrics_iter_histogram", task=task_id)
    assert hist["loss"]["train"]["y"] == [0.9, 0.4, 0.5]
    assert "Summary" not in hist
    log = wire.call("events.get_task_log", task=task_id)
    assert [e["msg"] for e in log["events"]] == ["hello"]


@pytest.mark.parametrize(
    ("endpoint", "body", "expected"),
    [
        ("tasks.no_such_thing", {}, (404, 0)),
        ("tasks.get_by_id", {}, (400, 12)),  # missing required field
        ("tasks.get_by_id", {"task": 5}, (400, 12)),  # wrong type
        ("tasks.create", {"name": "x"}, (400, 12)),  # type is required
        ("tasks.create", {"name": "x", "type": "nonsense"}, (400, 12)),  # not in the enum
        ("tasks.get_by_id", {"task": "0" * 32}, (400, 101)),
        ("tasks.enqueue", {"task": "0" * 32, "queue": "0" * 32}, (400, 101)),
        ("queues.get_by_id", {"queue": "gpu"}, (400, 701)),  # a name is not an id
        ("queues.get_default", {}, (400, 707)),
        ("projects.get_by_id", {"project": "0" * 32}, (400, 401)),
        ("tasks.create", {"name": "x", "type": "training", "project": "0" * 32}, (400, 16)),
        ("tasks.create", {"name": "x", "type": "training", "parent": "0" * 32}, (400, 16)),
        ("models.get_by_id", {"model": "0" * 32}, (400, 201)),
        ("workers.unregister", {"worker": "nobody"}, (400, 1004)),
        ("workers.get_runtime_properties", {"worker": "w"}, (404, 0)),
        ("events.add_batch", None, (400, 17)),
    ],
)
def test_refusals_use_the_server_codes(
    wire: Wire, endpoint: str, body: Any, expected: tuple[int, int]
) -> None:
    code, subcode, _ = wire.error(endpoint, body)
    assert (code, subcode) == expected


def test_authentication_refusals(wire: Wire) -> None:
    assert wire.error("tasks.get_all", {}, auth=None)[:2] == (401, 20)
    assert wire.error("tasks.get_all", {}, auth="Bearer not-a-jwt")[:2] == (401, 30)
    assert wire.error("tasks.get_all", {}, auth="Digest abc")[:2] == (401, 10)
    bad_secret = wire.basic(secret="wrong")
    status, envelope = wire.send("GET", "/auth.login", None, auth=bad_secret)
    assert (status, envelope["meta"]["result_subcode"]) == (401, 22)
    assert "token" not in envelope["data"]
    status, envelope = wire.send("GET", "/auth.login", None, auth=wire.basic(key="nobody"))
    assert (status, envelope["meta"]["result_subcode"]) == (401, 22)
    status, envelope = wire.send("GET", "/auth.login", None, auth="Basic %%%")
    assert (status, envelope["meta"]["result_subcode"]) == (401, 21)


def test_malformed_version_path_is_refused_a_newer_one_is_served(wire: Wire) -> None:
    status, envelope = wire.send("GET", "/vX.Y/tasks.get_all", {})
    assert (status, envelope["meta"]["result_subcode"]) == (400, 2)
    status, envelope = wire.send("GET", "/v9.99/tasks.get_all", {})
    assert status == 200
    assert envelope["data"] == {"tasks": []}


def test_duplicate_names_are_refused(wire: Wire) -> None:
    wire.call("queues.create", name="gpu")
    assert wire.error("queues.create", {"name": "gpu"})[:2] == (400, 801)
    wire.call("projects.create", name="a/b")
    assert wire.error("projects.create", {"name": "a/b"})[:2] == (400, 801)
    # the parent project of a nested one exists by name
    assert wire.emulator.state.project_by_name("a") is not None


def test_status_machine_matches_the_server(wire: Wire) -> None:
    """Every (from, to) pair: allowed ones change the status, the others answer 400/110."""
    tasks = wire.emulator.api.tasks
    for current in TASK_STATUSES:
        for new in TASK_STATUSES:
            task_id = wire.emulator.create_task(f"{current}->{new}")
            wire.emulator.state.tasks[task_id]["status"] = current
            refusal: APIError | None = None
            try:
                tasks._change_status(wire.emulator.state.tasks[task_id], new)
            except APIError as exc:
                refusal = exc
            assert refusal is None or refusal.subcode == 110, refusal
            allowed = refusal is None
            assert allowed == (new == current or new in STATUS_TRANSITIONS[current])
            # force skips the check, as on the server
            tasks._change_status(wire.emulator.state.tasks[task_id], new, force=True)
            assert wire.emulator.state.tasks[task_id]["status"] == new


def test_task_lifecycle_refusals_over_the_wire(wire: Wire) -> None:
    queue = wire.call("queues.create", name="q")["id"]
    task = wire.call("tasks.create", name="t", type="training")["id"]
    assert wire.error("tasks.completed", {"task": task})[:2] == (400, 110)  # created -> completed
    wire.call("tasks.enqueue", task=task, queue=queue)
    assert wire.error("tasks.edit", {"task": task, "name": "x"})[:2] == (400, 110)
    assert wire.error("tasks.delete", {"task": task})[:2] == (400, 123)
    assert wire.error("tasks.add_or_update_artifacts", {"task": task, "artifacts": []})[:2] == (
        400,
        110,
    )
    wire.call("tasks.edit", task=task, name="forced", force=True)
    assert wire.emulator.state.tasks[task]["name"] == "forced"
    wire.call("tasks.started", task=task)
    assert wire.emulator.state.queues[queue]["entries"] == [
        {"task": task, "added": wire.emulator.state.queues[queue]["entries"][0]["added"]}
    ]  # started does not dequeue; get_next_task does
    wire.call("tasks.completed", task=task)
    assert wire.error("tasks.enqueue", {"task": task, "queue": queue})[:2] == (400, 110)
    reset = wire.call("tasks.reset", task=task)
    assert reset["updated"] == 1
    state = wire.emulator.state.tasks[task]
    assert state["status"] == "created"
    assert "queue" not in state["execution"]
    assert wire.call("tasks.delete", task=task)["deleted"] == 1
    assert task not in wire.emulator.state.tasks


def test_queue_is_fifo_and_dequeue_restores_status(wire: Wire) -> None:
    queue = wire.call("queues.create", name="q")["id"]
    tasks = [wire.call("tasks.create", name=f"t{i}", type="training")["id"] for i in range(3)]
    result = wire.call("tasks.enqueue_many", ids=[*tasks, "0" * 32], queue=queue)
    assert [s["id"] for s in result["succeeded"]] == tasks
    assert result["failed"][0]["id"] == "0" * 32
    assert result["failed"][0]["error"]["codes"] == [400, 101]
    assert wire.call("tasks.dequeue", task=tasks[1])["updated"] == 1
    assert wire.emulator.state.tasks[tasks[1]]["status"] == "created"
    first = wire.call("queues.get_next_task", queue=queue)["entry"]["task"]
    second = wire.call("queues.get_next_task", queue=queue)["entry"]["task"]
    assert [first, second] == [tasks[0], tasks[2]]
    assert wire.call("queues.get_next_task", queue=queue) == {}
    assert wire.call("tasks.dequeue", task=tasks[1])["updated"] == 0  # not queued any more


def test_clone_copies_what_the_server_copies_and_applies_overrides(wire: Wire) -> None:
    em = wire.emulator
    project = em.create_project("launch")
    other = em.create_project("elsewhere")
    template = em.create_task(
        "template",
        project="launch",
        tags=["template"],
        system_tags=["development"],
        hyperparams={"Args": {"a": {"section": "Args", "name": "a", "value": "1"}}},
        configuration={"cfg": {"name": "cfg", "value": "x: 1", "type": "yaml"}},
        script={"entry_point": "job.py", "diff": "print(1)"},
        container={"image": "old:1"},
        execution={
            "artifacts": [
                {"key": "in", "type": "custom", "mode": "input"},
                {"key": "out", "type": "custom", "mode": "output"},
            ]
        },
    )
    em.state.tasks[template]["last_metrics"] = {"m": {}}
    new_params = {"Args": {"b": {"section": "Args", "name": "b", "value": "2"}}}
    clone = wire.call(
        "tasks.clone",
        task=template,
        new_task_name="run-1",
        new_task_tags=["sweep"],
        new_task_hyperparams=new_params,
        new_task_container={"image": "new:2"},
        new_task_project=other,
        execution_overrides={"docker_cmd": "ignored:0"},
    )["id"]
    task = em.state.tasks[clone]
    assert task["status"] == "created"
    assert task["name"] == "run-1"
    assert task["tags"] == ["sweep"]
    assert task["system_tags"] == []
    assert task["parent"] == template
    assert task["project"] == other
    assert task["hyperparams"] == new_params  # replaced whole, not merged
    assert task["configuration"] == em.state.tasks[template]["configuration"]
    assert task["container"] == {"image": "new:2"}
    assert task["script"]["diff"] == "print(1)"
    assert [a["key"] for a in task["execution"]["artifacts"]] == ["in"]
    assert task["last_metrics"] == {}
    assert em.state.tasks[template]["hyperparams"]["Args"]["a"]["value"] == "1"
    assert project != other
    code, subcode, _ = wire.error("tasks.clone", {"task": template, "new_task_project": "0" * 32})
    assert (code, subcode) == (400, 401)


def test_stop_of_a_worker_run_task_asks_the_worker(wire: Wire) -> None:
    queue = wire.call("queues.create", name="q")["id"]
    task = wire.call("tasks.create", name="t", type="training")["id"]
    wire.call("tasks.enqueue", task=task, queue=queue)
    wire.call("queues.get_next_task", queue=queue)
    wire.call("tasks.started", task=task)
    wire.call("workers.status_report", worker="w1", timestamp=0, task=task)
    result = wire.call("tasks.stop", task=task)
    assert result["fields"]["status_message"] == "stopping"
    assert wire.emulator.state.tasks[task]["status"] == "in_progress"
    wire.call("tasks.stopped", task=task)
    assert wire.emulator.state.tasks[task]["status"] == "stopped"
    workers = wire.call("workers.get_all")["workers"]
    assert [w["id"] for w in workers] == ["w1"]


def test_archive_many_and_delete_of_archived(wire: Wire) -> None:
    queue = wire.call("queues.create", name="q")["id"]
    task = wire.call("tasks.create", name="t", type="training")["id"]
    wire.call("tasks.enqueue", task=task, queue=queue)
    result = wire.call("tasks.archive_many", ids=[task])
    assert result["succeeded"] == [{"id": task, "archived": True}]
    state = wire.emulator.state.tasks[task]
    assert "archived" in state["system_tags"]
    assert state["status"] == "created"
    assert wire.emulator.state.queues[queue]["entries"] == []
    listed = wire.call("tasks.get_all", system_tags=["-archived"], only_fields=["id"])["tasks"]
    assert listed == []
    assert wire.call("tasks.delete", task=task)["deleted"] == 1


def test_fileserver_multipart_upload_and_plain_download(wire: Wire) -> None:
    import requests

    content = bytes(range(256)) * 3
    target = "/proj/task.abc/artifacts/blob/data file.bin"
    response = requests.post(
        wire.emulator.files_url + "/", files={target: (target, content)}, timeout=10
    )
    assert response.status_code == 200
    assert wire.emulator.state.files[target] == content
    got = requests.get(wire.emulator.file_url(target), timeout=10)
    assert got.status_code == 200
    assert got.content == content
    assert requests.get(wire.emulator.files_url + "/missing", timeout=10).status_code == 404


def test_fault_500_is_not_applied_then_next_call_succeeds(wire: Wire) -> None:
    wire.emulator.fail_next("tasks.create", times=1, mode="503")
    status, envelope = wire.send("POST", "/tasks.create", {"name": "t", "type": "training"})
    assert status == 503
    assert envelope["meta"]["result_code"] == 503
    assert wire.emulator.state.tasks == {}
    assert wire.call("tasks.create", name="t", type="training")["id"]
    assert [r.fault for r in wire.emulator.calls("tasks.create")] == ["503", None]


def test_fault_timeout_holds_then_closes_without_applying(wire: Wire) -> None:
    wire.emulator.fail_next("tasks.create", mode="timeout", hold_s=1.0)
    with pytest.raises((TimeoutError, socket.timeout)):
        wire.send("POST", "/tasks.create", {"name": "t", "type": "training"}, timeout=0.3)
    wire.emulator.fail_next("tasks.create", mode="timeout", hold_s=0.2)
    with pytest.raises(http.client.RemoteDisconnected):  # nobody waiting: closed unanswered
        wire.send("POST", "/tasks.create", {"name": "t", "type": "training"}, timeout=5)
    assert wire.emulator.state.tasks == {}


def test_fault_drop_response_applies_the_call(wire: Wire) -> None:
    wire.emulator.fail_next("tasks.create", mode="drop_response")
    with pytest.raises(http.client.RemoteDisconnected):
        wire.send("POST", "/tasks.create", {"name": "dropped", "type": "training"})
    assert [t["name"] for t in wire.emulator.state.tasks.values()] == ["dropped"]
    record = wire.emulator.calls("tasks.create")[-1]
    assert (record.fault, record.status) == ("drop_response", None)


def test_count_and_reset_log(wire: Wire) -> None:
    wire.emulator.reset_log()
    wire.call("tasks.get_all")
    wire.call("tasks.get_all")
    assert wire.emulator.count("tasks.get_all") == 2
    assert wire.emulator.count() == 2
    wire.emulator.reset_log()
    assert wire.emulator.count() == 0


def test_last_metrics_value_follows_the_highest_iteration(wire: Wire) -> None:
    em = wire.emulator
    task = em.create_task("t")
    scalar = {"type": "training_stats_scalar", "task": task, "metric": "m", "variant": "v"}
    em.add_events(
        [
            {**scalar, "value": 2.0, "iter": 5, "timestamp": 1000},
            {**scalar, "value": 9.0, "iter": 1, "timestamp": 2000},  # late, but older iteration
            {**scalar, "value": 4.0, "iter": 5, "timestamp": 3000},  # same iteration, newer
        ]
    )
    entry = em.state.tasks[task]["last_metrics"][md5_key("m")][md5_key("v")]
    assert entry["value"] == 4.0
    assert (entry["first_value"], entry["first_value_iteration"]) == (9.0, 1)
    assert (entry["max_value"], entry["max_value_iteration"]) == (9.0, 1)
    assert entry["count"] == 3
    assert entry["mean_value"] == pytest.approx(5.0)
    wire.call("tasks.reset", task=task, force=True)
    assert em.state.tasks[task]["last_metrics"] == {}
    em.add_events([{**scalar, "value": 1.0, "iter": 0, "timestamp": 1}])
    entry = em.state.tasks[task]["last_metrics"][md5_key("m")][md5_key("v")]
    assert (entry["value"], entry["count"]) == (1.0, 1)


def test_get_all_filters_orders_pages_and_projects_fields(wire: Wire) -> None:
    em = wire.emulator
    ids = [
        em.create_task(f"run {i}", project="sweep", tags=["a" if i % 2 else "b"]) for i in range(5)
    ]
    em.create_task("elsewhere", project="other")
    project = em.state.project_by_name("sweep")
    assert project is not None
    body = {"project": [project["id"]], "order_by": ["-name"], "only_fields": ["name", "status"]}
    page0 = wire.call("tasks.get_all", **body, page=0, page_size=2)["tasks"]
    page2 = wire.call("tasks.get_all", **body, page=2, page_size=2)["tasks"]
    assert [t["name"] for t in page0] == ["run 4", "run 3"]
    assert [t["id"] for t in page2] == [ids[0]]
    assert set(page0[0]) == {"id", "name", "status"}
    tagged = wire.call("tasks.get_all", tags=["a"], only_fields=["name"])["tasks"]
    assert sorted(t["name"] for t in tagged) == ["run 1", "run 3"]
    assert len(wire.call("tasks.get_all", name="^run [0-2]$")["tasks"]) == 3
    assert wire.error("tasks.get_all", {"name": "("})[:2] == (400, 21)
    projects = wire.call("projects.get_all", name="^sweep$")["projects"]
    assert [p["id"] for p in projects] == [project["id"]]


def test_workers_expire_after_their_timeout(wire: Wire) -> None:
    wire.call("workers.register", worker="w1", timeout=1)
    wire.call("workers.register", worker="w2")
    assert {w["id"] for w in wire.call("workers.get_all")["workers"]} == {"w1", "w2"}
    wire.emulator.state.workers["w1"]["last_report_ts"] -= 5
    assert [w["id"] for w in wire.call("workers.get_all")["workers"]] == ["w2"]
    wire.emulator.state.workers["w2"]["last_report_ts"] -= 100
    assert wire.call("workers.get_all", last_seen=50)["workers"] == []
    assert wire.error("workers.status_report", {"worker": "w2", "timestamp": 0, "task": "x"})[
        :2
    ] == (400, 101)


def test_enqueue_twice_into_the_same_queue_is_refused(wire: Wire) -> None:
    """A blind resend of tasks.enqueue fails on the server: 400/706, the queue keeps one entry."""
    queue = wire.call("queues.create", name="q")["id"]
    other = wire.call("queues.create", name="other")["id"]
    task = wire.call("tasks.create", name="t", type="training")["id"]
    wire.call("tasks.enqueue", task=task, queue=queue)
    assert wire.error("tasks.enqueue", {"task": task, "queue": queue})[:2] == (400, 706)
    assert [e["task"] for e in wire.emulator.state.queues[queue]["entries"]] == [task]
    result = wire.call("tasks.enqueue_many", ids=[task], queue=queue)
    assert result["succeeded"] == []
    assert result["failed"][0]["error"]["codes"] == [400, 706]
    wire.call("tasks.enqueue", task=task, queue=other)  # moving to another queue is fine
    assert wire.emulator.state.queues[queue]["entries"] == []
    assert [e["task"] for e in wire.emulator.state.queues[other]["entries"]] == [task]


def test_bad_events_are_counted_and_skipped_all_bad_is_refused(wire: Wire) -> None:
    em = wire.emulator
    task = em.create_task("t")
    good = {"type": "log", "task": task, "msg": "ok"}
    result = em.add_events(
        [
            good,
            {"type": "nonsense", "task": task},
            {"type": "log", "task": "0" * 32, "msg": "lost"},
            {"task": task},
        ]
    )
    assert result["added"] == 1
    assert result["errors"] == 3
    assert result["errors_info"][f"Invalid task id {'0' * 32}"] == 1
    lines = json.dumps({"type": "log", "task": "0" * 32, "msg": "x"}).encode()
    status, envelope = wire.send("POST", "/events.add_batch", None, raw=lines)
    assert (status, envelope["meta"]["result_subcode"]) == (400, 131)
    em.state.tasks[task]["status"] = "published"  # published tasks are locked
    status, envelope = wire.send("POST", "/events.add_batch", None, raw=json.dumps(good).encode())
    assert (status, envelope["meta"]["result_subcode"]) == (400, 131)


def test_fileserver_faults(wire: Wire) -> None:
    import requests

    em = wire.emulator
    em.state.files["/a/b.bin"] = b"data"
    em.fail_next("fileserver.download", mode="503")
    assert requests.get(em.file_url("/a/b.bin"), timeout=10).status_code == 503
    assert requests.get(em.file_url("/a/b.bin"), timeout=10).content == b"data"
    em.fail_next("fileserver.upload", mode="drop_response")
    with pytest.raises(requests.ConnectionError):
        requests.post(em.files_url + "/", files={"/c.bin": ("/c.bin", b"new")}, timeout=10)
    assert em.state.files["/c.bin"] == b"new"  # applied, answer dropped
    em.fail_next("fileserver.upload", mode="timeout", hold_s=1.0)
    with pytest.raises(requests.Timeout):
        requests.post(em.files_url + "/", files={"/d.bin": ("/d.bin", b"x")}, timeout=0.3)
    assert "/d.bin" not in em.state.files
    assert [r.fault for r in em.calls("fileserver.upload")] == ["drop_response", "timeout"]
