"""Secrets never reach ClearML parameters: credentials in dataset URLs are refused before anything
is written to the server, and `${NAME}` placeholders are expanded by the worker, from its own
environment, at the moment it fetches.

Launch and reproduce run against the emulator (the server's state is compared before and after
each refusal); the runtime cases are real `ak-remote run` / job processes fetching a CSV over HTTP
on loopback from a server that demands basic auth. Secrets are made at run time: a literal in this
file would be found in ClearML's record of an uncommitted diff.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import subprocess
import sys
import tempfile
import threading
import uuid
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ak_remote.catalog import JOBS, PROJECT_ROOT
from ak_remote.clearml_api import client_from_config
from ak_remote.cli import cli
from ak_remote.datasets.references import check_reference
from ak_remote.datasets.secrets import (
    check_environment,
    expand_placeholders,
    mask_credentials,
    placeholder_names,
    redact,
    refuse_credentials,
)
from ak_remote.errors import UsageError
from ak_remote.launcher import templates
from ak_remote.search.backends import ClearMLBackend
from ak_remote.search.spec import CONTROLLER, SearchSpec
from tests.emulator.server import Emulator
from tests.helpers import (
    JOB,
    TINY,
    error_lines,
    invoke,
    job_env,
    launched,
    read_summary,
    refused,
    run_argv,
    snapshot,
)

PLACEHOLDER_URL = "https://${DATA_USER}:${DATA_TOKEN}@data.example/wine.csv"


# -- the rules, pure -------------------------------------------------------------------------


def test_masking_keeps_placeholders_and_hides_every_literal_secret() -> None:
    assert mask_credentials(PLACEHOLDER_URL) == PLACEHOLDER_URL
    assert mask_credentials("https://alice:${TOKEN}@h/x.csv") == "https://alice:${TOKEN}@h/x.csv"
    # A password holding '@' is masked whole (the authority ends at its last '@').
    assert mask_credentials("https://alice:p@ss@h/x.csv") == "https://***@h/x.csv"
    assert mask_credentials("see https://tok3n@h/x.csv and s3://K:S@b/y") == (
        "see https://***@h/x.csv and s3://***@b/y"
    )
    # Lower-case names are not placeholders: the text is a literal secret.
    assert mask_credentials("https://${user}:${token}@h/x.csv") == "https://***@h/x.csv"


def test_refusal_names_the_fix_and_never_the_secret() -> None:
    for value in (
        "https://alice:hunter22@h/x.csv",
        "https://ghp0123456789@h/x.csv",
        "https://${DATA_USER}:hunter22@h/x.csv",
        "https://${data_user}:${data_token}@h/x.csv",
    ):
        with pytest.raises(UsageError) as caught:
            refuse_credentials("--set", f"dataset={value}")
        text = str(caught.value)
        assert "carries credentials in its URL" in text
        assert "${DATA_TOKEN}" in text  # the placeholder form to use instead
        assert "hunter22" not in text
        assert "ghp0123456789" not in text
    with pytest.raises(UsageError, match=r"sdk\.aws\.s3\.credentials"):
        refuse_credentials("--set", "dataset=s3://AKID:SECRETKEY@bucket/x.csv")
    for fine in (PLACEHOLDER_URL, "https://alice:${T}@h/x.csv", "wine", "https://h/x.csv"):
        refuse_credentials("--set", f"dataset={fine}")


def test_placeholders_expand_from_the_environment_percent_encoded() -> None:
    env = {"DATA_USER": "reader", "DATA_TOKEN": "a@b/c:d"}
    url, secrets = expand_placeholders(PLACEHOLDER_URL, env)
    assert url == "https://reader:a%40b%2Fc%3Ad@data.example/wine.csv"
    assert set(secrets) == {"reader", "a@b/c:d", "a%40b%2Fc%3Ad"}
    assert redact(f"GET {url} failed", secrets) == "GET https://***@data.example/wine.csv failed"
    assert placeholder_names(PLACEHOLDER_URL) == ["DATA_USER", "DATA_TOKEN"]
    assert expand_placeholders("https://h/x.csv", {}) == ("https://h/x.csv", [])
    for missing in ({"DATA_USER": "reader"}, {"DATA_USER": "reader", "DATA_TOKEN": ""}):
        with pytest.raises(UsageError) as caught:
            check_environment(PLACEHOLDER_URL, missing)
        assert "${DATA_TOKEN}, which is not set" in caught.value.message
        assert 'agent.extra_docker_arguments: ["-e", "DATA_TOKEN"]' in str(caught.value.hint)


def test_dataset_references_with_placeholders_are_checked() -> None:
    ref = check_reference(PLACEHOLDER_URL, "structured", "classifier")
    assert (ref.kind, ref.value, ref.source) == ("remote", PLACEHOLDER_URL, PLACEHOLDER_URL)
    with pytest.raises(UsageError, match="outside its user:password part"):
        check_reference("https://h/${FILE}.csv", "structured", "classifier")
    with pytest.raises(UsageError, match="malformed"):
        check_reference("https://${data_user}:x@h/x.csv", "structured", "classifier")
    with pytest.raises(UsageError, match=r"clearml\.conf"):
        check_reference("s3://${KEY}:${SECRET}@bucket/x.csv", "structured", "classifier")


def test_a_search_never_clones_trials_with_credentials() -> None:
    spec = SearchSpec(role=CONTROLLER)
    with pytest.raises(UsageError, match="carries credentials"):
        ClearMLBackend(None, JOBS[JOB], {"dataset": "https://a:hunter22@h/x.csv"}, spec, "f")
    ClearMLBackend(None, JOBS[JOB], {"dataset": PLACEHOLDER_URL}, spec, "f")


# -- launch and reproduce against the emulator ----------------------------------------------


def test_launch_refuses_credentials_and_creates_nothing(synced_server: Emulator) -> None:
    secret = f"s{uuid.uuid4().hex}"
    cases = {
        ("--set", f"dataset=https://alice:{secret}@data.example/wine.csv"): "carries credentials",
        ("--set", f"dataset=https://{secret}@data.example/wine.csv"): "carries credentials",
        ("--set", f"dataset=s3://AKID:{secret}@bucket/wine.csv"): "sdk.aws.s3.credentials",
        ("--sweep", f"dataset=wine,https://alice:{secret}@h.example/w.csv"): "--sweep",
        ("--name", f"from https://alice:{secret}@h.example"): "--name",
    }
    for (option, value), expected in cases.items():
        line = refused(synced_server, "-q", "cpu", option, value)
        assert expected in line, line
        assert secret not in line
        assert "***@" in line
    # --dry-run is refused the same way, and a parallel search too (it plans through launch).
    line = refused(
        synced_server, "-q", "cpu", "--dry-run", "--set", f"dataset=https://a:{secret}@h/w.csv"
    )
    assert secret not in line
    line = refused(
        synced_server,
        "-q",
        "cpu",
        "--parallel",
        "2",
        "--set",
        f"dataset=https://a:{secret}@h/w.csv",
    )
    assert "carries credentials" in line
    assert not launched(synced_server)


def test_placeholders_are_stored_verbatim(
    synced_server: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The laptop needs none of the variables: the agent expands them.
    monkeypatch.delenv("DATA_USER", raising=False)
    monkeypatch.delenv("DATA_TOKEN", raising=False)
    result = CliRunner().invoke(
        cli, ["launch", JOB, "-q", "cpu", "--set", f"dataset={PLACEHOLDER_URL}"]
    )
    assert result.exit_code == 0, result.output
    assert "expands ${DATA_USER}, ${DATA_TOKEN} from its environment" in result.stderr
    (task,) = launched(synced_server)
    assert task["hyperparams"]["General"]["dataset"]["value"] == PLACEHOLDER_URL
    assert PLACEHOLDER_URL in task["name"]

    other = PLACEHOLDER_URL.replace("wine.csv", "wine2.csv")
    result = CliRunner().invoke(
        cli, ["launch", JOB, "-q", "cpu", "--sweep", f"dataset={PLACEHOLDER_URL},{other}"]
    )
    assert result.exit_code == 0, result.output
    stored = sorted(
        t["hyperparams"]["General"]["dataset"]["value"] for t in launched(synced_server)
    )
    assert stored == sorted([PLACEHOLDER_URL, PLACEHOLDER_URL, other])


def test_a_template_holding_credentials_is_not_copied(synced_server: Emulator) -> None:
    secret = f"s{uuid.uuid4().hex}"
    (template,) = [t for t in synced_server.state.tasks.values() if t["name"].startswith(JOB)]
    with synced_server.state.lock:
        template["hyperparams"]["General"]["dataset"]["value"] = f"https://a:{secret}@h/w.csv"
    line = refused(synced_server, "-q", "cpu")
    assert "template" in line
    assert "templates sync" in line
    assert secret not in line
    # Overriding the dataset launches without copying the template's value.
    result = CliRunner().invoke(
        cli, ["launch", JOB, "-q", "cpu", "--set", f"dataset={PLACEHOLDER_URL}"]
    )
    assert result.exit_code == 0, result.output
    (task,) = launched(synced_server)
    assert secret not in str(task)


def completed_run(emulator: Emulator, dataset: str) -> str:
    general = {
        "seed": {"section": "General", "name": "seed", "value": "7", "type": "int"},
        "dataset": {"section": "General", "name": "dataset", "value": dataset, "type": "str"},
    }
    task_id = emulator.create_task(
        "old run",
        project="ak-remote",
        hyperparams={"General": general},
        system_tags=[f"ak-remote-job:{JOB}"],
    )
    emulator.call("tasks.started", task=task_id)
    emulator.call("tasks.completed", task=task_id)
    return task_id


def test_reproduce_refuses_a_run_recorded_with_or_without_its_credentials(
    synced_server: Emulator,
) -> None:
    secret = f"s{uuid.uuid4().hex}"
    with_secret = completed_run(synced_server, f"https://alice:{secret}@h.example/w.csv")
    masked = completed_run(synced_server, "https://***@h.example/w.csv")
    for task_id, expected in ((with_secret, "carries credentials"), (masked, "without the URL's")):
        before = snapshot(synced_server)
        result = invoke("reproduce", task_id, "-q", "cpu")
        assert result.exit_code == 2, result.output
        (line,) = [x for x in result.output.splitlines() if x.startswith("Error:")]
        assert expected in line
        assert "${DATA_TOKEN}" in line
        assert secret not in result.output
        assert snapshot(synced_server) == before


# -- the worker: expansion at fetch time, against a loopback server with basic auth -----------


class AuthServer:
    """Serves one CSV at /wine.csv to requests with the right basic-auth header, 401 otherwise."""

    def __init__(self, body: bytes, user: str, token: str) -> None:
        expected = "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()
        self.granted = 0
        self.denied = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("Authorization") != expected:
                    owner.denied += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="data"')
                    self.end_headers()
                    return
                owner.granted += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/csv")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def wine_csv() -> bytes:
    from sklearn.datasets import load_wine

    data = load_wine()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*data.feature_names, "cultivar"])
    for row, target in zip(data.data, data.target, strict=True):
        writer.writerow([f"{v:g}" for v in row] + [f"c{target}"])
    return out.getvalue().encode()


@pytest.fixture
def secret() -> str:
    # '@' and '/' in the token: the worker must percent-encode it into the URL.
    return f"tok@{uuid.uuid4().hex}/x"


@pytest.fixture
def data_server(secret: str) -> Iterator[AuthServer]:
    served = AuthServer(wine_csv(), "reader", secret)
    yield served
    served.close()


def url_of(server: AuthServer) -> str:
    return f"http://${{DATA_USER}}:${{DATA_TOKEN}}@127.0.0.1:{server.port}/wine.csv"


def assert_nowhere(root: Path, needle: str, *outputs: str) -> int:
    """`needle` is in no file name or content under `root` (zip members read too), nor in any
    of `outputs`; returns how many files were read."""
    key = needle.encode()
    read = 0
    for text in outputs:
        assert needle not in text
    for path in root.rglob("*"):
        assert needle not in str(path), path
        if not path.is_file() or path.is_symlink():
            continue
        blob = path.read_bytes()
        read += 1
        assert key not in blob, path
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    assert key not in archive.read(name), f"{path}!{name}"
    return read


def env_with(home: Path, **extra: str) -> dict[str, str]:
    env = job_env(home)
    for name in ("DATA_USER", "DATA_TOKEN"):
        env.pop(name, None)
    env.update(extra)
    return env


def test_loading_unpacks_an_archive_and_leaves_no_secret_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    """In process, no training: the worker's loader against the loopback server."""
    from ak_remote.errors import DataError
    from ak_remote.runtime import data as data_module

    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("wine/wine.csv", wine_csv())
    served = AuthServer(packed.getvalue(), "reader", secret)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    url = f"http://${{DATA_USER}}:${{DATA_TOKEN}}@127.0.0.1:{served.port}/wine.zip"
    try:
        monkeypatch.setenv("DATA_USER", "reader")
        monkeypatch.setenv("DATA_TOKEN", secret)
        loaded = data_module.load(url, "structured", "classifier")
        assert len(loaded) == 178
        assert loaded.target_name == "cultivar"
        assert loaded.source == url
        assert served.granted == 1
        assert not list(scratch.iterdir())  # the download is gone once loaded
        wrong = f"wrong{uuid.uuid4().hex}"
        monkeypatch.setenv("DATA_TOKEN", wrong)
        with pytest.raises(DataError) as caught:
            data_module.load(url, "structured", "classifier")
        assert "HTTP 401" in caught.value.message
        assert "${DATA_USER}, ${DATA_TOKEN}" in str(caught.value.hint)
        assert wrong not in str(caught.value)
    finally:
        served.close()
    token_core = secret.split("@", 1)[1].split("/", 1)[0]
    assert_nowhere(tmp_path, token_core)
    assert_nowhere(tmp_path, wrong)


def test_a_local_run_fetches_with_placeholders_and_records_no_secret(
    tmp_path: Path, data_server: AuthServer, secret: str
) -> None:
    home, run_dir = tmp_path / "home", tmp_path / "run"
    home.mkdir(exist_ok=True)
    url = url_of(data_server)
    args = ["--run-dir", str(run_dir), "--set", f"dataset={url}", "--set", "max_trials=1"]
    for item in [*TINY, "batch_size=16", "histogram_freq=0"]:
        args += ["--set", item]
    result = subprocess.run(
        run_argv(*args),
        cwd=tmp_path,
        env=env_with(home, DATA_USER="reader", DATA_TOKEN=secret),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert data_server.granted >= 1
    assert data_server.denied == 0
    record = read_summary(run_dir)
    assert record["status"] == "completed"
    assert record["metrics"]["test_accuracy"] >= 0.0
    assert (run_dir / "models" / "model.keras").is_file()
    assert record["params"]["dataset"] == url  # the placeholder text, not the expanded URL
    assert record["data"]["source"] == url
    session = Path(record["offline_session"])
    assert session.is_file()
    assert session.is_relative_to(home)
    # The run folder, the offline session (folder and zip) and ClearML's caches: nowhere.
    token_core = secret.split("@", 1)[1].split("/", 1)[0]
    read = assert_nowhere(tmp_path, token_core, result.stdout, result.stderr)
    assert read > 20  # models, event files, logs and the session were all read


def test_a_missing_variable_is_one_clear_line_before_anything_starts(
    tmp_path: Path, data_server: AuthServer
) -> None:
    home, run_dir = tmp_path / "home", tmp_path / "run"
    home.mkdir(exist_ok=True)
    args = ["--run-dir", str(run_dir), "--set", f"dataset={url_of(data_server)}"]
    result = subprocess.run(
        run_argv(*args),
        cwd=tmp_path,
        env=env_with(home, DATA_USER="reader"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = error_lines(result.stderr)
    assert "${DATA_TOKEN}, which is not set in the environment" in line
    assert "extra_docker_arguments" in line
    assert not run_dir.exists()
    assert data_server.granted == data_server.denied == 0


def test_on_a_worker_a_missing_or_wrong_variable_fails_the_run_without_the_secret(
    tmp_path: Path, data_server: AuthServer
) -> None:
    """The job script as an agent runs it: the variables come from the worker's environment."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    script = str(PROJECT_ROOT / JOBS[JOB].script)

    def job(run_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, script, "--offline", "--run-dir", str(run_dir)]
        argv += ["--set", f"dataset={url_of(data_server)}"]
        return subprocess.run(
            argv,
            cwd=tmp_path,
            env=env_with(home, **env),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    missing = job(tmp_path / "missing", DATA_USER="reader")
    assert missing.returncode == 3, missing.stderr[-3000:]
    (line,) = error_lines(missing.stderr)
    assert "${DATA_TOKEN}, which is not set in the environment" in line
    record = read_summary(tmp_path / "missing")
    assert record["status"] == "failed"
    assert "${DATA_TOKEN}" in record["error"]
    assert data_server.granted == data_server.denied == 0

    wrong = f"wrong{uuid.uuid4().hex}"
    refused_fetch = job(tmp_path / "wrong", DATA_USER="reader", DATA_TOKEN=wrong)
    assert refused_fetch.returncode == 3, refused_fetch.stderr[-3000:]
    (line,) = error_lines(refused_fetch.stderr)
    assert f"could not fetch {url_of(data_server)}" in line
    assert data_server.denied >= 1
    assert data_server.granted == 0
    assert_nowhere(tmp_path, wrong, refused_fetch.stdout, refused_fetch.stderr)


@pytest.mark.slow
def test_an_agent_expands_placeholders_from_its_own_environment(
    clearml_emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    data_server: AuthServer,
    secret: str,
) -> None:
    """launch (no variables on this side) -> the real clearml-agent, whose environment has them
    -> the job fetches with basic auth; the server's record never holds the token."""
    from tests.emulator.agent import running_agent

    emulator = clearml_emulator
    monkeypatch.setenv("AK_REMOTE_POLL_INTERVAL", "1")
    monkeypatch.delenv("DATA_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)
    templates.sync(client_from_config(), "ak-remote/templates", "reg/w:1", "")
    emulator.create_queue("cpu")
    url = url_of(data_server)
    sets = ["--set", f"dataset={url}", "--set", "max_trials=1"]
    for item in [*TINY, "batch_size=16", "histogram_freq=0"]:
        sets += ["--set", item]
    env = {"DATA_USER": "reader", "DATA_TOKEN": secret}
    with running_agent(emulator, "cpu", env=env, log_dir=tmp_path / "agent") as agent:
        result = invoke("launch", JOB, "-q", "cpu", *sets, "--wait")
        assert result.exit_code == 0, f"{result.output}\n--- agent\n{agent.log()[-6000:]}"
        agent_log = agent.log()
    task_id = result.stdout.split()[0]
    task = emulator.get_task(task_id)
    assert task["status"] == "completed"
    assert task["hyperparams"]["General"]["dataset"]["value"] == url
    assert data_server.granted >= 1
    token_core = secret.split("@", 1)[1].split("/", 1)[0]
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
    assert token_core not in recorded
    for blob in files:
        assert token_core.encode() not in blob
        if blob[:2] == b"PK":
            with zipfile.ZipFile(io.BytesIO(blob)) as archive:
                for name in archive.namelist():
                    assert token_core.encode() not in archive.read(name), name
    # The agent's own log and everything written under this test's folders (HOME included).
    assert_nowhere(tmp_path, token_core, result.output, agent_log)
