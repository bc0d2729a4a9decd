"""Launch logic that needs no server: input checks, sweeps, the hyperparameter merge, retries.

The retry tests drive `Client` through a scripted transport (the one seam below the HTTP layer):
they pin down *which* requests are resent and when, which the emulator tests then confirm on the
wire.
"""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ak_remote.catalog import get_job
from ak_remote.clearml_api import (
    ApiError,
    Client,
    RetryPolicy,
    ServerUnavailable,
    TransientError,
    last_metric_values,
)
from ak_remote.errors import UsageError
from ak_remote.launcher.launch import (
    MAX_NAME_LENGTH,
    check_image,
    check_name,
    check_tags,
    merged_hyperparams,
    sweep_points,
)
from ak_remote.launcher.templates import Template, hyperparams_for
from ak_remote.params import parse_sweep
from tests.helpers import value_or_refusal

# -- names, tags, images ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "   ", "a\x00b", "line\nbreak", "x" * (MAX_NAME_LENGTH + 1)])
def test_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        check_name(bad)


@pytest.mark.parametrize("good", ["run 1", "ÄÖÜ résumé 模型", "a;rm -rf /", "$(whoami)", "../x"])
def test_names_are_data_not_commands(good: str) -> None:
    assert check_name(f"  {good} ") == good


@pytest.mark.parametrize("bad", ["-exclude", "__$all", "tab\there", "x" * 101])
def test_bad_tags_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        check_tags([bad])


def test_tags_split_on_commas_and_deduplicate() -> None:
    assert check_tags(["a,b", " b ", "c,,"]) == ["a", "b", "c"]


@pytest.mark.parametrize("bad", ["", "two words", "--privileged", "img\nrm", "a" * 301])
def test_bad_images_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        check_image(bad)


@given(st.text(max_size=300))
def test_check_name_accepts_or_refuses_cleanly(text: str) -> None:
    name = value_or_refusal(lambda: check_name(text))
    if isinstance(name, UsageError):
        assert name.hint
        return
    assert name == name.strip()
    assert 0 < len(name) <= MAX_NAME_LENGTH
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name)


@given(st.lists(st.text(max_size=120), max_size=8))
def test_check_tags_never_yields_operators_or_empties(items: list[str]) -> None:
    try:
        tags = check_tags(items)
    except UsageError:
        return
    assert len(set(tags)) == len(tags)
    for tag in tags:
        assert tag
        assert tag == tag.strip()
        assert "," not in tag
        assert not tag.startswith(("-", "__$"))


# -- sweeps ----------------------------------------------------------------------------------

axis_values = st.lists(
    st.integers(min_value=1, max_value=999).map(str), min_size=1, max_size=4, unique=True
)


@given(st.dictionaries(st.sampled_from(["epochs", "max_trials", "batch_size"]), axis_values))
def test_sweep_is_the_cartesian_product(axes: dict[str, list[str]]) -> None:
    points = sweep_points(axes)
    expected = 1
    for values in axes.values():
        expected *= len(values)
    assert len(points) == expected
    assert len({tuple(sorted(p.items())) for p in points}) == expected
    for point in points:
        assert set(point) == set(axes)
        assert all(point[k] in axes[k] for k in axes)


@given(st.dictionaries(st.sampled_from(["epochs", "seed"]), axis_values, min_size=1))
def test_sweep_text_round_trips(axes: dict[str, list[str]]) -> None:
    items = [f"{k}={','.join(v)}" for k, v in axes.items()]
    assert parse_sweep(items) == axes


# -- the hyperparameter merge ----------------------------------------------------------------


def _template() -> Template:
    job = get_job("structured-classifier")
    tree = hyperparams_for(job.params)
    tree["Args"] = {"x": {"section": "Args", "name": "x", "value": "1"}}
    task = {"id": "a" * 32, "name": job.name, "hyperparams": tree}
    return Template(task, job, job.params)


def test_merge_keeps_every_section_and_untouched_parameter() -> None:
    template = _template()
    tree = template.task["hyperparams"]
    merged = merged_hyperparams(tree, {"epochs": "3"}, template)
    assert merged["Args"] == tree["Args"]
    assert merged["General"]["epochs"]["value"] == "3"
    assert merged["General"]["epochs"]["type"] == "int"
    for key, entry in tree["General"].items():
        if key != "epochs":
            assert merged["General"][key] == entry
    assert tree["General"]["epochs"]["value"] == "10"  # the template is not modified


def test_merge_adds_a_parameter_the_template_predates() -> None:
    template = _template()
    tree = {"General": {}}
    merged = merged_hyperparams(tree, {"seed": "7"}, template)
    assert merged["General"]["seed"] == {
        "section": "General",
        "name": "seed",
        "type": "int",
        "description": template.params.get("seed").help,
        "value": "7",
    }


# -- metrics ---------------------------------------------------------------------------------


def test_last_metric_values_flattens_the_md5_tree() -> None:
    task = {
        "last_metrics": {
            "m1": {"v1": {"metric": "Summary", "variant": "test_accuracy", "value": 0.9}},
            "m2": {"v2": {"metric": "loss", "variant": "train", "value": "0.5"}},
        }
    }
    assert last_metric_values(task) == {"Summary/test_accuracy": 0.9, "loss/train": 0.5}


# -- retries ---------------------------------------------------------------------------------


def answer(data: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, {"meta": {"result_code": 200}, "data": dict(data)}


def fail(status: int, msg: str = "boom", subcode: int = 0) -> tuple[int, dict[str, Any]]:
    return status, {"meta": {"result_code": status, "result_subcode": subcode, "result_msg": msg}}


class Script:
    """A transport answering each endpoint from a scripted list of responses or exceptions."""

    def __init__(self, answers: dict[str, list[Any]]) -> None:
        self.answers = {k: list(v) for k, v in answers.items()}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, endpoint: str, body: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        self.calls.append((endpoint, dict(body)))
        answer = self.answers[endpoint].pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    def endpoints(self) -> list[str]:
        return [endpoint for endpoint, _ in self.calls]


def client(script: Script, attempts: int = 3) -> tuple[Client, list[float]]:
    slept: list[float] = []
    return Client(script, RetryPolicy(attempts=attempts, backoff=0.1), sleep=slept.append), slept


def test_reads_are_retried_with_backoff() -> None:
    script = Script(
        {"queues.get_all": [fail(503), TransientError("reset"), answer({"queues": []})]}
    )
    api, slept = client(script)
    assert api.get_queues() == []
    assert slept == [0.1, 0.2]


def test_reads_give_up_with_an_actionable_error() -> None:
    script = Script({"queues.get_all": [fail(500)] * 3})
    api, _ = client(script)
    with pytest.raises(ServerUnavailable) as err:
        api.get_queues()
    assert "3 tries" in str(err.value)
    assert "ak-remote doctor" in str(err.value)
    assert err.value.exit_code == 4


def test_refusals_are_not_retried() -> None:
    script = Script({"tasks.get_by_id": [fail(400, "Invalid task id", 101)]})
    api, _ = client(script)
    with pytest.raises(ApiError) as err:
        api.get_task("f" * 32)
    assert err.value.subcode == 101
    assert len(script.calls) == 1


def test_a_clone_whose_response_was_lost_is_found_not_repeated() -> None:
    token = "ak-remote-launch:b-0"
    found = answer({"tasks": [{"id": "c" * 32, "system_tags": [token]}]})
    script = Script({"tasks.clone": [TransientError("read timeout")], "tasks.get_all": [found]})
    api, _ = client(script)
    assert api.clone_task("t" * 32, token, {"new_task_name": "x"}) == "c" * 32
    assert script.endpoints() == ["tasks.clone", "tasks.get_all"]
    assert script.calls[0][1]["new_task_system_tags"] == [token]
    assert script.calls[1][1]["system_tags"] == [token]


def test_a_clone_that_did_not_happen_is_sent_again() -> None:
    token = "ak-remote-launch:b-1"
    script = Script(
        {
            "tasks.clone": [fail(502), answer({"id": "d" * 32})],
            "tasks.get_all": [answer({"tasks": []})],
        }
    )
    api, _ = client(script)
    assert api.clone_task("t" * 32, token, {}) == "d" * 32
    assert script.endpoints() == ["tasks.clone", "tasks.get_all", "tasks.clone"]


def test_a_write_checks_once_more_before_giving_up() -> None:
    token = "ak-remote-launch:b-2"
    empty = answer({"tasks": []})
    found = answer({"tasks": [{"id": "e" * 32, "system_tags": [token]}]})
    script = Script(
        {"tasks.clone": [fail(500), fail(500)], "tasks.get_all": [empty, found]},
    )
    api, _ = client(script, attempts=2)
    assert api.clone_task("t" * 32, token, {}) == "e" * 32


def test_enqueue_many_resends_only_what_is_not_queued() -> None:
    ids = ["1" * 32, "2" * 32, "3" * 32]
    statuses = ["queued", "created", "created"]
    states = answer({"tasks": [{"id": i, "status": s} for i, s in zip(ids, statuses, strict=True)]})
    script = Script(
        {
            "tasks.enqueue_many": [
                TransientError("dropped"),
                answer({"succeeded": [{"id": ids[1]}, {"id": ids[2]}], "failed": []}),
            ],
            "tasks.get_all": [states],
        }
    )
    api, _ = client(script)
    done, failed = api.enqueue_many(ids, "q" * 32)
    assert sorted(done) == sorted(ids)
    assert failed == {}
    assert script.calls[-1][1]["ids"] == ids[1:]


def test_writes_without_a_finder_are_sent_once() -> None:
    script = Script({"tasks.create": [fail(503)]})
    api, _ = client(script)
    with pytest.raises(ServerUnavailable):
        api.write("tasks.create", {"name": "x"}, find=None, parse=lambda d: d)
    assert len(script.calls) == 1


def test_delays_double_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=6, backoff=1.0, max_backoff=4.0)
    assert policy.delays() == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert list(itertools.islice(RetryPolicy(attempts=1).delays(), 3)) == []
