"""Secrets never reach ClearML, with real processes: `ak-remote run`, the job script as an agent
runs it and a real clearml-agent on the emulator fetch a dataset from the loopback data server in
every way a secret travels (tests/secret_forms.py: basic auth, a `?token=` query value, a signed
URL given whole as `${DATA_URL}`), and nothing they write holds the secret. The rules, launch,
reproduce and the loader: tests/unit/test_credentials.py. Secrets are made at run time: a
literal in this file would be found in ClearML's record of an uncommitted diff.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from ak_remote.catalog import JOBS, PROJECT_ROOT
from ak_remote.clearml_api import client_from_config
from ak_remote.launcher import templates
from tests.emulator.server import Emulator
from tests.helpers import (
    JOB,
    TEMPLATES,
    error_lines,
    invoke,
    job_env,
    read_summary,
    run_argv,
    run_captured,
    run_sets,
)
from tests.secret_forms import (
    FORMS,
    QUERY,
    SIGNED,
    USERINFO,
    DataServer,
    Form,
    Secret,
    assert_not_in_blob,
    assert_nowhere,
    every_form,
)


def worker_env(home: Path, variables: dict[str, str]) -> dict[str, str]:
    """A process' environment with its own HOME, holding of the forms' variables only these."""
    env = job_env(home)
    for name in ("DATA_USER", "DATA_TOKEN", "DATA_URL"):
        env.pop(name, None)
    env.update(variables)
    return env


# -- every form: real processes ----------------------------------------------------------------


@every_form
def test_a_missing_variable_is_one_clear_line_before_anything_starts(
    tmp_path: Path, home: Path, form: Form, secret: Secret, data_server: DataServer
) -> None:
    run_dir = tmp_path / "run"
    args = ["--run-dir", str(run_dir), "--set", f"dataset={form.reference(data_server.port)}"]
    env = worker_env(home, form.missing(secret, data_server.port))
    result = run_captured(run_argv(*args), env, tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = error_lines(result.stderr)
    assert f"${{{form.last_variable}}}, which is not set in the environment" in line
    assert "extra_docker_arguments" in line
    assert not run_dir.exists()
    assert data_server.granted == data_server.denied == 0


def run_job_script(
    tmp_path: Path, home: Path, reference: str, run_dir: Path, variables: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """The job script as an agent runs it: the variables come from the worker's environment."""
    argv = [sys.executable, str(PROJECT_ROOT / JOBS[JOB].script), "--offline"]
    argv += ["--run-dir", str(run_dir), "--set", f"dataset={reference}"]
    return run_captured(argv, worker_env(home, variables), tmp_path, timeout=180)


@every_form
def test_on_a_worker_a_missing_variable_fails_the_run(
    tmp_path: Path, home: Path, form: Form, secret: Secret, data_server: DataServer
) -> None:
    run_dir = tmp_path / "missing"
    reference = form.reference(data_server.port)
    missing = form.missing(secret, data_server.port)
    result = run_job_script(tmp_path, home, reference, run_dir, missing)
    assert result.returncode == 3, result.stderr[-3000:]
    (line,) = error_lines(result.stderr)
    assert f"${{{form.last_variable}}}, which is not set in the environment" in line
    record = read_summary(run_dir)
    assert record["status"] == "failed"
    assert f"${{{form.last_variable}}}" in record["error"]
    assert data_server.granted == data_server.denied == 0


@pytest.mark.parametrize(
    "form",
    FORMS,
    ids=[f.id for f in FORMS],
)
def test_on_a_worker_a_refused_fetch_fails_the_run_without_the_secret(
    tmp_path: Path, home: Path, form: Form, secret: Secret, data_server: DataServer
) -> None:
    wrong = form.wrong(secret)
    reference = form.reference(data_server.port)
    variables = form.env(wrong, data_server.port)
    result = run_job_script(tmp_path, home, reference, tmp_path / "wrong", variables)
    assert result.returncode == 3, result.stderr[-3000:]
    (line,) = error_lines(result.stderr)
    assert f"could not fetch {reference}" in line
    assert data_server.denied >= 1
    assert data_server.granted == 0
    for needle in wrong.needles:
        assert_nowhere(tmp_path, needle, result.stdout, result.stderr)


@pytest.mark.parametrize(
    ("form", "written_out"),
    [(USERINFO, False), (QUERY, False), (SIGNED, False), (QUERY, True)],
    ids=["userinfo", "query", "signed", "query-written-out"],
)
def test_a_local_run_fetches_with_the_secret_and_records_none(
    tmp_path: Path,
    home: Path,
    form: Form,
    written_out: bool,
    secret: Secret,
    data_server: DataServer,
) -> None:
    """`ak-remote run --offline`, 1 trial of 1 epoch: with the placeholders (as an agent would
    run it), and a query token written out (allowed on this machine, masked in records)."""
    run_dir = tmp_path / "run"
    if written_out:
        base = f"http://127.0.0.1:{data_server.port}/wine.csv?v=2&token="
        url, variables, recorded = base + quote(secret.value, safe=""), {}, base + "***"
    else:
        url = recorded = form.reference(data_server.port)
        variables = form.env(secret, data_server.port)
    args = ["--run-dir", str(run_dir), "--set", f"dataset={url}", *run_sets("max_trials=1")]
    result = run_captured(run_argv(*args), worker_env(home, variables), tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert data_server.granted >= 1
    assert data_server.denied == 0
    record = read_summary(run_dir)
    assert record["status"] == "completed"
    assert record["metrics"]["test_accuracy"] >= 0.0
    assert (run_dir / "models" / "model.keras").is_file()
    assert record["params"]["dataset"] == recorded  # the placeholder text, or masked
    assert record["data"]["source"] == recorded
    session = Path(record["offline_session"])
    assert session.is_file()
    assert session.is_relative_to(home)
    # The run folder, the offline session (folder and zip) and ClearML's caches: nowhere.
    for needle in secret.needles:
        read = assert_nowhere(tmp_path, needle, result.stdout, result.stderr)
        assert read > 20  # models, event files, logs and the session were all read


@pytest.mark.slow
@pytest.mark.parametrize("form", [USERINFO, SIGNED], ids=["userinfo", "signed"])
def test_an_agent_expands_placeholders_from_its_own_environment(
    agent_emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    form: Form,
    secret: Secret,
    data_server: DataServer,
) -> None:
    """launch (no variable on this side) -> the real clearml-agent, whose environment holds them
    -> the job fetches with them; the server's record and everything under this test's folders
    (HOME included) hold no secret."""
    from tests.emulator.agent import running_agent

    emulator = agent_emulator
    for name in form.variable_names:
        monkeypatch.delenv(name, raising=False)
    templates.sync(client_from_config(), TEMPLATES, "reg/w:1", "")
    emulator.create_queue("cpu")
    reference = form.reference(data_server.port)
    options = ["--set", f"dataset={reference}", *run_sets("max_trials=1")]
    env = form.env(secret, data_server.port)
    with running_agent(emulator, "cpu", env=env, log_dir=tmp_path / "agent") as agent:
        result = invoke("launch", JOB, "-q", "cpu", *options, "--wait")
        assert result.exit_code == 0, f"{result.output}\n--- agent\n{agent.log()[-6000:]}"
        agent_log = agent.log()
    task = emulator.get_task(result.stdout.split()[0])
    assert task["status"] == "completed"
    assert task["hyperparams"]["General"]["dataset"]["value"] == reference
    assert data_server.granted >= 1
    with emulator.state.lock:
        recorded = json.dumps(
            {
                "tasks": emulator.state.tasks,
                "events": emulator.state.events,
                "models": emulator.state.models,
            },
            default=str,
        )
        files = list(emulator.state.files.values())
    assert "test metrics" in recorded  # the job's console output reached the server
    for needle in secret.needles:
        assert needle not in recorded
        for blob in files:
            assert_not_in_blob(needle.encode(), blob, "a file on the fileserver")
        # The agent's own log and everything written under this test's folders (HOME included).
        assert_nowhere(tmp_path, needle, result.output, agent_log)
