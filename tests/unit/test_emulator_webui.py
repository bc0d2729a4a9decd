"""What the emulator answers the ClearML Web UI, checked over real HTTP against clearml-server
2.0's behaviour (its apiserver sources) and request schemas: login and the token cookie, the
web port (configuration, proxies, the app's deep links), the query language of the list pages,
the ``*_ex`` reads through references, scroll paging, tags, users, the events the charts use,
and the state kept across a restart. The SDK's own version and two emulators side by side, in
processes: tests/integration/test_emulator_webui.py.
"""

from __future__ import annotations

import http.client
import json
import subprocess
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.emulator.schemas import schema_for, server_schemas
from tests.emulator.server import Emulator
from tests.emulator.services.events import SINGLE_SCALAR_ITERATION
from tests.emulator.web import find_web_dist
from tests.helpers import Wire, http_get

# ---------------------------------------------------------------------------- helpers


def ui(wire: Wire, endpoint: str, body: Any = None, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """A call as the Web UI makes it: POST /v999.0/<endpoint> with a JSON body."""
    return wire.send("POST", f"/v999.0/{endpoint}", {} if body is None else body, **kwargs)


def ui_ok(wire: Wire, endpoint: str, **body: Any) -> dict[str, Any]:
    status, envelope = ui(wire, endpoint, body)
    assert status == 200, envelope["meta"]
    return dict(envelope["data"])


def seed(wire: Wire) -> dict[str, str]:
    """A project with a subproject, tasks with tags/statuses/parents, a model."""
    em = wire.emulator
    ids: dict[str, str] = {}
    ids["project"] = em.create_project("web")
    ids["sub"] = em.create_project("web/sub")
    ids["hidden_project"] = em.create_project("web/.hidden")
    em.call("projects.update", project=ids["hidden_project"], system_tags=["hidden"])
    ids["a"] = em.create_task("task a", project="web", tags=["blue", "red"])
    ids["b"] = em.create_task("task b", project="web", tags=["blue"], system_tags=["archived"])
    ids["c"] = em.create_task("task c", project="web/sub", parent=ids["a"])
    ids["d"] = em.create_task("task d", project="web", type="testing", system_tags=["hidden"])
    ids["model"] = em.call(
        "models.create",
        name="m",
        uri="http://x/m.zip",
        task=ids["a"],
        project=ids["project"],
        framework="TensorFlow",
        labels={"cat": 0, "dog": 1},
        tags=["prod"],
    )["id"]
    em.call(
        "tasks.add_or_update_model", task=ids["a"], name="out", model=ids["model"], type="output"
    )
    return ids


# ---------------------------------------------------------------------------- login, cookie


def test_login_modes_and_the_token_cookie(wire: Wire) -> None:
    status, envelope = ui(wire, "login.supported_modes", {}, auth=None)
    assert status == 200
    modes = envelope["data"]
    assert modes["basic"]["enabled"] is True  # a user name / password form
    assert modes["authenticated"] is False
    assert modes["sso"] == {}
    assert modes["sso_providers"] == []
    # auth.login with the keys as user name and password sets the token cookie.
    conn = http.client.HTTPConnection(wire.host, wire.port, timeout=10)
    conn.request("POST", "/v999.0/auth.login", body=b"", headers={"Authorization": wire.basic()})
    response = conn.getresponse()
    body = json.loads(response.read())
    cookie = response.getheader("Set-Cookie") or ""
    conn.close()
    token = body["data"]["token"]
    assert cookie.startswith(f"clearml_token_basic={token};")
    for attribute in ("HttpOnly", "Path=/", "SameSite=Lax", "Max-Age=99999999999"):
        assert attribute in cookie
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["api_version"], claims["server_version"]) == ("2.31", "2.0.0")
    # A call with only the cookie is authorized; without anything it is not.
    cookie_header = {"Cookie": f"other=1; clearml_token_basic={token}"}
    status, envelope = ui(wire, "users.get_current_user", {}, auth=None)
    assert (status, envelope["meta"]["result_subcode"]) == (401, 20)
    conn = http.client.HTTPConnection(wire.host, wire.port, timeout=10)
    conn.request("POST", "/v999.0/users.get_current_user", body=b"{}", headers=cookie_header)
    current = json.loads(conn.getresponse().read())
    conn.close()
    assert current["data"]["user"]["name"] == "Emulator User"
    assert current["data"]["user"]["company"]["name"] == "emulator"
    assert "preferences" in current["data"]["user"]
    # supported_modes says whether the credentials it got were good; logout clears the cookie.
    conn = http.client.HTTPConnection(wire.host, wire.port, timeout=10)
    conn.request("POST", "/v999.0/login.supported_modes", body=b"{}", headers=cookie_header)
    assert json.loads(conn.getresponse().read())["data"]["authenticated"] is True
    conn.close()
    conn = http.client.HTTPConnection(wire.host, wire.port, timeout=10)
    conn.request("POST", "/v999.0/login.logout", body=b"{}", headers=cookie_header)
    response = conn.getresponse()
    assert response.status == 200
    assert (response.getheader("Set-Cookie") or "").startswith("clearml_token_basic=;")
    conn.close()


def test_server_info_needs_no_credentials_and_reports_2_x(wire: Wire) -> None:
    status, envelope = ui(wire, "server.info", {}, auth=None)
    assert status == 200
    info = envelope["data"]
    assert (info["version"], info["api_version"]) == ("2.0.0", "2.31")
    assert info["uid"]
    assert ui_ok(wire, "server.report_stats_option") == {"supported": False}
    assert ui_ok(wire, "debug.ping")["msg"]
    # An unversioned call is served by the newest endpoint version.
    status, envelope = wire.send("POST", "/server.info", {}, auth=None)
    assert envelope["meta"]["endpoint"]["requested_version"] == "2.31"


# ---------------------------------------------------------------------------- the web port


def test_web_port_serves_the_app_configuration_and_proxies(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text("<html><body><sm-root></sm-root></body></html>")
    (dist / "main.js").write_text("console.log(1)")
    found, looked = find_web_dist(dist)
    assert (found, looked) == (dist.resolve(), [dist])
    with Emulator(config_dir=tmp_path / "cfg", web_dist=found) as emulator:
        status, headers, body = http_get(f"{emulator.web_url}/configuration.json")
        assert status == 200
        assert json.loads(body) == {"apiBaseUrl": "/api", "fileBaseUrl": emulator.files_url}
        status, headers, body = http_get(f"{emulator.web_url}/main.js")
        assert (status, body) == (200, b"console.log(1)")
        assert headers["content-type"].startswith("text/javascript")
        # A deep link of the app answers index.html (nginx try_files), never a 404.
        status, _, body = http_get(f"{emulator.web_url}/projects/x/compare-tasks;ids=a,b/details")
        assert status == 200
        assert b"<sm-root>" in body
        status, _, body = http_get(f"{emulator.web_url}/../../etc/passwd")
        assert b"<sm-root>" in body
        # /api/<rest> is the apiserver's /<rest>, cookie and all.
        status, headers, body = http_get(
            f"{emulator.web_url}/api/v999.0/auth.login",
            {"Authorization": Wire(emulator).basic()},
            method="POST",
        )
        assert status == 200
        assert headers["set-cookie"].startswith("clearml_token_basic=")
        assert emulator.calls("auth.login")[-1].path == "/v999.0/auth.login"
        # /files/<rest> is the fileserver's /<rest>.
        emulator.state.files["/p/t/a.txt"] = b"payload"
        status, _, body = http_get(f"{emulator.web_url}/files/p/t/a.txt")
        assert (status, body) == (200, b"payload")


def test_web_port_without_an_app_says_where_it_looked(tmp_path: Path) -> None:
    looked = [tmp_path / "nowhere"]
    found, _ = find_web_dist(looked[0])
    assert found is None
    with Emulator(config_dir=tmp_path / "cfg", web_looked=looked) as emulator:
        status, _, body = http_get(f"{emulator.web_url}/")
        assert status == 200
        assert str(looked[0]).encode() in body
        assert b"tests/emulator/README.md" in body


def test_web_dist_lookup_order(tmp_path: Path) -> None:
    def app(path: Path) -> Path:
        path.mkdir(parents=True)
        (path / "index.html").write_text("<sm-root></sm-root>")
        return path

    repo = tmp_path / "ci" / "clone"  # a clean clone of the main checkout, elsewhere
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    origin = tmp_path / "work" / "main"
    origin.mkdir(parents=True)
    subprocess.run(["git", "-C", str(repo), "remote", "add", "origin", str(origin)], check=True)
    vendored = Path("shared/vendor/clearml-web-2.0/browser")
    env_app = app(tmp_path / "from-env")
    # Nothing built anywhere: every place is named, <repo>/.. then <origin>/..
    found, looked = find_web_dist(env={}, repo=repo)
    assert found is None
    assert looked == [tmp_path / "ci" / vendored, tmp_path / "work" / vendored]
    # The origin's sibling (a CI clone of the main checkout)...
    app(origin.parent / vendored)
    assert find_web_dist(env={}, repo=repo)[0] == (origin.parent / vendored).resolve()
    # ...then the variable first.
    found, looked = find_web_dist(env={"CLEARML_WEB_DIST": str(env_app)}, repo=repo)
    assert found == env_app.resolve()
    assert looked[0] == env_app


# ---------------------------------------------------------------------------- request schemas


def test_every_endpoint_has_a_request_schema(wire: Wire) -> None:
    missing = [e for e in wire.emulator.api.handlers if schema_for(e) is None]
    assert not missing
    # The ones the SDK does not ship follow the server's .conf.
    schemas = server_schemas()
    assert schemas["projects.get_user_names"]["properties"]["entity"]["enum"] == ["task", "model"]
    assert schemas["events.get_multi_task_metrics"]["required"] == ["tasks"]
    # A list read checks only its data model's fields, as the server does: the Web UI's
    # PARENT TASK filter sends a list where the get_all schema says a string.
    get_all_ex, get_all = schema_for("tasks.get_all_ex"), schema_for("tasks.get_all")
    assert get_all_ex is not None
    assert get_all is not None
    assert set(get_all_ex["properties"]) == {"allow_public", "search_hidden"}
    assert get_all["properties"] == {}


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("tasks.get_all_ex", {"size": 0, "scroll_id": ""}),
        ("tasks.get_all_ex", {"search_hidden": "yes"}),
        ("models.get_all_ex", {"include_stats": "yes"}),
        ("projects.get_all_ex", {"stats_for_state": "everything"}),
        ("projects.get_all_ex", {"children_type": "models"}),
        ("projects.get_user_names", {"entity": "project"}),
        ("events.get_multi_task_metrics", {}),
        ("events.get_multi_task_metrics", {"tasks": ["x"], "event_type": "picture"}),
        ("users.set_preferences", {}),
        ("organization.get_tags", {"filter": {"tags": "blue"}}),
        ("server.report_stats_option", {"enabled": "yes"}),
        ("events.get_task_single_value_metrics", {"tasks": "x"}),
        ("events.multi_task_scalar_metrics_iter_histogram", {"tasks": ["x"], "samples": "all"}),
    ],
)
def test_requests_are_validated_as_the_server_declares(
    wire: Wire, endpoint: str, body: dict[str, Any]
) -> None:
    status, envelope = ui(wire, endpoint, body)
    assert (status, envelope["meta"]["result_subcode"]) == (400, 12), envelope["meta"]


def test_unknown_fields_pass_as_the_server_data_models_let_them(wire: Wire) -> None:
    # users.get_current_user's schema is closed, but the server checks it with a data model;
    # the Web UI sends a field the schema does not declare.
    assert ui_ok(wire, "users.get_current_user", get_supported_features=True)["user"]
    # Declared fields are still checked: types and required fields.
    status, envelope = ui(wire, "users.set_preferences", {"preferences": "dark"})
    assert (status, envelope["meta"]["result_subcode"]) == (400, 12)
    status, envelope = ui(wire, "workers.get_activity_report", {"from_date": 1, "to_date": 2})
    assert (status, envelope["meta"]["result_subcode"]) == (400, 12)


# ---------------------------------------------------------------------------- queries


def names(tasks: list[dict[str, Any]]) -> list[str]:
    return sorted(str(t["name"]) for t in tasks)


def test_list_filters_as_the_server_parses_them(wire: Wire) -> None:
    ids = seed(wire)

    def query(**body: Any) -> list[str]:
        return names(
            ui_ok(wire, "tasks.get_all_ex", project=[ids["project"], ids["sub"]], **body)["tasks"]
        )

    assert query() == ["task a", "task b", "task c"]  # `hidden` tasks only when asked
    assert query(search_hidden=True) == ["task a", "task b", "task c", "task d"]
    assert query(system_tags=["__$not", "archived"]) == ["task a", "task c"]
    assert query(system_tags=["-archived"]) == ["task a", "task c"]  # legacy exclusion
    assert query(tags=["blue"]) == ["task a", "task b"]
    assert query(tags=["__$all", "blue", "red"]) == ["task a"]
    assert query(tags=["__$any", "red", "__$not", "blue"]) == ["task a", "task c"]
    assert query(tags=[None]) == ["task c"]  # null: an empty field
    assert query(tags=["__$not", "blue", None]) == ["task c"]
    assert query(type=["__$not", "annotation", "__$not", "dataset_import"]) == [
        "task a",
        "task b",
        "task c",
    ]
    assert query(status=["created"], search_hidden=True, type=["testing"]) == ["task d"]
    assert query(parent=[ids["a"]]) == ["task c"]
    assert query(filters={"tags": {"all": {"include": ["blue", "red"]}}}) == ["task a"]
    assert query(filters={"tags": {"any": {"exclude": ["red"]}}}) == ["task b", "task c"]
    assert query(_any_={"pattern": "TASK [ab]", "fields": ["name", "comment"]}) == [
        "task a",
        "task b",
    ]
    assert query(name="^task [bc]$") == ["task b", "task c"]
    assert query(scroll_id=None, tags=None, size=10) == ["task a", "task b", "task c"]
    status, envelope = ui(wire, "tasks.get_by_id_ex", {})
    assert (status, envelope["meta"]["result_subcode"]) == (400, 11)  # id: a required field
    status, envelope = ui(wire, "tasks.get_all_ex", {"tags": ["__$not"]})
    assert (status, envelope["meta"]["result_subcode"]) == (400, 16)
    status, envelope = ui(wire, "tasks.get_all_ex", {"tags": ["__$xor", "a"]})
    assert (status, envelope["meta"]["result_subcode"]) == (400, 16)
    # include_subprojects reaches the subproject's tasks.
    assert names(
        ui_ok(wire, "tasks.get_all_ex", project=[ids["project"]], include_subprojects=True)["tasks"]
    ) == ["task a", "task b", "task c"]


def test_ordering_puts_empty_values_last(wire: Wire) -> None:
    em = wire.emulator
    for name, comment in (("x", "b"), ("y", ""), ("z", "a")):
        em.create_task(name, project="o", comment=comment)
    project = em.state.project_by_name("o")
    assert project is not None
    for order in (["comment"], ["-comment"]):
        tasks = ui_ok(
            wire, "tasks.get_all", project=[project["id"]], order_by=order, only_fields=["name"]
        )["tasks"]
        assert [t["name"] for t in tasks][-1] == "y", order
    tasks = ui_ok(wire, "tasks.get_all", project=[project["id"]], order_by=["-name"])["tasks"]
    assert [t["name"] for t in tasks] == ["z", "y", "x"]


def test_scroll_paging_as_the_models_list_reads(wire: Wire) -> None:
    project = wire.emulator.create_project("many")
    created = [
        wire.emulator.call("models.create", name=f"m{n:02d}", uri="u", project=project)["id"]
        for n in range(7)
    ]
    seen: list[str] = []
    scroll_id = None
    while True:
        data = ui_ok(
            wire,
            "models.get_all_ex",
            project=[project],
            order_by=["name"],
            size=3,
            scroll_id=scroll_id,
            only_fields=["name"],
        )
        scroll_id = data["scroll_id"]
        if not data["models"]:
            break
        seen += [m["id"] for m in data["models"]]
    assert seen == created  # every model once, in order
    # refresh_scroll: everything up to the scroll's position again
    again = ui_ok(
        wire,
        "models.get_all_ex",
        project=[project],
        order_by=["name"],
        size=3,
        scroll_id=scroll_id,
        refresh_scroll=True,
    )["models"]
    assert [m["id"] for m in again] == created
    # page/page_size: 500 at most, without them too
    assert len(ui_ok(wire, "models.get_all", page=0, page_size=2)["models"]) == 2
    status, envelope = ui(wire, "models.get_all_ex", {"scroll_id": "", "only_fields": ["id"]})
    assert (status, envelope["meta"]["result_subcode"]) == (400, 12)  # size is required


def test_ex_reads_join_through_references(wire: Wire) -> None:
    ids = seed(wire)
    (task,) = ui_ok(
        wire,
        "tasks.get_all_ex",
        id=[ids["c"]],
        only_fields=[
            "name",
            "project.name",
            "parent.name",
            "parent.project.name",
            "user.name",
            "models.output.model.name",
        ],
    )["tasks"]
    assert task["project"] == {"id": ids["sub"], "name": "web/sub"}
    assert task["parent"] == {
        "id": ids["a"],
        "name": "task a",
        "project": {"id": ids["project"], "name": "web"},
    }
    assert task["user"] == {"id": "emulator-user", "name": "Emulator User"}
    (task,) = ui_ok(
        wire,
        "tasks.get_by_id_ex",
        id=[ids["a"]],
        only_fields=["models.output.model.name", "models.output.name"],
    )["tasks"]
    assert task["models"]["output"] == [{"name": "out", "model": {"id": ids["model"], "name": "m"}}]
    # Without a projection through them, references come back as {"id": ...}.
    (task,) = ui_ok(wire, "tasks.get_by_id_ex", id=[ids["c"]])["tasks"]
    assert task["project"] == {"id": ids["sub"]}
    assert task["parent"] == {"id": ids["a"]}
    # get_all (not _ex) leaves them as ids.
    (plain,) = ui_ok(wire, "tasks.get_all", id=[ids["c"]], only_fields=["project"])["tasks"]
    assert plain == {"id": ids["c"], "project": ids["sub"]}
    (model,) = ui_ok(
        wire,
        "models.get_all_ex",
        id=[ids["model"]],
        only_fields=["name", "task.name", "framework", "labels"],
        include_stats=True,
    )["models"]
    assert model["task"] == {"id": ids["a"], "name": "task a"}
    assert model["stats"] == {"labels_count": 2}
    (model,) = ui_ok(wire, "models.get_by_id_ex", id=[ids["model"]])["models"]
    assert model["project"] == {"id": ids["project"]}
    assert ui_ok(wire, "models.get_frameworks", projects=[ids["project"]]) == {
        "frameworks": ["TensorFlow"]
    }


def test_projects_get_all_ex_with_statistics(wire: Wire) -> None:
    ids = seed(wire)
    wire.emulator.call("tasks.started", task=ids["a"])
    wire.emulator.call("tasks.completed", task=ids["a"])
    data = ui_ok(
        wire,
        "projects.get_all_ex",
        id=[ids["project"]],
        include_stats=True,
        stats_for_state="active",
        check_own_contents=True,
        include_stats_filter={"system_tags": ["-pipeline"]},
        only_fields=["name", "basename"],
    )
    (project,) = data["projects"]
    active = project["stats"]["active"]
    # tasks a (completed), c (in the subproject) and d (hidden, counted: the stats search all)
    assert active["status_count"]["completed"] == 1
    assert active["total_tasks"] == 3
    assert active["completed_tasks_24h"] == 1
    assert "archived" not in project["stats"]
    assert [p["name"] for p in project["sub_projects"]] == ["web/sub"]  # the hidden one not
    assert (project["own_tasks"], project["own_models"]) == (2, 1)  # a and d; b is archived
    # shallow_search: top-level projects only; parent: any depth below it
    top = ui_ok(wire, "projects.get_all_ex", shallow_search=True, only_fields=["name"])["projects"]
    assert [p["name"] for p in top] == ["web"]
    below = ui_ok(wire, "projects.get_all", parent=[ids["project"]])["projects"]
    assert [p["name"] for p in below] == ["web/sub"]
    hidden = ui_ok(
        wire,
        "projects.get_all_ex",
        parent=[ids["project"]],
        search_hidden=True,
        only_fields=["name"],
    )["projects"]
    assert {p["name"]: p.get("hidden", False) for p in hidden} == {
        "web/sub": False,
        "web/.hidden": True,
    }


def test_task_parents_users_tags_and_reports(wire: Wire) -> None:
    ids = seed(wire)
    parents = ui_ok(
        wire, "projects.get_task_parents", projects=[ids["project"]], include_subprojects=True
    )["parents"]
    assert parents == [
        {"id": ids["a"], "name": "task a", "project": {"id": ids["project"], "name": "web"}}
    ]
    assert ui_ok(wire, "projects.get_user_names", projects=[ids["project"]]) == {
        "users": [{"id": "emulator-user", "name": "Emulator User"}]
    }
    assert ui_ok(
        wire,
        "projects.get_task_tags",
        projects=[ids["project"]],
        include_system=True,
        filter={"system_tags": ["__$not", "archived"]},
    ) == {
        "tags": ["blue", "red"],
        "system_tags": ["hidden"],
    }
    assert ui_ok(wire, "projects.get_model_tags") == {"tags": ["prod"], "system_tags": []}
    assert ui_ok(wire, "organization.get_tags") == {
        "tags": ["blue", "prod", "red"],
        "system_tags": [],
    }
    assert ui_ok(wire, "organization.get_user_companies")["companies"][0]["allocated"] == 1
    assert ui_ok(wire, "reports.get_all_ex", project=[ids["project"]]) == {"tasks": []}
    report_project = wire.emulator.create_project("web/.reports")
    wire.emulator.create_task(
        "my report", project="web/.reports", type="report", system_tags=["reports"]
    )
    reports = ui_ok(wire, "reports.get_all_ex", project=[ids["project"]], only_fields=["name"])
    assert [t["name"] for t in reports["tasks"]] == ["my report"]
    assert report_project


def test_what_the_projects_hold(wire: Wire) -> None:
    ids = seed(wire)
    wire.emulator.call("projects.update", project=ids["sub"], tags=["team"], system_tags=["x"])
    wire.emulator.call(
        "tasks.edit_hyper_params",
        task=ids["c"],
        hyperparams=[{"section": "General", "name": "epochs", "value": "2"}],
    )
    wire.emulator.add_events([scalar(ids["c"], "loss", "validation", 0.3, 1)])
    params = ui_ok(wire, "projects.get_hyper_parameters", project=ids["project"])
    assert params["parameters"] == [{"section": "General", "name": "epochs"}]
    assert (params["total"], params["remaining"]) == (1, 0)
    (metric,) = ui_ok(wire, "projects.get_unique_metric_variants", project=ids["project"])[
        "metrics"
    ]
    assert (metric["metric"], metric["variant"]) == ("loss", "validation")
    assert ui_ok(wire, "projects.get_project_tags", include_system=True) == {
        "tags": ["team"],
        "system_tags": ["hidden", "x"],
    }
    users = ui_ok(wire, "users.get_all", only_fields=["name"])["users"]
    assert users == [{"id": "emulator-user", "name": "Emulator User"}]


def test_user_preferences(wire: Wire) -> None:
    assert ui_ok(wire, "users.get_preferences") == {"preferences": {}}
    assert ui_ok(wire, "users.set_preferences", preferences={"views": {"a": 1}})["updated"] == 1
    assert ui_ok(wire, "users.set_preferences", preferences={"views": {"a": 1}})["updated"] == 0
    ui_ok(wire, "users.set_preferences", preferences={"theme": "dark"})
    assert ui_ok(wire, "users.get_preferences") == {
        "preferences": {"views": {"a": 1}, "theme": "dark"}
    }
    status, envelope = ui(wire, "users.set_preferences", {"preferences": {"a.b": 1}})
    assert (status, envelope["meta"]["result_subcode"]) == (400, 16)
    users = ui_ok(wire, "users.get_all_ex", id=["emulator-user"], only_fields=["name"])["users"]
    assert users == [{"id": "emulator-user", "name": "Emulator User"}]


# ---------------------------------------------------------------------------- events


def scalar(task: str, metric: str, variant: str, value: float, it: int) -> dict[str, Any]:
    return {
        "type": "training_stats_scalar",
        "task": task,
        "metric": metric,
        "variant": variant,
        "value": value,
        "iter": it,
    }


def test_events_the_charts_use(wire: Wire) -> None:
    em = wire.emulator
    a = em.create_task("run a", project="e")
    b = em.create_task("run b", project="e")
    events = [scalar(t, "loss", "train", v, i) for t in (a, b) for i, v in enumerate([0.9, 0.5])]
    events += [scalar(a, "Summary", "test_accuracy", 0.8, SINGLE_SCALAR_ITERATION)]
    events += [
        {
            "type": "plot",
            "task": t,
            "metric": "confusion",
            "variant": "test",
            "iter": it,
            "plot_str": json.dumps({"data": [], "it": it}),
        }
        for t in (a, b)
        for it in (0, 1)
    ]
    em.add_events(events)
    metrics = ui_ok(wire, "events.get_multi_task_metrics", tasks=[a, b])["metrics"]
    assert metrics == [
        {"metric": "Summary", "variants": ["test_accuracy"]},
        {"metric": "confusion", "variants": ["test"]},
        {"metric": "loss", "variants": ["train"]},
    ]
    scalars_only = ui_ok(
        wire, "events.get_multi_task_metrics", tasks=[a], event_type="training_stats_scalar"
    )["metrics"]
    assert [m["metric"] for m in scalars_only] == ["Summary", "loss"]
    single = ui_ok(wire, "events.get_task_single_value_metrics", tasks=[a, b])["tasks"]
    assert single == [
        {
            "task": a,
            "task_name": "run a",
            "values": [
                {
                    "metric": "Summary",
                    "variant": "test_accuracy",
                    "value": 0.8,
                    "timestamp": single[0]["values"][0]["timestamp"],
                }
            ],
        }
    ]
    both = ui_ok(wire, "events.multi_task_scalar_metrics_iter_histogram", tasks=[a, b], key="iter")[
        "metrics"
    ]
    assert set(both["loss"]["train"]) == {a, b}
    assert both["loss"]["train"][b] == {"name": "run b", "x": [0, 1], "y": [0.9, 0.5]}
    assert "Summary" not in both
    plots = ui_ok(wire, "events.get_task_plots", task=a, iters=1)
    assert [json.loads(p["plot_str"])["it"] for p in plots["plots"]] == [1]
    multi = ui_ok(
        wire, "events.get_multi_task_plots", tasks=[a, b], iters=1, last_iters_per_task_metric=True
    )
    assert set(multi["plots"]["confusion"]["test"]) == {a, b}
    assert multi["plots"]["confusion"]["test"][a]["1"]["name"] == "run a"
    # The app asks again with the scroll id until a batch comes back empty.
    more = ui_ok(
        wire, "events.get_multi_task_plots", tasks=[a, b], iters=1, scroll_id=multi["scroll_id"]
    )
    assert (more["returned"], more["plots"]) == (0, {})
    status, envelope = ui(wire, "events.get_multi_task_metrics", {"tasks": ["0" * 32]})
    assert (status, envelope["meta"]["result_subcode"]) == (400, 101)


def test_scalar_histogram_samples_as_the_server_does(wire: Wire) -> None:
    task = wire.emulator.create_task("long", project="e")
    wire.emulator.add_events([scalar(task, "m", "v", float(i), i) for i in range(100)])
    full = ui_ok(wire, "events.scalar_metrics_iter_histogram", task=task)["m"]["v"]
    assert full["x"] == list(range(100))
    sampled = ui_ok(wire, "events.scalar_metrics_iter_histogram", task=task, samples=10)["m"]["v"]
    # interval ceil(100 / 10) = 10: buckets 0, 10, ..., 90, each the mean of its values
    assert sampled["x"] == list(range(0, 100, 10))
    assert sampled["y"] == [i + 4.5 for i in range(0, 100, 10)]


def test_a_plot_reported_again_replaces_the_earlier_one(wire: Wire) -> None:
    task = wire.emulator.create_task("hpo", project="e")
    for n in range(3):
        wire.emulator.add_events(
            [
                {
                    "type": "plot",
                    "task": task,
                    "metric": "Parallel Coordinates",
                    "variant": "",
                    "iter": 0,
                    "plot_str": str(n),
                }
            ]
        )
    plots = ui_ok(wire, "events.get_task_plots", task=task, iters=1)["plots"]
    assert [p["plot_str"] for p in plots] == ["2"]
    # Log lines are never replaced.
    log = {"type": "log", "task": task, "msg": "same", "iter": 0, "timestamp": 1}
    wire.emulator.add_events([log, log])
    assert ui_ok(wire, "events.get_task_log", task=task)["total"] == 2


def test_debug_image_and_plot_samples(wire: Wire) -> None:
    task = wire.emulator.create_task("images", project="e")
    wire.emulator.add_events(
        [
            {
                "type": "training_debug_image",
                "task": task,
                "metric": "img",
                "variant": "v",
                "iter": it,
                "url": f"http://f/{it}.png",
            }
            for it in (1, 2, 3)
        ]
        + [
            {
                "type": "plot",
                "task": task,
                "metric": "p",
                "variant": "v",
                "iter": 5,
                "plot_str": "{}",
            }
        ]
    )
    images = ui_ok(wire, "events.debug_images", metrics=[{"task": task, "metric": "img"}], iters=2)
    assert [i["iter"] for i in images["metrics"][0]["iterations"]] == [3, 2]
    sample = ui_ok(wire, "events.get_debug_image_sample", task=task, metric="img", variant="v")
    assert (sample["event"]["iter"], sample["min_iteration"], sample["max_iteration"]) == (3, 1, 3)
    earlier = ui_ok(
        wire,
        "events.next_debug_image_sample",
        task=task,
        scroll_id=sample["scroll_id"],
        navigate_earlier=True,
    )
    assert earlier["event"]["url"] == "http://f/2.png"
    plot = ui_ok(wire, "events.get_plot_sample", task=task, metric="p")
    assert [e["iter"] for e in plot["events"]] == [5]


def test_console_pages_the_log_as_the_server_does(wire: Wire) -> None:
    task = wire.emulator.create_task("chatty", project="e")
    stamps = [1000, 2000, 2000, 2000, 3000, 4000]
    wire.emulator.add_events(
        [{"type": "log", "task": task, "msg": f"line {n}", "timestamp": ts}
         for n, ts in enumerate(stamps)]
    )  # fmt: skip

    def page(**body: Any) -> list[str]:
        data = ui_ok(wire, "events.get_task_log", task=task, **body)
        assert data["total"] == len(stamps)
        return [e["msg"] for e in data["events"]]

    # The console opens on the newest lines; a batch ending inside a timestamp brings all of
    # it (the order within one timestamp is the store's).
    newest = page(batch_size=3, navigate_earlier=True)
    assert newest[:2] == ["line 5", "line 4"]
    assert sorted(newest[2:]) == ["line 1", "line 2", "line 3"]
    assert page(batch_size=3, navigate_earlier=True, from_timestamp=2000) == ["line 0"]
    assert page(batch_size=2, navigate_earlier=False, from_timestamp=2000) == ["line 4", "line 5"]
    oldest = page(batch_size=2, navigate_earlier=False, order="desc")
    assert oldest[-1] == "line 0"
    assert sorted(oldest[:-1]) == ["line 1", "line 2", "line 3"]


def test_run_time_while_a_task_runs(wire: Wire) -> None:
    task = wire.emulator.create_task("running", project="e")
    wire.emulator.call("tasks.started", task=task)
    wire.emulator.state.tasks[task]["started"] = "2026-01-01T00:00:00.000+00:00"
    ui_ok(wire, "tasks.ping", task=task)
    duration = wire.emulator.get_task(task)["active_duration"]
    assert isinstance(duration, int)  # an int: the SDK refuses floats
    assert duration > 0
    wire.emulator.call("tasks.reset", task=task, force=True)
    assert "active_duration" not in wire.emulator.get_task(task)


def test_workers_and_queues_pages(wire: Wire) -> None:
    queue = wire.emulator.create_queue("q")
    task = wire.emulator.create_task("queued", project="e")
    wire.emulator.call("tasks.enqueue", task=task, queue=queue)
    ui_ok(wire, "workers.register", worker="w1", queues=[queue])
    report = ui_ok(wire, "workers.get_activity_report", from_date=1, to_date=100, interval=10)
    assert report["total"]["counts"] == [1]
    assert report["active"]["counts"] == [0]
    (metrics,) = ui_ok(
        wire, "queues.get_queue_metrics", from_date=1, to_date=100, interval=10, queue_ids=[queue]
    )["queues"]
    assert metrics["queue"] == queue
    assert metrics["queue_lengths"] == [1]
    (listed,) = ui_ok(
        wire, "queues.get_all_ex", id=[queue], only_fields=["name", "entries.task.name"]
    )["queues"]
    assert listed["entries"][0]["task"] == {"id": task, "name": "queued"}


# ---------------------------------------------------------------------------- state kept


def test_state_dir_keeps_everything_across_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Emulator(config_dir=tmp_path / "a", state_dir=state) as first:
        wire = Wire(first)
        ids = seed(wire)
        first.add_events([scalar(ids["a"], "loss", "train", 0.5, 3)])
        first.state.files["/web/task a/artifacts/x/x.txt"] = b"artifact"
        queue = first.create_queue("gpu")
        first.call("tasks.enqueue", task=ids["b"], queue=queue, force=True)
        ui_ok(wire, "users.set_preferences", preferences={"theme": "dark"})
        token = wire.token
        before = {k: first.get_task(v) for k, v in ids.items() if k in "abcd"}
    with Emulator(config_dir=tmp_path / "b", state_dir=state) as second:
        for key, task in before.items():
            assert second.get_task(task["id"]) == task, key
        assert second.state.queues[queue]["entries"][0]["task"] == ids["b"]
        assert second.state.files["/web/task a/artifacts/x/x.txt"] == b"artifact"
        again = Wire(second)
        again.token = token  # a token from before the restart still works
        assert ui_ok(again, "users.get_preferences") == {"preferences": {"theme": "dark"}}
        hist = ui_ok(again, "events.scalar_metrics_iter_histogram", task=ids["a"])
        assert hist["loss"]["train"]["x"] == [3]
        # ingest goes on where it stopped (last_metrics' latest value by iteration)
        second.add_events([scalar(ids["a"], "loss", "train", 0.4, 2)])
        entry = next(iter(second.get_task(ids["a"])["last_metrics"].values()))
        assert next(iter(entry.values()))["value"] == 0.5


# ---------------------------------------------------------------------------- two emulators


def test_web_dist_flag_without_an_app_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.emulator.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["--config-out", str(tmp_path / "c.conf"), "--web-dist", str(tmp_path / "none")])
    assert exited.value.code == 2
    assert "holds no built Web UI" in capsys.readouterr().err
